"""From a state dict to an `FDATConfig`: detection by key grammar, inference by shapes.

Pure functions over keys and tensor shapes; no module is built and no weight
is copied. `infer_config` proposes a configuration from a few tensors, then
checks every key and shape against `expected_shapes(config)`, so any broken
checkpoint ends in one `FDATCheckpointError` that names the key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .config import (
    META_VERSION_MODES,
    UPSAMPLER_TYPES,
    BlockType,
    ConfigError,
    FDATConfig,
    Layout,
    Shape,
    UpsamplerType,
    canonical_aim_ratio,
    canonical_ffn_ratio,
    expected_shapes,
    minimal_period,
)
from .errors import FDATCheckpointError

DEFAULT_GUESSED_SCALE = 4
MAX_PARAMETERS = 1 << 28
"""The most weights a checkpoint may declare (over ten times fdat_xl's 23M): more is refused
before anything is allocated, whatever the tensors' storage (a zero-stride view declares any size)."""
MAX_SCALE = 16
"""The largest scale a checkpoint may declare (MetaUpsample could say x255; a key index, x2**n)."""

_BLOCK = r"groups\.\d+\.blocks\.\d+\."
_UPSAMPLER_KEYS: dict[Layout, str] = {
    "uniupsample": r"""upsampler\.(?:MetaUpsample
        |\d+\.(?:weight|bias)
        |\d+\.(?:offset\.(?:weight|bias)|scope\.weight|end_conv\.(?:weight|bias)|init_pos)
        |\d+\.conv\.0\.(?:weight|bias)
        |\d+\.(?:proj_q\.weight|proj_k\.weight|conv_offset\.[013]\.(?:weight|bias)
              |layer_norm\.(?:weight|bias)|relative_position_bias_table))""",
    "lhan": r"upsampler\.(?:conv_pre|conv_post|refine|up|up\.[02]|conv\.[02])\.(?:weight|bias)",
    "standalone": r"upsampler\.body(?:\.\d+)?\.(?:weight|bias)",
}
_BODY_KEYS = rf"""conv_first\.(?:1\.)?(?:weight|bias)
    |conv_after\.weight
    |groups\.\d+\.conv\.weight
    |{_BLOCK}(?:n1|n2)\.(?:weight|bias)
    |{_BLOCK}attn\.(?:qkv\.weight|proj\.(?:weight|bias)|bias|temp)
    |{_BLOCK}conv\.0\.weight
    |{_BLOCK}inter\.(?:sg\.0|cg\.1|cg\.3)\.weight
    |{_BLOCK}ffn\.(?:fc1|fc2|smix)\.weight"""
_FDAT_KEY = re.compile(rf"(?:{_BODY_KEYS}|{'|'.join(_UPSAMPLER_KEYS.values())})", re.X)
_LAYOUT_KEY = {name: re.compile(pattern, re.X) for name, pattern in _UPSAMPLER_KEYS.items()}
_FDAT_SIGNATURE = re.compile(rf"{_BLOCK}(?:inter|ffn)\.")


def is_fdat_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """True when every key belongs to the FDAT layout and its anchors are present.

    Any foreign key (TFDAT's flow_net, FDAT-RD's dictionary attention, other
    prototypes) declines; so does a non-square window (FDAT-RD's rectangles).
    """
    if not isinstance(state_dict, Mapping) or "conv_after.weight" not in state_dict:
        return False
    if "conv_first.weight" not in state_dict and "conv_first.1.weight" not in state_dict:
        return False
    has_signature = has_upsampler = False
    for key, value in state_dict.items():
        if not isinstance(key, str) or not _FDAT_KEY.fullmatch(key):
            return False
        has_signature = has_signature or bool(_FDAT_SIGNATURE.match(key))
        has_upsampler = has_upsampler or key.startswith("upsampler.")
        if key.endswith(".attn.bias") and _is_dense(value) and value.ndim == 3:
            side = math.isqrt(value.shape[1])
            if side * side != value.shape[1]:
                return False
    return has_signature and has_upsampler


@dataclass(frozen=True)
class Inference:
    """What a state dict says about its network."""

    config: FDATConfig
    scale_guessed: bool = False
    """The checkpoint cannot tell its scale; `config.scale` is a hint or the default."""
    stored_meta: tuple[int, ...] | None = None
    """MetaUpsample as stored (read as integers), None for layouts without it."""

    @property
    def meta_agrees(self) -> bool | None:
        if self.stored_meta is None:
            return None
        return list(self.stored_meta) == self.config.meta_upsample()


def infer_config(state_dict: Mapping[str, Any], *, scale: int | None = None) -> Inference:
    """Infer the configuration of an FDAT state dict (already canonicalised by spandrel).

    `scale` is used only where the checkpoint cannot tell its scale (LHAN
    nearest_conv, ambiguous unshuffle inputs); elsewhere the shapes decide.
    """
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= MAX_SCALE):
        raise ValueError(f"scale must be an integer from 1 to {MAX_SCALE}, got {scale!r}")
    if not isinstance(state_dict, Mapping):
        raise FDATCheckpointError(
            f"expected a state dict (a mapping of names to tensors), found {type(state_dict).__name__}"
        )
    for key in state_dict:
        if not isinstance(key, str):
            raise FDATCheckpointError(f"expected a string key, found {type(key).__name__}", key=repr(key))
    sd = _Shapes(state_dict)
    unshuffle = "conv_first.1.weight" in state_dict
    first_key = "conv_first.1.weight" if unshuffle else "conv_first.weight"
    first = sd.get(first_key, ndim=4)
    e, first_in = first[0], first[1]

    num_groups = _count(sd, r"groups\.(\d+)\.", "groups")
    num_blocks = _count(sd, r"groups\.0\.blocks\.(\d+)\.", "groups.0.blocks")
    types = tuple(_block_type(sd, b) for b in range(num_blocks))
    pattern = minimal_period(types)
    head_key = "groups.0.blocks.0." + ("attn.bias" if types[0] == "spatial" else "attn.temp")
    num_heads = sd.get(head_key, ndim=3)[0]
    window_size, window_key = 8, head_key
    if "spatial" in types:
        window_key = f"groups.0.blocks.{types.index('spatial')}.attn.bias"
        n = sd.get(window_key, ndim=3)[1]
        window_size = math.isqrt(n)
        if window_size * window_size != n or n == 0:
            raise FDATCheckpointError(
                f"expected [heads, ws*ws, ws*ws], found {list(sd.get(window_key))}", key=window_key
            )
    ffn_key, aim_key = "groups.0.blocks.0.ffn.fc1.weight", "groups.0.blocks.0.inter.cg.1.weight"
    hidden = sd.get(ffn_key, ndim=2)[0]
    reduced = sd.get(aim_key, ndim=4)[0]
    for key, value in ((first_key, e), (first_key, first_in), (ffn_key, hidden), (aim_key, reduced)):
        if value < 1:
            raise FDATCheckpointError(f"expected no zero-size dimension, found shape {list(sd.get(key))}", key=key)

    layout = _layout(state_dict)
    up = _infer_upsampler(sd, layout, e, first_in, unshuffle, scale)
    if up.scale > MAX_SCALE:
        raise FDATCheckpointError(
            f"expected a scale of at most x{MAX_SCALE}, found x{up.scale}", key=up.scale_key or up.key
        )
    num_in, user_scale, guessed = first_in, up.scale, up.scale_guessed
    if unshuffle:
        if up.scale != 4:
            raise FDATCheckpointError(
                f"expected an x4 upsampler behind PixelUnshuffle, found x{up.scale}", key=first_key
            )
        num_in, user_scale, guessed = _unshuffle_input(first_in, up.out, scale)
    elif guessed and scale is not None:
        user_scale, guessed = scale, False

    # where each hyperparameter was read, to name the key when it is invalid
    sources = {"embed_dim": first_key, "num_in_ch": first_key, "num_heads": head_key, "window_size": window_key}
    sources |= {"ffn_expansion_ratio": ffn_key, "aim_reduction_ratio": aim_key}
    try:
        config = FDATConfig(
            num_in_ch=num_in,
            num_out_ch=up.out,
            scale=user_scale,
            embed_dim=e,
            num_groups=num_groups,
            depth_per_group=num_blocks // len(pattern),
            num_heads=num_heads,
            window_size=window_size,
            ffn_expansion_ratio=canonical_ffn_ratio(e, hidden),
            aim_reduction_ratio=canonical_aim_ratio(e, reduced),
            group_block_pattern=pattern,
            mid_dim=up.mid,
            upsampler_type=up.mode,
            unshuffle_mod=unshuffle,
            layout=layout,
            meta_version=up.meta[0] if up.meta else 3,
        )
    except ConfigError as err:
        raise FDATCheckpointError(
            f"expected consistent hyperparameters, found {err}", key=sources.get(err.field or "", up.key)
        ) from None
    _check_against(sd, expected_shapes(config), config)
    return Inference(config, guessed, up.meta)


