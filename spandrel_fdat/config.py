"""The FDAT configuration: one frozen object that fully describes a network.

Inference produces it from a state dict, the network is built from it, the
command line prints it and converted files store it. Nothing here builds a
torch module: `expected_shapes` lists the state dict a configuration implies,
so that inference can be checked key by key before any weights are allocated.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

BlockType = Literal["spatial", "channel"]
Layout = Literal["uniupsample", "lhan", "standalone"]
UpsamplerType = Literal[
    "conv",
    "pixelshuffledirect",
    "pixelshuffle",
    "nearest+conv",
    "dysample",
    "transpose+conv",
    "lda",
    "pa_up",
]

# MetaUpsample mode index = position in this tuple (stable across versions).
UPSAMPLER_TYPES: tuple[UpsamplerType, ...] = get_args(UpsamplerType)
LAYOUTS: tuple[Layout, ...] = get_args(Layout)
# Modes each MetaUpsample version knows (V2: 0-4, V3: all eight).
META_VERSION_MODES = {2: UPSAMPLER_TYPES[:5], 3: UPSAMPLER_TYPES}
LAYOUT_UPSAMPLERS: dict[Layout, tuple[UpsamplerType, ...]] = {
    "uniupsample": UPSAMPLER_TYPES,
    "lhan": ("pixelshuffle", "nearest+conv", "transpose+conv"),
    "standalone": ("pixelshuffle", "transpose+conv"),
}
DYSAMPLE_GROUPS = 4
LDA_GROUPS = 2  # offset groups of the LDA_AQU upsampler
LDA_REDUCTION = 4
LDA_KERNEL = 3

Shape = tuple[int, ...]


def _is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def ffn_hidden_dim(embed_dim: int, ratio: float) -> int:
    return int(embed_dim * ratio)


def canonical_ffn_ratio(embed_dim: int, hidden_dim: int) -> float:
    """The shortest decimal ratio r with int(embed_dim * r) == hidden_dim.

    hidden_dim / embed_dim does not always round-trip (108 * (239/108) < 239).
    """
    for digits in range(1, 10):
        r = round(hidden_dim / embed_dim, digits)
        if int(embed_dim * r) == hidden_dim:
            return r
    return (hidden_dim + 0.5) / embed_dim


def canonical_aim_ratio(embed_dim: int, reduced_dim: int) -> int:
    """The ratio r with embed_dim // r == reduced_dim (the largest such r)."""
    return embed_dim // reduced_dim


def minimal_period(types: tuple[BlockType, ...]) -> tuple[BlockType, ...]:
    """The shortest pattern p, len(p) dividing len(types), with types[i] == p[i % len(p)]."""
    n = len(types)
    for p in range(1, n + 1):
        if n % p == 0 and all(types[i] == types[i % p] for i in range(n)):
            return types[:p]
    return types


