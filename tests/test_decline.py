"""Detection declines everything that is not FDAT (field guide §7), and accepts what is.

Every look-alike is built from a real FDAT state dict (or a real model of another
spandrel architecture) plus or minus keys, and each family has a positive control:
the unmodified dict is detected, so a `detect` that always says False fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from spandrel import MAIN_REGISTRY, ArchRegistry, UnsupportedModelError
from spandrel.architectures.DAT import DAT
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.SPAN import SPAN
from spandrel.architectures.SwinIR import SwinIR

import spandrel_fdat
from spandrel_fdat import ARCH_ID, FDATArch, install, is_fdat_state_dict
from tests.helpers import SMALL, build, builtin_fdat

StateDict = dict[Any, Any]

# One real state dict per checkpoint layout family (field guide §2 and §4).
FAMILIES: dict[str, dict[str, Any]] = {
    "uniupsample": dict(scale=2, upsampler_type="pixelshuffle"),
    "uniupsample-transpose": dict(scale=4, upsampler_type="transpose+conv"),
    "unshuffle": dict(scale=2, unshuffle_mod=True),
    "lhan": dict(scale=2, layout="lhan", upsampler_type="pixelshuffle"),
    "standalone": dict(scale=4, layout="standalone", upsampler_type="pixelshuffle"),
}


def real(family: str = "uniupsample", seed: int = 0) -> StateDict:
    return dict(build(seed, **{**SMALL, **FAMILIES[family]}).state_dict())


def block_keys(sd: StateDict, prefix: str) -> list[str]:
    return [k for k in sd if k.startswith(prefix)]


def e_dim(sd: StateDict) -> int:
    first = sd.get("conv_first.weight", sd.get("conv_first.1.weight"))
    return int(first.shape[0])


def heads(sd: StateDict) -> int:
    return int(sd["groups.0.blocks.0.attn.bias"].shape[0])


@pytest.fixture(scope="module")
def only_ours() -> ArchRegistry:
    reg = ArchRegistry()
    added = install(reg)
    assert [a.architecture.id for a in added] == [ARCH_ID]
    return reg


# --- positive controls -------------------------------------------------------
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_unmodified_fdat_is_detected(family: str, only_ours: ArchRegistry) -> None:
    sd = real(family)
    assert FDATArch().detect(sd)
    assert is_fdat_state_dict(sd)
    assert only_ours.load(sd).architecture.id == ARCH_ID


# --- look-alikes: TFDAT ------------------------------------------------------
def tfdat(extra: tuple[str, ...], drop_conv_first: bool = False) -> Callable[[StateDict], StateDict]:
    """FDAT body keys plus the temporal modules of the video variant."""

    def make(sd: StateDict) -> StateDict:
        e = e_dim(sd)
        out = dict(sd)
        out["flow_net.conv1.weight"] = torch.randn(16, 6, 7, 7)
        out["flow_net.conv1.bias"] = torch.randn(16)
        out["flow_net.flow.weight"] = torch.randn(2, 16, 3, 3)
        out["temporal_fuse.weight"] = torch.randn(e, 3 * e, 1, 1)
        out["temporal_fuse.bias"] = torch.randn(e)
        if "shallow_stem" in extra:
            out["shallow_stem.0.weight"] = torch.randn(e, 3, 3, 3)
            out["shallow_stem.0.bias"] = torch.randn(e)
        if "field_prefill" in extra:
            out["field_prefill.weight"] = torch.randn(e, 6, 3, 3)
            out["field_prefill.bias"] = torch.randn(e)
        if drop_conv_first:
            del out["conv_first.weight"], out["conv_first.bias"]
        return out

    return make


# --- look-alikes: FDAT-RD ----------------------------------------------------
def rd_dictionary_block(sd: StateDict) -> StateDict:
    """A [spatial, channel, dictionary] group: the third block has dictionary attention, no conv/inter."""
    e = e_dim(sd)
    out = dict(sd)
    p = "groups.0.blocks.2."
    for name in ("n1", "n2"):
        out[f"{p}{name}.weight"] = torch.ones(e)
        out[f"{p}{name}.bias"] = torch.zeros(e)
    out[p + "attn.dictionary"] = torch.randn(1, 64, e)
    out[p + "attn.r_q.weight"] = torch.randn(e, e)
    out[p + "attn.r_kv.weight"] = torch.randn(2 * e, e)
    out[p + "attn.r_norm.weight"] = torch.ones(e)
    out[p + "attn.r_norm.bias"] = torch.zeros(e)
    out[p + "attn.e_q.weight"] = torch.randn(e, e)
    out[p + "attn.e_kv.weight"] = torch.randn(2 * e, e)
    out[p + "attn.proj.weight"] = torch.randn(e, e)
    out[p + "attn.proj.bias"] = torch.randn(e)
    for k in block_keys(sd, "groups.0.blocks.0.ffn."):
        out[k.replace("blocks.0.", "blocks.2.")] = sd[k].clone()
    return out


def rd_rectangular_window(sd: StateDict) -> StateDict:
    """FDAT keys only, but the spatial blocks have 10x30 windows: bias [h, 300, 300]."""
    out = dict(sd)
    for k in sd:
        if k.endswith(".attn.bias"):
            out[k] = torch.randn(sd[k].shape[0], 300, 300)
    return out


def rd_rel_pos_bias(sd: StateDict) -> StateDict:
    """Spatial blocks with a relative-position bias table instead of a dense bias."""
    out = dict(sd)
    for k in sd:
        if k.endswith(".attn.bias"):
            ws = int(sd[k].shape[1] ** 0.5)
            del out[k]
            out[k.replace(".attn.bias", ".attn.rel_pos_bias")] = torch.randn((2 * ws - 1) ** 2, sd[k].shape[0])
    return out


def rd_rel_pos_bias_added(sd: StateDict) -> StateDict:
    """As above, keeping the dense bias too (so every FDAT key is still present)."""
    out = dict(sd)
    out["groups.0.blocks.0.attn.rel_pos_bias"] = torch.randn(49, heads(sd))
    return out


# --- look-alikes: FastDAT prototypes ---------------------------------------------
def renamed(old: str, new: str) -> Callable[[StateDict], StateDict]:
    def make(sd: StateDict) -> StateDict:
        assert any(old in k for k in sd), old  # the rename must change something
        return {k.replace(old, new): v for k, v in sd.items()}

    return make


def fastdat_prototype(sd: StateDict) -> StateDict:
    """All FastDAT naming at once: norm1/norm2, relative-position tables, interaction, conv_after_group."""
    out: StateDict = {}
    for k, v in sd.items():
        if k.endswith(".attn.bias"):
            k, v = k.replace(".attn.bias", ".attn.relative_position_bias_table"), torch.randn(49, v.shape[0])
        k = k.replace(".n1.", ".norm1.").replace(".n2.", ".norm2.").replace(".inter.", ".interaction.")
        if k.startswith("groups.") and k.endswith(".conv.weight") and ".blocks." not in k:
            k = k.replace(".conv.weight", ".conv_after_group.weight")
        out[k] = v
    return out


def added(key: str, shape: tuple[int, ...] = (4,)) -> Callable[[StateDict], StateDict]:
    def make(sd: StateDict) -> StateDict:
        assert key not in sd
        return {**sd, key: torch.randn(shape)}

    return make


LOOKALIKES: dict[str, Callable[[StateDict], StateDict]] = {
    "tfdat-flow-temporal": tfdat(()),
    "tfdat-shallow-stem": tfdat(("shallow_stem",)),
    "tfdat-field-prefill": tfdat(("field_prefill",)),
    "tfdat-stem-instead-of-conv-first": tfdat(("shallow_stem", "field_prefill"), drop_conv_first=True),
    "fdat-rd-dictionary-block": rd_dictionary_block,
    "fdat-rd-rectangular-window": rd_rectangular_window,
    "fdat-rd-rel-pos-bias": rd_rel_pos_bias,
    "fdat-rd-rel-pos-bias-added": rd_rel_pos_bias_added,
    "fastdat-norm1": renamed(".n1.", ".norm1."),
    "fastdat-relative-position-bias-table": renamed(".attn.bias", ".attn.relative_position_bias_table"),
    "fastdat-interaction": renamed(".inter.", ".interaction."),
    "fastdat-conv-after-group": renamed("groups.0.conv.weight", "groups.0.conv_after_group.weight"),
    "fastdat-prototype": fastdat_prototype,
    # a single foreign key added to a real FDAT dict
    "qkv-bias": added("groups.0.blocks.0.attn.qkv.bias", (72,)),
    "ffn-fc1-bias": added("groups.0.blocks.1.ffn.fc1.bias", (48,)),
    "foreign-top-level": added("extra.weight"),
    "foreign-in-group": added("groups.0.norm.weight"),
    "foreign-block-module": added("groups.0.blocks.0.attn.relative_position_index"),
    "foreign-upsampler-key": added("upsampler.0.scale"),
    "num-batches-tracked": added("conv_first.num_batches_tracked", ()),
    "module-prefixed-extra": added("module.conv_first.weight", (24, 3, 3, 3)),
    "ema-copy-key": added("params_ema"),
}


@pytest.mark.parametrize("family", ["uniupsample", "lhan"])
@pytest.mark.parametrize("name", sorted(LOOKALIKES))
def test_lookalike_declined(name: str, family: str, only_ours: ArchRegistry) -> None:
    sd = real(family)
    assert FDATArch().detect(sd)  # the control: what the look-alike was made from is FDAT
    lookalike = LOOKALIKES[name](sd)
    assert lookalike.keys() != sd.keys() or any(lookalike[k].shape != v.shape for k, v in sd.items())
    assert not FDATArch().detect(lookalike)
    assert not is_fdat_state_dict(lookalike)
    with pytest.raises(UnsupportedModelError):
        only_ours.load(lookalike)
    with pytest.raises(UnsupportedModelError):
        spandrel_fdat.load_model(lookalike)


def test_lookalike_does_not_mutate_source() -> None:
    sd = real()
    before = {k: v.clone() for k, v in sd.items()}
    for make in LOOKALIKES.values():
        make(sd)
    assert sd.keys() == before.keys()
    assert all(torch.equal(sd[k], before[k]) for k in sd)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_single_foreign_key_declines_every_family(family: str) -> None:
    sd = real(family)
    assert FDATArch().detect(sd)
    assert not FDATArch().detect({**sd, "groups.0.blocks.0.attn.qkv.bias": torch.zeros(72)})
    assert not FDATArch().detect({**sd, "flow_net.conv1.weight": torch.zeros(1)})


def test_tfdat_and_rd_are_lookalikes_for_spandrels_builtin() -> None:
    """Why declining matters: spandrel 0.4.2's key-subset detection accepts them (field guide §8)."""
    sd = real("uniupsample")
    for name in ("tfdat-flow-temporal", "fdat-rd-dictionary-block", "fdat-rd-rel-pos-bias-added"):
        lookalike = LOOKALIKES[name](sd)
        assert builtin_fdat().FDATArch().detect(lookalike), name
        assert not FDATArch().detect(lookalike), name