# --- reading tensors ---------------------------------------------------------
class _Shapes:
    """Shape look-ups that fail with an error naming the key."""

    def __init__(self, state_dict: Mapping[str, Any]) -> None:
        self.sd = state_dict

    def __contains__(self, key: str) -> bool:
        return key in self.sd

    def get(self, key: str, ndim: int | None = None) -> Shape:
        if key not in self.sd:
            raise FDATCheckpointError("missing", key=key)
        value = _tensor(self.sd[key], key)
        if ndim is not None and value.ndim != ndim:
            raise FDATCheckpointError(f"expected a {ndim}-D tensor, found shape {list(value.shape)}", key=key)
        return tuple(value.shape)

    def has_module(self, prefix: str) -> bool:
        return any(k.startswith(prefix + ".") for k in self.sd)

    def indices(self, pattern: str) -> list[int]:
        rx = re.compile(pattern)
        return sorted({int(m.group(1)) for k in self.sd if (m := rx.fullmatch(k))})


def _count(sd: _Shapes, prefix: str, what: str) -> int:
    """The number of consecutive indices under `prefix` (a regex whose group is the index)."""
    found = sd.indices(prefix + r".+")
    if not found:
        raise FDATCheckpointError("missing", key=f"{what}.0")
    for i, n in enumerate(found):
        if i != n:
            raise FDATCheckpointError(f"missing (found {what}.{n} but not {what}.{i})", key=f"{what}.{i}")
    return len(found)