@dataclass(frozen=True)
class FDATConfig:
    """Hyperparameters of one FDAT network, canonicalised on creation.

    `scale` is what the network does to an image (conv mode is x1 whatever it
    stored). Field names match spandrel 0.4.2's FDAT constructor, plus
    `layout` (which upsampler family and key layout), `meta_version`
    (UniUpsample V2 or V3) and `norm_eps` (LayerNorm eps, 1e-6 for LHAN).
    """

    num_in_ch: int = 3
    num_out_ch: int = 3
    scale: int = 4
    embed_dim: int = 120
    num_groups: int = 4
    depth_per_group: int = 3
    num_heads: int = 4
    window_size: int = 8
    ffn_expansion_ratio: float = 2.0
    aim_reduction_ratio: int = 8
    group_block_pattern: tuple[BlockType, ...] = ("spatial", "channel")
    mid_dim: int = 64
    upsampler_type: UpsamplerType = "transpose+conv"
    img_range: float = 1.0
    unshuffle_mod: bool = False
    layout: Layout = "uniupsample"
    meta_version: int = 3
    norm_eps: float | None = None  # None: the layout's own (1e-6 for LHAN, else 1e-5)

    def __post_init__(self) -> None:
        pattern = tuple(self.group_block_pattern)
        if not pattern or any(t not in ("spatial", "channel") for t in pattern):
            raise ValueError(
                f"group_block_pattern must be a non-empty list of 'spatial'/'channel', got {list(pattern)}"
            )
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        # Canonical forms: equal networks get equal configurations.
        blocks = pattern * self.depth_per_group
        period = minimal_period(blocks) if blocks else pattern
        set_("group_block_pattern", period)
        if blocks:
            set_("depth_per_group", len(blocks) // len(period))
        for name in ("num_in_ch", "num_out_ch", "scale", "embed_dim", "num_groups"):
            _require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}", name)
        _require(self.depth_per_group >= 1, f"depth_per_group must be >= 1, got {self.depth_per_group}")
        _require(self.num_heads >= 1, f"num_heads must be >= 1, got {self.num_heads}", "num_heads")
        _require(
            self.embed_dim % self.num_heads == 0,
            f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}",
            "num_heads",
        )
        if "spatial" not in self.group_block_pattern:
            set_("window_size", 8)  # unused without spatial blocks
        _require(self.window_size >= 1, f"window_size must be >= 1, got {self.window_size}", "window_size")
        hidden = ffn_hidden_dim(self.embed_dim, self.ffn_expansion_ratio)
        _require(
            hidden >= 1, f"ffn_expansion_ratio {self.ffn_expansion_ratio} gives an empty FFN", "ffn_expansion_ratio"
        )
        set_("ffn_expansion_ratio", canonical_ffn_ratio(self.embed_dim, hidden))
        _require(
            1 <= self.aim_reduction_ratio <= self.embed_dim,
            f"aim_reduction_ratio must be in [1, embed_dim], got {self.aim_reduction_ratio}",
            "aim_reduction_ratio",
        )
        set_("aim_reduction_ratio", canonical_aim_ratio(self.embed_dim, self.embed_dim // self.aim_reduction_ratio))
        _require(self.mid_dim >= 1, f"mid_dim must be >= 1, got {self.mid_dim}", "mid_dim")
        _require(self.layout in LAYOUTS, f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        allowed = LAYOUT_UPSAMPLERS[self.layout]
        _require(
            self.upsampler_type in allowed,
            f"upsampler_type {self.upsampler_type!r} does not exist in the {self.layout} layout (choose from {allowed})",
        )
        if self.layout == "uniupsample":
            _require(self.meta_version in META_VERSION_MODES, f"meta_version must be 2 or 3, got {self.meta_version}")
            _require(
                self.upsampler_type in META_VERSION_MODES[self.meta_version],
                f"UniUpsample V{self.meta_version} has no {self.upsampler_type!r} mode",
            )
            if self.upsampler_type == "conv":
                set_("scale", 1)  # a conv-mode network never changes the size
        else:
            set_("meta_version", 0)
            _require(not self.unshuffle_mod, f"unshuffle_mod does not exist in the {self.layout} layout")
        if self.unshuffle_mod and self.scale >= 3:
            set_("unshuffle_mod", False)  # ignored upstream at scale >= 3
        _require(
            not (self.unshuffle_mod and self.upsampler_type == "conv"),
            "unshuffle_mod with the conv upsampler would shrink the image",
        )
        self._check_upsampler_scale()
        if self.layout == "uniupsample":
            in_field = "mid_dim" if self.meta_upsample()[3] != self.embed_dim else "embed_dim"  # pa_up stores mid
            fields = ("scale", in_field, "num_out_ch", "mid_dim")
            for name, field, value in zip(
                ("scale", "in_dim", "out_dim", "mid_dim"), fields, self.meta_upsample()[2:6], strict=True
            ):
                _require(value <= 255, f"UniUpsample stores {name} in uint8: {value} > 255 cannot be built", field)
        if self.layout != "uniupsample" and not self.uses_mid_dim:
            set_("mid_dim", 64)  # stored nowhere: MetaUpsample exists only in UniUpsample
        if self.norm_eps is None:
            set_("norm_eps", 1e-6 if self.layout == "lhan" else 1e-5)

    def _check_upsampler_scale(self) -> None:
        s, up, layout = self.upsample_scale, self.upsampler_type, self.layout
        if layout == "uniupsample":
            if s == 1 or up in ("conv", "pixelshuffledirect", "dysample"):
                ok = True
            elif up in ("pixelshuffle", "nearest+conv", "pa_up"):
                ok = _is_pow2(s) or s == 3
            elif up == "transpose+conv":
                ok = s in (2, 3, 4)
            else:  # lda
                ok = self.mid_dim % (LDA_REDUCTION * LDA_GROUPS) == 0
                _require(ok, f"lda needs mid_dim divisible by {LDA_REDUCTION * LDA_GROUPS}, got {self.mid_dim}")
            if up == "dysample" and s > 1:
                dim = self.mid_dim
                _require(
                    dim > DYSAMPLE_GROUPS and dim % DYSAMPLE_GROUPS == 0,
                    f"dysample needs mid_dim > {DYSAMPLE_GROUPS} and divisible by it, got {dim}",
                )
        elif layout == "lhan":
            ok = up != "transpose+conv" or s in (2, 3, 4)
        else:
            ok = up == "pixelshuffle" or s == 4
        _require(ok, f"the {layout} {up} upsampler cannot do x{s}")

    # --- derived quantities -------------------------------------------------
    @property
    def upsample_scale(self) -> int:
        """The scale the upsampler is built for (4 behind PixelUnshuffle)."""
        return 4 if self.unshuffle_mod else self.scale

    @property
    def layer_norm_eps(self) -> float:
        assert self.norm_eps is not None  # resolved in __post_init__
        return self.norm_eps

    @property
    def unshuffle_factor(self) -> int:
        return 4 // self.scale if self.unshuffle_mod else 1

    @property
    def blocks_per_group(self) -> int:
        return self.depth_per_group * len(self.group_block_pattern)

    @property
    def ffn_hidden_dim(self) -> int:
        return ffn_hidden_dim(self.embed_dim, self.ffn_expansion_ratio)

    @property
    def aim_dim(self) -> int:
        return self.embed_dim // self.aim_reduction_ratio

    def block_type(self, index: int) -> BlockType:
        return self.group_block_pattern[index % len(self.group_block_pattern)]

    @property
    def uses_mid_dim(self) -> bool:
        """Whether mid_dim shows in any weight (otherwise only MetaUpsample holds it)."""
        up, s = self.upsampler_type, self.upsample_scale
        if s == 1 or up == "conv":
            return False
        if self.layout == "uniupsample":
            return up in ("pixelshuffle", "pa_up", "dysample", "lda")
        if self.layout == "standalone":
            return up == "transpose+conv" or _is_pow2(s)
        return False

    def meta_upsample(self) -> list[int]:
        """The MetaUpsample buffer upstream stores for this network."""
        s = self.upsample_scale
        in_dim = self.embed_dim
        if self.upsampler_type == "pa_up" and _is_pow2(s) and s > 1:
            in_dim = self.mid_dim  # upstream stores mid_dim here
        mode = UPSAMPLER_TYPES.index(self.upsampler_type)
        return [self.meta_version, mode, s, in_dim, self.num_out_ch, self.mid_dim, DYSAMPLE_GROUPS]

    # --- serialisation ------------------------------------------------------
    def to_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this network with `FDAT(**kwargs)`."""
        kwargs = dataclasses.asdict(self)
        kwargs["group_block_pattern"] = list(self.group_block_pattern)
        return kwargs

    def to_json(self) -> str:
        return json.dumps(self.to_kwargs(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FDATConfig:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("an FDAT configuration must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown FDAT configuration fields: {unknown}")
        data["group_block_pattern"] = tuple(data.get("group_block_pattern", ("spatial", "channel")))
        return cls(**data)

    def preset_name(self) -> str | None:
        """The preset whose hyperparameters this network has exactly, if any."""
        for name, preset in PRESETS.items():
            same = all(getattr(self, k) == v for k, v in preset.items() if k != "mid_dim")
            if same and (not self.uses_mid_dim or self.mid_dim == preset["mid_dim"]):
                return name
        return None


class ConfigError(ValueError):
    """An invalid FDAT configuration; `field` names the hyperparameter at fault."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _require(condition: bool, message: str, field: str | None = None) -> None:
    if not condition:
        raise ConfigError(message, field)


_BASE = dict(window_size=8, aim_reduction_ratio=8, group_block_pattern=("spatial", "channel"), mid_dim=64)
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(_BASE, embed_dim=96, num_groups=2, depth_per_group=2, num_heads=3, ffn_expansion_ratio=1.5),
    "light": dict(_BASE, embed_dim=108, num_groups=3, depth_per_group=2, num_heads=4, ffn_expansion_ratio=2.0),
    "medium": dict(_BASE, embed_dim=120, num_groups=4, depth_per_group=3, num_heads=4, ffn_expansion_ratio=2.0),
    "medium_aligned": dict(_BASE, embed_dim=128, num_groups=4, depth_per_group=3, num_heads=4, ffn_expansion_ratio=2.0),
    "large": dict(_BASE, embed_dim=180, num_groups=4, depth_per_group=4, num_heads=6, ffn_expansion_ratio=2.0),
    "xl": dict(_BASE, embed_dim=180, num_groups=6, depth_per_group=6, num_heads=6, ffn_expansion_ratio=2.0),
}


# --- the state dict a configuration implies ---------------------------------
def expected_shapes(config: FDATConfig) -> dict[str, Shape]:
    """Every key of the network's state dict with its shape, in module order."""
    c = config
    e, hd = c.embed_dim, c.ffn_hidden_dim
    shapes: dict[str, Shape] = {}
    if c.unshuffle_mod:
        u = c.unshuffle_factor
        shapes["conv_first.1.weight"] = (e, c.num_in_ch * u * u, 3, 3)
        shapes["conv_first.1.bias"] = (e,)
    else:
        shapes["conv_first.weight"] = (e, c.num_in_ch, 3, 3)
        shapes["conv_first.bias"] = (e,)
    for g in range(c.num_groups):
        for b in range(c.blocks_per_group):
            p = f"groups.{g}.blocks.{b}."
            shapes[p + "n1.weight"] = shapes[p + "n1.bias"] = (e,)
            shapes[p + "n2.weight"] = shapes[p + "n2.bias"] = (e,)
            if c.block_type(b) == "spatial":
                n = c.window_size * c.window_size
                shapes[p + "attn.bias"] = (c.num_heads, n, n)
            else:
                shapes[p + "attn.temp"] = (c.num_heads, 1, 1)
            shapes[p + "attn.qkv.weight"] = (3 * e, e)
            shapes[p + "attn.proj.weight"] = (e, e)
            shapes[p + "attn.proj.bias"] = (e,)
            shapes[p + "conv.0.weight"] = (e, 1, 3, 3)
            shapes[p + "inter.sg.0.weight"] = (1, e, 1, 1)
            shapes[p + "inter.cg.1.weight"] = (c.aim_dim, e, 1, 1)
            shapes[p + "inter.cg.3.weight"] = (e, c.aim_dim, 1, 1)
            shapes[p + "ffn.fc1.weight"] = (hd, e)
            shapes[p + "ffn.fc2.weight"] = (e, hd)
            shapes[p + "ffn.smix.weight"] = (hd, 1, 3, 3)
        shapes[f"groups.{g}.conv.weight"] = (e, e, 3, 3)
    shapes["conv_after.weight"] = (e, e, 3, 3)
    shapes.update(upsampler_shapes(config))
    return shapes


def _conv(shapes: dict[str, Shape], name: str, cin: int, cout: int, k: int = 3) -> None:
    shapes[name + ".weight"] = (cout, cin, k, k)
    shapes[name + ".bias"] = (cout,)


def _conv_t(shapes: dict[str, Shape], name: str, cin: int, cout: int, k: int) -> None:
    shapes[name + ".weight"] = (cin, cout, k, k)  # ConvTranspose2d stores [in, out, k, k]
    shapes[name + ".bias"] = (cout,)


def upsampler_shapes(config: FDATConfig) -> dict[str, Shape]:
    c = config
    e, out, mid, s = c.embed_dim, c.num_out_ch, c.mid_dim, c.upsample_scale
    shapes: dict[str, Shape] = {}
    if c.layout == "lhan":
        if c.upsampler_type == "pixelshuffle":
            _conv(shapes, "upsampler.conv_pre", e, out * s * s)
            _conv(shapes, "upsampler.conv_post", out, out)
        elif c.upsampler_type == "nearest+conv":
            _conv(shapes, "upsampler.conv.0", e, e)
            _conv(shapes, "upsampler.conv.2", e, out)
        else:
            _transpose_stages(shapes, "upsampler.up", e, out, s, sequential=s == 4)
            _conv(shapes, "upsampler.refine", out, out)
        return shapes
    if c.layout == "standalone":
        if c.upsampler_type == "transpose+conv":  # x4 only
            _conv_t(shapes, "upsampler.body.0", e, mid, 2)
            _conv_t(shapes, "upsampler.body.2", mid, mid, 2)
            _conv(shapes, "upsampler.body.4", mid, out)
        elif s == 1:
            _conv(shapes, "upsampler.body", e, out)
        elif _is_pow2(s):
            _conv(shapes, "upsampler.body.0", e, mid)
            stages = int(math.log2(s))
            for i in range(stages):
                _conv(shapes, f"upsampler.body.{1 + 2 * i}", mid, 4 * mid)
            _conv(shapes, f"upsampler.body.{1 + 2 * stages}", mid, out)
        else:
            _conv(shapes, "upsampler.body.0", e, out * s * s)
        return shapes

    # UniUpsample V2/V3: an nn.Sequential; indices count parameter-free modules too.
    up = c.upsampler_type
    p = "upsampler."
    if s == 1 or up == "conv":
        _conv(shapes, p + "0", e, out)
    elif up == "pixelshuffledirect":
        _conv(shapes, p + "0", e, out * s * s)
    elif up == "pixelshuffle":
        _conv(shapes, p + "0", e, mid)
        factors = [3] if s == 3 else [2] * int(math.log2(s))
        i = 2
        for f in factors:
            _conv(shapes, f"{p}{i}", mid, f * f * mid)
            i += 2
        _conv(shapes, f"{p}{i}", mid, out)
    elif up == "nearest+conv":
        stages = 1 if s == 3 else int(math.log2(s))
        for i in range(stages):
            _conv(shapes, f"{p}{3 * i}", e, e)
        # each stage: conv, nearest, lrelu; then conv, lrelu; then the last conv
        _conv(shapes, f"{p}{3 * stages}", e, e)
        _conv(shapes, f"{p}{3 * stages + 2}", e, out)
    elif up == "dysample":
        i = 0
        if mid != e:
            _conv(shapes, p + "0", e, mid)
            i = 2
        q = f"{p}{i}."
        groups_out = 2 * DYSAMPLE_GROUPS * s * s
        shapes[q + "init_pos"] = (1, groups_out, 1, 1)
        _conv(shapes, q + "end_conv", mid, out, 1)
        _conv(shapes, q + "offset", mid, groups_out, 1)
        shapes[q + "scope.weight"] = (groups_out, mid, 1, 1)
    elif up == "transpose+conv":
        _transpose_stages(shapes, p.rstrip("."), e, out, s, sequential=None)
    elif up == "lda":
        i = 0
        if mid != e:
            _conv(shapes, p + "0", e, mid)
            i = 2
        q = f"{p}{i}."
        hidden = mid // LDA_REDUCTION
        gc = mid // (LDA_REDUCTION * LDA_GROUPS)
        k2 = LDA_KERNEL * LDA_KERNEL
        shapes[q + "proj_q.weight"] = (hidden, mid, 1, 1)
        shapes[q + "proj_k.weight"] = (hidden, mid, 1, 1)
        shapes[q + "conv_offset.0.weight"] = (gc, 1, 3, 3)
        shapes[q + "conv_offset.1.weight"] = shapes[q + "conv_offset.1.bias"] = (gc,)
        _conv(shapes, q + "conv_offset.3", gc, 2 * k2)
        shapes[q + "layer_norm.weight"] = shapes[q + "layer_norm.bias"] = (mid,)
        shapes[q + "relative_position_bias_table"] = (1, 1, 1, k2, hidden)
        _conv(shapes, f"{p}{i + 1}", mid, out)
    else:  # pa_up
        stages = 1 if s == 3 else int(math.log2(s))
        cin = e
        for i in range(stages):
            base = 6 * i
            _conv(shapes, f"{p}{base + 1}", cin, mid)
            _conv(shapes, f"{p}{base + 2}.conv.0", mid, mid, 1)
            _conv(shapes, f"{p}{base + 4}", mid, mid)
            cin = mid
        _conv(shapes, f"{p}{6 * stages}", mid, out)
    if c.layout == "uniupsample":
        shapes[p + "MetaUpsample"] = (7,)
    return shapes


def _transpose_stages(
    shapes: dict[str, Shape], name: str, e: int, out: int, s: int, *, sequential: bool | None
) -> None:
    """ConvTranspose stages of transpose+conv; `sequential=None` means UniUpsample indices."""
    if sequential is None:  # UniUpsample: 0 ConvT [, 1 GELU, 2 ConvT], then the 3x3 conv
        if s == 4:
            _conv_t(shapes, name + ".0", e, e, 4)
            _conv_t(shapes, name + ".2", e, out, 4)
            _conv(shapes, name + ".3", out, out)
        else:
            _conv_t(shapes, name + ".0", e, out, 4 if s == 2 else 3)
            _conv(shapes, name + ".1", out, out)
    elif sequential:
        _conv_t(shapes, name + ".0", e, e, 4)
        _conv_t(shapes, name + ".2", e, out, 4)
    else:
        _conv_t(shapes, name, e, out, 4 if s == 2 else 3)