def test_non_square_window_declined_but_square_accepted() -> None:
    """A rectangular window (FDAT-RD) is declined; the same dict with a square window of another size is FDAT."""
    sd = real()
    h = heads(sd)
    for n, square in ((15, False), (300, False), (36, True), (64, True)):
        variant = {**sd, "groups.0.blocks.0.attn.bias": torch.randn(h, n, n)}
        assert FDATArch().detect(variant) is square, n


# --- other spandrel architectures ---------------------------------------------
def _other_models() -> dict[str, torch.nn.Module]:
    return {
        "DAT": DAT(embed_dim=12, depth=[1], num_heads=[2], split_size=[2, 4], upscale=2, expansion_factor=2.0),
        "SwinIR": SwinIR(
            embed_dim=12,
            depths=[1],
            num_heads=[2],
            window_size=4,
            upscale=2,
            upsampler="pixelshuffle",
            img_size=16,
            mlp_ratio=2.0,
        ),
        "ESRGAN": ESRGAN(num_filters=8, num_blocks=1, scale=2),
        "SPAN": SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2),
    }


@pytest.fixture(scope="module")
def other_state_dicts() -> dict[str, StateDict]:
    return {name: dict(m.state_dict()) for name, m in _other_models().items()}


@pytest.mark.filterwarnings("ignore::UserWarning")  # spandrel's own DAT/SwinIR construction warns
@pytest.mark.parametrize("arch_id", ["DAT", "SwinIR", "ESRGAN", "SPAN"])
def test_other_spandrel_architectures_declined(
    arch_id: str, other_state_dicts: dict[str, StateDict], only_ours: ArchRegistry
) -> None:
    sd = other_state_dicts[arch_id]
    # control: the dict is a real checkpoint of that architecture
    assert MAIN_REGISTRY.load(sd).architecture.id == arch_id
    assert not FDATArch().detect(sd)
    with pytest.raises(UnsupportedModelError):
        only_ours.load(sd)
    # with ours registered first, they still load as themselves
    reg = MAIN_REGISTRY.copy()
    install(reg)  # idempotent: other tests may have installed us into spandrel's main registry
    assert ARCH_ID in reg
    assert reg.load(sd).architecture.id == arch_id