def _block_type(sd: _Shapes, b: int) -> BlockType:
    p = f"groups.0.blocks.{b}.attn."
    spatial, channel = p + "bias" in sd, p + "temp" in sd
    if spatial == channel:
        both = "both" if spatial else "neither"
        raise FDATCheckpointError(f"expected one of bias (spatial) or temp (channel), found {both}", key=p.rstrip("."))
    return "spatial" if spatial else "channel"


def _layout(state_dict: Mapping[str, Any]) -> Layout:
    keys = [k for k in state_dict if k.startswith("upsampler.")]
    found = {name: k for name, rx in _LAYOUT_KEY.items() for k in keys if rx.fullmatch(k)}
    if not found:
        raise FDATCheckpointError("expected upsampler keys, found none")
    if len(found) > 1:
        raise FDATCheckpointError(
            f"expected the upsampler keys of one layout, found a mix of {sorted(found)}", key=list(found.values())[-1]
        )
    return next(iter(found))


def _is_dense(value: Any) -> bool:
    return (
        isinstance(value, torch.Tensor) and value.layout == torch.strided and not value.is_meta and not value.is_nested
    )


def _tensor(value: Any, key: str) -> torch.Tensor:
    """`value` if it is a tensor whose values can be read (dense, with data), else an error naming `key`."""
    if not isinstance(value, torch.Tensor):
        raise FDATCheckpointError(f"expected a tensor, found {type(value).__name__}", key=key)
    if not _is_dense(value):
        kind = "meta" if value.is_meta else "nested" if value.is_nested else str(value.layout).removeprefix("torch.")
        raise FDATCheckpointError(f"expected a dense tensor with data, found a {kind} tensor", key=key)
    return value


def read_meta(value: Any) -> tuple[int, ...]:
    """MetaUpsample as integers, whatever its dtype (uint8, int64, float16/32 after a cast or blend)."""
    key = "upsampler.MetaUpsample"
    value = _tensor(value, key)
    if value.shape != (7,) or value.dtype == torch.bool or value.is_complex():
        raise FDATCheckpointError(f"expected 7 integers, found {value.dtype} of shape {list(value.shape)}", key=key)
    floats = value.double()
    if not bool(torch.isfinite(floats).all()) or bool(((floats < 0) | (floats > 255)).any()):
        raise FDATCheckpointError(f"expected 7 integers in 0..255, found {floats.tolist()}", key=key)
    return tuple(round(v) for v in floats.tolist())