def test_spandrels_builtin_fdat_model_is_detected() -> None:
    """A state dict of spandrel 0.4.2's own FDAT class is FDAT for us too."""
    model = builtin_fdat().FDAT(
        embed_dim=24, num_groups=1, depth_per_group=1, num_heads=2, window_size=4, mid_dim=16, scale=2
    )
    sd = dict(model.state_dict())
    assert FDATArch().detect(sd)
    reg = ArchRegistry()
    install(reg)
    assert reg.load(sd).architecture.id == ARCH_ID


# --- degenerate inputs --------------------------------------------------------
def test_empty_dict_declined(only_ours: ArchRegistry) -> None:
    assert not FDATArch().detect({})
    with pytest.raises(UnsupportedModelError):
        only_ours.load({})
    with pytest.raises(UnsupportedModelError):
        spandrel_fdat.load_model({})


def test_non_string_keys_declined(only_ours: ArchRegistry) -> None:
    sd = real()
    tensor = torch.zeros(1)
    for key in (0, 1.5, ("conv_first", "weight"), None, b"conv_first.weight"):
        variant = {**sd, key: tensor}
        assert not FDATArch().detect(variant), key
        # spandrel's canonicalisation calls str methods on keys: keep a str key first
        with pytest.raises(UnsupportedModelError):
            only_ours.load(variant)
    assert not FDATArch().detect({0: tensor, 1: tensor})
    assert not FDATArch().detect({i: v for i, v in enumerate(sd.values())})


@pytest.mark.parametrize("value", [None, [], "conv_first.weight", 3, torch.zeros(3)])
def test_non_mapping_declined(value: Any) -> None:
    assert is_fdat_state_dict(value) is False


def test_anchor_keys_required() -> None:
    """Only FDAT keys, but without its anchors (conv_first, conv_after, a block, an upsampler): declined."""
    sd = real()
    for prefix in ("conv_first.", "conv_after.", "groups.", "upsampler."):
        partial = {k: v for k, v in sd.items() if not k.startswith(prefix)}
        assert not FDATArch().detect(partial), prefix
    upsampler_only = {k: v for k, v in sd.items() if k.startswith("upsampler.")}
    assert not FDATArch().detect(upsampler_only)