# --- upsamplers --------------------------------------------------------------
@dataclass(frozen=True)
class _Upsampler:
    mode: UpsamplerType
    scale: int
    out: int
    mid: int
    key: str  # the key the output channels were read from: blamed for upsampler inconsistencies
    meta: tuple[int, ...] | None = None
    scale_guessed: bool = False
    scale_key: str | None = None  # the key the scale was read from, where it is not `key`


def _infer_upsampler(
    sd: _Shapes, layout: Layout, e: int, first_in: int, unshuffle: bool, hint: int | None
) -> _Upsampler:
    if layout == "lhan":
        return _lhan(sd)
    if layout == "standalone":
        return _standalone(sd, first_in, hint)
    return _uniupsample(sd, e, first_in, unshuffle)


def _rows(sd: _Shapes, key: str, dim: int = 0) -> tuple[int, str]:
    return sd.get(key, ndim=4)[dim], key


def _lhan(sd: _Shapes) -> _Upsampler:
    if sd.has_module("upsampler.conv_pre") or sd.has_module("upsampler.conv_post"):
        out, key = _rows(sd, "upsampler.conv_post.weight")
        s = _square_factor(sd.get("upsampler.conv_pre.weight", ndim=4)[0], out, "upsampler.conv_pre.weight")
        return _Upsampler("pixelshuffle", s, out, 64, key, scale_key="upsampler.conv_pre.weight")
    if sd.has_module("upsampler.conv"):  # nearest_conv: the scale is stored nowhere
        out, key = _rows(sd, "upsampler.conv.2.weight")
        return _Upsampler("nearest+conv", DEFAULT_GUESSED_SCALE, out, 64, key, scale_guessed=True)
    if sd.has_module("upsampler.up.0") or sd.has_module("upsampler.up.2"):
        out, key = _rows(sd, "upsampler.up.2.weight", dim=1)
        return _Upsampler("transpose+conv", 4, out, 64, key)
    w = sd.get("upsampler.up.weight", ndim=4)
    return _Upsampler("transpose+conv", 2 if w[2] == 4 else 3, w[1], 64, "upsampler.up.weight")


def _standalone(sd: _Shapes, first_in: int, hint: int | None) -> _Upsampler:
    if "upsampler.body.weight" in sd or "upsampler.body.bias" in sd:
        out, key = _rows(sd, "upsampler.body.weight")
        return _Upsampler("pixelshuffle", 1, out, 64, key)
    convs = sd.indices(r"upsampler\.body\.(\d+)\.(?:weight|bias)")
    w0 = sd.get("upsampler.body.0.weight", ndim=4)
    if w0[2] == 2:  # ConvTranspose2d(E, mid, 2, 2): transpose+conv, x4
        out, key = _rows(sd, "upsampler.body.4.weight")
        return _Upsampler("transpose+conv", 4, out, w0[1], key)
    if convs == [0]:  # conv E -> out*s*s, PixelShuffle(s), s neither 1 nor a power of two
        readings = [
            (out, s)
            for out in dict.fromkeys((first_in, 3, 1, 4, 2))  # out == in first
            if (s := _shuffle_scale(w0[0], out)) and s & (s - 1)
        ]
        if readings:  # e.g. 36 rows: 4 channels x3 or 1 channel x6; the hint decides, else out == in
            out, s = next((r for r in readings if r[1] == hint), readings[0])
            guessed = len(readings) > 1 and s != hint
            return _Upsampler("pixelshuffle", s, out, 64, "upsampler.body.0.weight", scale_guessed=guessed)
        raise FDATCheckpointError(
            f"expected [out*s*s, E, 3, 3] for a PixelShuffle(s), found {list(w0)}", key="upsampler.body.0.weight"
        )
    last = convs[-1]
    out, key = _rows(sd, f"upsampler.body.{last}.weight")
    return _Upsampler("pixelshuffle", _staged_scale((last - 1) // 2, key), out, w0[0], key)


def _uniupsample(sd: _Shapes, e: int, first_in: int, unshuffle: bool) -> _Upsampler:
    meta_key = "upsampler.MetaUpsample"
    if meta_key not in sd:
        raise FDATCheckpointError(
            "missing (UniUpsample checkpoints store their upsampler's settings here)", key=meta_key
        )
    meta = read_meta(sd.sd[meta_key])
    version, mode_index, m_scale, _, m_out, m_mid, _ = meta
    if version not in META_VERSION_MODES:
        raise FDATCheckpointError(f"expected UniUpsample version 2 or 3, found {version}", key=meta_key)
    meta_mode = UPSAMPLER_TYPES[mode_index] if mode_index < len(UPSAMPLER_TYPES) else None
    mid = m_mid if m_mid >= 1 else 64
    idx = sd.indices(r"upsampler\.(\d+)\.(?:weight|bias)")  # the Sequential's plain convs
    convs = {i: sd.get(f"upsampler.{i}.weight", ndim=4) for i in idx}
    extras = {
        name: sd.indices(rf"upsampler\.(\d+)\.{name}\..+") for name in ("offset", "proj_q", "conv")
    }  # DySample, LDA, pixel attention modules

    def last(dim: int = 0, index: int | None = None) -> tuple[int, str]:
        if not idx:
            raise FDATCheckpointError("missing", key="upsampler.0.weight")
        i = max(idx) if index is None else index
        return convs[i][dim], f"upsampler.{i}.weight"

    def two_or_three(stages: int, key: str) -> tuple[int, bool]:
        """Scale of a staged upsampler; one stage is x2 or x3 with equal shapes: MetaUpsample decides."""
        if stages > 1:
            return _staged_scale(stages, key), False
        return (m_scale, False) if m_scale in (2, 3) else (2, True)

    def found(
        mode: UpsamplerType,
        s: int,
        out_key: tuple[int, str],
        mid_: int = mid,
        guessed: bool = False,
        scale_key: str | None = None,
    ) -> _Upsampler:
        return _Upsampler(mode, s, out_key[0], mid_, out_key[1], meta, guessed, scale_key)

    if extras["offset"]:  # DySample at 0, or at 2 behind a conv E -> mid
        d = extras["offset"][0]
        off = sd.get(f"upsampler.{d}.offset.weight", ndim=4)
        s = math.isqrt(off[0] // 8)
        if s * s * 8 != off[0] or s < 1:
            raise FDATCheckpointError(
                f"expected [8*s*s, mid, 1, 1], found {list(off)}", key=f"upsampler.{d}.offset.weight"
            )
        end = _rows(sd, f"upsampler.{d}.end_conv.weight")
        return found("dysample", s, end, off[1], scale_key=f"upsampler.{d}.offset.weight")
    if extras["proj_q"]:  # LDA: its scale is in no weight
        d = extras["proj_q"][0]
        s = m_scale if m_scale >= 2 else 2
        lda_mid = sd.get(f"upsampler.{d}.proj_q.weight", ndim=4)[1]
        return found("lda", s, last(), lda_mid, m_scale < 2, scale_key=meta_key)
    if extras["conv"]:  # pa_up: one pixel attention per stage
        stages = len(extras["conv"])
        s, guessed = two_or_three(stages, f"upsampler.{extras['conv'][-1]}.conv.0.weight")
        pa = sd.get(f"upsampler.{extras['conv'][0]}.conv.0.weight", ndim=4)
        return found("pa_up", s, last(), pa[0], guessed)
    if idx == [0]:
        rows = convs[0][0]
        if meta_mode == "pixelshuffledirect" and m_scale > 1:
            outs = (m_out, first_in, 3, 1, 4, 2) if not unshuffle else (m_out, 3, 1, 4, 2)
            for out in dict.fromkeys(o for o in outs if o >= 1):
                if (s := _shuffle_scale(rows, out)) > 1:
                    return found("pixelshuffledirect", s, (out, "upsampler.0.weight"))
        return found(meta_mode if meta_mode in UPSAMPLER_TYPES else "conv", 1, last())
    if idx in ([0, 1], [0, 2, 3]) and convs[0][0] == e and convs[0][2] in (3, 4):  # ConvTranspose2d [E, *, k, k]
        if idx == [0, 2, 3]:
            return found("transpose+conv", 4, last(dim=1, index=2))
        return found("transpose+conv", 2 if convs[0][2] == 4 else 3, last(dim=1, index=0))
    if len(idx) >= 3 and all(i % 2 == 0 for i in idx):  # pixelshuffle: 0, stages at 2, 4, ..., last
        # read from the last index, not the count: a missing conv is then named by the final check
        stages = max(idx) // 2 - 1
        head, stage = convs.get(0), convs.get(2)
        x3 = stages == 1 and head is not None and stage is not None and stage[0] == 9 * head[0]
        return found("pixelshuffle", 3 if x3 else _staged_scale(stages, last()[1]), last(), head[0] if head else mid)
    stages = (max(idx, default=2) - 2) // 3  # nearest+conv: convs at 0, 3, ..., 3n, last at 3n+2
    s, guessed = two_or_three(stages, last()[1])
    return found("nearest+conv", s, last(), guessed=guessed)


def _staged_scale(stages: int, key: str) -> int:
    """2**stages for an upsampler of x2 stages, refused (before the power is taken) above MAX_SCALE."""
    if stages > MAX_SCALE.bit_length() - 1:
        raise FDATCheckpointError(
            f"expected at most {MAX_SCALE.bit_length() - 1} x2 stages (x{MAX_SCALE}), found {stages}", key=key
        )
    return 2 ** max(stages, 0)


def _shuffle_scale(rows: int, out: int) -> int:
    """s with rows == out*s*s (a conv before PixelShuffle(s)), or 0 where there is none."""
    s = math.isqrt(rows // out) if out >= 1 else 0
    return s if s >= 1 and s * s * out == rows else 0


def _square_factor(rows: int, out: int, key: str) -> int:
    s = _shuffle_scale(rows, out)
    if not s:
        raise FDATCheckpointError(f"expected out*s*s rows with out={out}, found {rows}", key=key)
    return s


def _unshuffle_input(first_in: int, out: int, hint: int | None) -> tuple[int, int, bool]:
    """(in channels, scale, ambiguous) from conv_first.1's in*u*u input channels, u = 4 // scale."""
    options = [(first_in // (u * u), 4 // u) for u in (2, 4) if first_in % (u * u) == 0]
    if not options:
        raise FDATCheckpointError(
            f"expected in*4 or in*16 input channels after PixelUnshuffle, found {first_in}", key="conv_first.1.weight"
        )
    for num_in, s in options:
        if hint == s:
            return num_in, s, False
    options = [o for o in options if o[0] <= 4] or options  # images have 1 to 4 channels (48 = 3*4*4, not 12*2*2)
    # 16 = 1*4*4 at x1 = 4*2*2 at x2: the reading with in == out is taken (as everywhere upstream);
    # with neither, x2 is the default and the scale is reported as guessed.
    same = [o for o in options if o[0] == out]
    num_in, s = (same or options)[0]
    return num_in, s, not same and len(options) > 1


# --- the final check -----------------------------------------------------------
def _check_against(sd: _Shapes, expected: dict[str, Shape], config: FDATConfig) -> None:
    what = f"{config.layout} {config.upsampler_type} x{config.upsample_scale}"
    for key, shape in expected.items():
        if key not in sd:
            raise FDATCheckpointError(f"missing (expected shape {list(shape)} for {what})", key=key)
        found = sd.get(key)
        if found != shape:
            raise FDATCheckpointError(f"expected shape {list(shape)} for {what}, found {list(found)}", key=key)
        value = sd.sd[key]
        if key != "upsampler.MetaUpsample" and not value.is_floating_point():
            raise FDATCheckpointError(f"expected a floating-point tensor, found {value.dtype}", key=key)
    for key in sd.sd:
        if key not in expected:
            raise FDATCheckpointError(
                f"unexpected key: expected none for {what} (E={config.embed_dim}), found one", key=key
            )
    sizes = {key: math.prod(shape) for key, shape in expected.items()}
    total = sum(sizes.values())
    if total > MAX_PARAMETERS:  # refused before the network is built: nothing is allocated
        largest = max(sizes, key=lambda k: sizes[k])
        raise FDATCheckpointError(
            f"expected at most {MAX_PARAMETERS} weights in all, found {total} "
            f"(this tensor declares {list(expected[largest])})",
            key=largest,
        )
