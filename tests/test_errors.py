"""Broken FDAT checkpoints: detected, then refused with one FDATCheckpointError naming the key.

Each case starts from a real state dict (`build(...).state_dict()`) and breaks one
thing. Whatever the entry point (infer_config, FDATArch.load, a spandrel registry,
load_model), the error is an `FDATCheckpointError` (a ValueError) with a one-line
message naming the offending key, never a KeyError/IndexError/ZeroDivisionError/
TypeError/RuntimeError from deep inside the loader.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from spandrel import ArchRegistry

import spandrel_fdat
from spandrel_fdat import FDATArch, FDATCheckpointError, infer_config, install, is_fdat_state_dict
from tests.helpers import SMALL, build, image

StateDict = dict[str, Any]
LEAKED = (KeyError, IndexError, ZeroDivisionError, TypeError, RuntimeError, AttributeError)

# 2 groups x 4 blocks ([spatial, channel] x 2): room for inconsistencies between groups
DEEP = dict(SMALL, num_groups=2, depth_per_group=2)
UNI = dict(DEEP, scale=2, upsampler_type="pixelshuffle")
HEADS = DEEP["num_heads"]


def real(**kw: Any) -> StateDict:
    return dict(build(**{**SMALL, **kw}).state_dict())


def entry_points() -> dict[str, Callable[[StateDict], Any]]:
    reg = ArchRegistry()
    install(reg)
    return {
        "infer_config": infer_config,
        "FDATArch.load": FDATArch().load,
        "registry.load": reg.load,
        "load_model": spandrel_fdat.load_model,
    }


def assert_refused(sd: StateDict, key: str | tuple[str, ...], *, prefix: bool = False) -> None:
    """Every entry point raises one FDATCheckpointError naming `key` (one of them, if a tuple;
    or a key under it, if prefix)."""
    keys = (key,) if isinstance(key, str) else key
    assert is_fdat_state_dict(sd), "the broken dict should still be detected as FDAT"
    for name, load in entry_points().items():
        with pytest.raises(Exception) as info:
            load(sd)
        err = info.value
        assert isinstance(err, FDATCheckpointError), f"{name}: {type(err).__name__}: {err}"
        assert isinstance(err, ValueError)
        assert not isinstance(err, LEAKED)
        message = str(err)
        assert "\n" not in message and message.strip() == message, repr(message)
        assert any(k in message for k in keys), f"{name}: none of {keys} named in {message!r}"
        if prefix:
            assert err.key is not None and err.key.startswith(keys), (err.key, message)
        else:
            assert err.key in keys, (err.key, message)


# --- the cases -----------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    base: dict[str, Any]
    mutate: Callable[[StateDict], None]
    key: str | tuple[str, ...]  # a tuple: any of these keys is a fair answer
    prefix: bool = False  # the key names the broken module; the error may name a tensor under it


def _delete(*keys: str) -> Callable[[StateDict], None]:
    def mutate(sd: StateDict) -> None:
        for k in keys:
            del sd[k]

    return mutate


def _set(key: str, value: Any | Callable[[Any], Any]) -> Callable[[StateDict], None]:
    def mutate(sd: StateDict) -> None:
        assert key in sd
        sd[key] = value(sd[key]) if callable(value) else value

    return mutate


def _meta(change: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[StateDict], None]:
    return _set("upsampler.MetaUpsample", change)


def _meta_at(dtype: torch.dtype, index: int, value: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def change(m: torch.Tensor) -> torch.Tensor:
        m = m.to(dtype)
        m[index] = value
        return m

    return change


def _rename_prefix(old: str, new: str) -> Callable[[StateDict], None]:
    def mutate(sd: StateDict) -> None:
        moved = {k: sd.pop(k) for k in [k for k in sd if k.startswith(old)]}
        assert moved
        sd.update({new + k[len(old) :]: v for k, v in moved.items()})

    return mutate


def _copy_block(src: str, dst: str) -> Callable[[StateDict], None]:
    def mutate(sd: StateDict) -> None:
        for k in [k for k in sd if k.startswith(src)]:
            sd[dst + k[len(src) :]] = sd[k].clone()

    return mutate


def _drop_block(prefix: str) -> Callable[[StateDict], None]:
    def mutate(sd: StateDict) -> None:
        for k in [k for k in sd if k.startswith(prefix)]:
            del sd[k]

    return mutate


def _channel_instead_of_spatial(block: str) -> Callable[[StateDict], None]:
    def mutate(sd: StateDict) -> None:
        bias = sd.pop(block + "attn.bias")
        sd[block + "attn.temp"] = torch.ones(bias.shape[0], 1, 1)

    return mutate


def _with_both(block: str) -> Callable[[StateDict], None]:
    def mutate(sd: StateDict) -> None:
        n = sd[block + "attn.bias"].shape[0]
        sd[block + "attn.temp"] = torch.ones(n, 1, 1)

    return mutate


def _heads(n: int) -> Callable[[StateDict], None]:
    """Every attention in the dict says `n` heads (consistently)."""

    def mutate(sd: StateDict) -> None:
        for k in list(sd):
            if k.endswith("attn.bias"):
                sd[k] = torch.zeros(n, *sd[k].shape[1:])
            elif k.endswith("attn.temp"):
                sd[k] = torch.ones(n, 1, 1)

    return mutate


def _rows(delta: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda t: torch.zeros(t.shape[0] + delta, *t.shape[1:])


B01 = "groups.0.blocks.1."
CASES = [
    # missing and misshapen tensors
    Case("missing-block-tensor", UNI, _delete(B01 + "ffn.smix.weight"), B01 + "ffn.smix.weight"),
    Case(
        "missing-tensor-group1",
        UNI,
        _delete("groups.1.blocks.3.inter.cg.3.weight"),
        "groups.1.blocks.3.inter.cg.3.weight",
    ),
    Case("missing-group-conv", UNI, _delete("groups.1.conv.weight"), "groups.1.conv.weight"),
    Case("missing-conv-first-bias", UNI, _delete("conv_first.bias"), "conv_first.bias"),
    Case(
        "qkv-rows-off-by-one",
        UNI,
        _set("groups.0.blocks.0.attn.qkv.weight", _rows(-1)),
        "groups.0.blocks.0.attn.qkv.weight",
    ),
    Case(
        "qkv-rows-off-by-one-group1",
        UNI,
        _set("groups.1.blocks.2.attn.qkv.weight", _rows(+1)),
        "groups.1.blocks.2.attn.qkv.weight",
    ),
    Case(
        "proj-cols-off-by-one",
        UNI,
        _set(B01 + "attn.proj.weight", lambda t: torch.zeros(t.shape[0], t.shape[1] + 1)),
        B01 + "attn.proj.weight",
    ),
    Case("conv-3d", UNI, _set("conv_after.weight", lambda t: t[0]), "conv_after.weight"),
    Case("layernorm-as-scalar", UNI, _set(B01 + "n2.weight", torch.tensor(1.0)), B01 + "n2.weight"),
    # groups that disagree with group 0
    Case(
        "group1-extra-block",
        UNI,
        _copy_block("groups.1.blocks.0.", "groups.1.blocks.4."),
        "groups.1.blocks.4.",
        prefix=True,
    ),
    Case("group1-fewer-blocks", UNI, _drop_block("groups.1.blocks.3."), "groups.1.blocks.3.", prefix=True),
    Case(
        "group1-other-block-type",
        UNI,
        _channel_instead_of_spatial("groups.1.blocks.0."),
        "groups.1.blocks.0.attn",
        prefix=True,
    ),
    Case("group-numbering-gap", UNI, _rename_prefix("groups.1.", "groups.2."), "groups.1"),
    Case(
        "block-numbering-gap",
        UNI,
        _rename_prefix("groups.0.blocks.3.", "groups.0.blocks.5."),
        "groups.0.blocks.3",
    ),
    # block type
    Case("attn-bias-and-temp", UNI, _with_both("groups.0.blocks.0."), "groups.0.blocks.0.attn"),
    Case("attn-neither", UNI, _delete("groups.0.blocks.0.attn.bias"), "groups.0.blocks.0.attn"),
    Case("attn-neither-channel", UNI, _delete(B01 + "attn.temp"), B01 + "attn"),
    Case(
        "attn-neither-group1",
        UNI,
        _delete("groups.1.blocks.1.attn.temp"),
        "groups.1.blocks.1.attn",
        prefix=True,
    ),
    # MetaUpsample
    Case("meta-missing", UNI, _delete("upsampler.MetaUpsample"), "upsampler.MetaUpsample"),
    Case("meta-version-7", UNI, _meta(_meta_at(torch.uint8, 0, 7)), "upsampler.MetaUpsample"),
    Case("meta-version-0", UNI, _meta(_meta_at(torch.uint8, 0, 0)), "upsampler.MetaUpsample"),
    Case("meta-nan", UNI, _meta(_meta_at(torch.float32, 2, math.nan)), "upsampler.MetaUpsample"),
    Case("meta-inf", UNI, _meta(_meta_at(torch.float32, 4, math.inf)), "upsampler.MetaUpsample"),
    Case("meta-negative-float", UNI, _meta(_meta_at(torch.float32, 2, -2.0)), "upsampler.MetaUpsample"),
    Case("meta-negative-int64", UNI, _meta(_meta_at(torch.int64, 1, -1)), "upsampler.MetaUpsample"),
    Case("meta-over-255", UNI, _meta(_meta_at(torch.int64, 3, 300)), "upsampler.MetaUpsample"),
    Case("meta-length-6", UNI, _meta(lambda m: m[:6].clone()), "upsampler.MetaUpsample"),
    Case("meta-length-8", UNI, _meta(lambda m: torch.cat([m, m[-1:]])), "upsampler.MetaUpsample"),
    Case("meta-2d", UNI, _meta(lambda m: m.view(1, 7)), "upsampler.MetaUpsample"),
    Case("meta-scalar", UNI, _meta(lambda m: m[0].clone()), "upsampler.MetaUpsample"),
    Case("meta-bool", UNI, _meta(lambda m: m.bool()), "upsampler.MetaUpsample"),
    Case("meta-complex", UNI, _meta(lambda m: m.to(torch.complex64)), "upsampler.MetaUpsample"),
    Case("meta-int", UNI, _set("upsampler.MetaUpsample", 3), "upsampler.MetaUpsample"),
    Case("meta-str", UNI, _set("upsampler.MetaUpsample", "3,2,2,24,3,16,4"), "upsampler.MetaUpsample"),
    Case("meta-list", UNI, _set("upsampler.MetaUpsample", [3, 2, 2, 24, 3, 16, 4]), "upsampler.MetaUpsample"),
    # values that are not float tensors
    Case("weight-int-early", UNI, _set("conv_first.weight", 3), "conv_first.weight"),
    Case("weight-str-early", UNI, _set("conv_first.weight", "weights"), "conv_first.weight"),
    Case("weight-int-late", UNI, _set(B01 + "ffn.fc2.weight", 3), B01 + "ffn.fc2.weight"),
    Case("weight-str-late", UNI, _set(B01 + "ffn.fc2.weight", "weights"), B01 + "ffn.fc2.weight"),
    Case("weight-none", UNI, _set("conv_after.weight", None), "conv_after.weight"),
    Case("weight-int64", UNI, _set("groups.0.conv.weight", lambda t: t.long()), "groups.0.conv.weight"),
    Case("weight-int8-first", UNI, _set("conv_first.weight", lambda t: t.to(torch.int8)), "conv_first.weight"),
    Case("weight-bool", UNI, _set(B01 + "attn.temp", lambda t: t.bool()), B01 + "attn.temp"),
    Case("weight-complex", UNI, _set("upsampler.0.weight", lambda t: t.to(torch.complex64)), "upsampler.0.weight"),
    # zero-size and impossible dimensions
    Case("embed-dim-zero", UNI, _set("conv_first.weight", lambda t: t[:0]), "conv_first.weight"),
    Case(
        "embed-dim-zero-unshuffle",
        dict(SMALL, scale=2, unshuffle_mod=True),
        _set("conv_first.1.weight", lambda t: t[:0]),
        "conv_first.1.weight",
    ),
    Case(
        "ffn-hidden-zero",
        UNI,
        _set("groups.0.blocks.0.ffn.fc1.weight", lambda t: t[:0]),
        "groups.0.blocks.0.ffn.fc1.weight",
    ),
    Case(
        "window-zero", UNI, _set("groups.0.blocks.0.attn.bias", lambda t: t[:, :0, :0]), "groups.0.blocks.0.attn.bias"
    ),
    Case("heads-zero", UNI, _heads(0), "groups.0.blocks.0.attn.bias"),
    Case("heads-not-dividing-embed-dim", UNI, _heads(5), ("groups.0.blocks.0.attn.bias", "conv_first.weight")),
    # unshuffle front end
    Case(
        "unshuffle-13-input-channels",
        dict(SMALL, scale=2, unshuffle_mod=True),
        _set("conv_first.1.weight", lambda t: torch.zeros(t.shape[0], 13, 3, 3)),
        "conv_first.1.weight",
    ),
    Case(
        "unshuffle-6-input-channels",
        dict(SMALL, scale=1, unshuffle_mod=True),
        _set("conv_first.1.weight", lambda t: torch.zeros(t.shape[0], 6, 3, 3)),
        "conv_first.1.weight",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_broken_checkpoint_refused(case: Case) -> None:
    sd = real(**case.base)
    assert is_fdat_state_dict(sd)
    infer_config(sd)  # control: the unbroken dict loads
    case.mutate(sd)
    assert_refused(sd, case.key, prefix=case.prefix)


def test_non_square_window_is_declined_not_refused() -> None:
    """FDAT-RD's rectangular windows: detection declines (so a host tries other architectures);
    asked directly, inference names the key."""
    sd = real(**UNI)
    sd["groups.0.blocks.0.attn.bias"] = torch.zeros(HEADS, 15, 15)
    assert not is_fdat_state_dict(sd)
    with pytest.raises(FDATCheckpointError) as info:
        infer_config(sd)
    assert info.value.key == "groups.0.blocks.0.attn.bias"
    assert "\n" not in str(info.value)


# --- a missing upsampler tensor, every layout ---------------------------------------
# LHAN's and the standalone file's upsamplers have no MetaUpsample: their keys are all there is.
NO_META_LAYOUTS = {
    "lhan-pixelshuffle-x4": dict(layout="lhan", upsampler_type="pixelshuffle", scale=4),
    "lhan-nearest-conv": dict(layout="lhan", upsampler_type="nearest+conv", scale=2),
    "lhan-transpose-x2": dict(layout="lhan", upsampler_type="transpose+conv", scale=2),
    "lhan-transpose-x4": dict(layout="lhan", upsampler_type="transpose+conv", scale=4),
    "standalone-pixelshuffle-x1": dict(layout="standalone", upsampler_type="pixelshuffle", scale=1),
    "standalone-pixelshuffle-x3": dict(layout="standalone", upsampler_type="pixelshuffle", scale=3),
    "standalone-pixelshuffle-x4": dict(layout="standalone", upsampler_type="pixelshuffle", scale=4),
    "standalone-transpose-x4": dict(layout="standalone", upsampler_type="transpose+conv", scale=4),
}


def _upsampler_tensors(layouts: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (name, key)
        for name, kw in layouts.items()
        for key in build(**{**SMALL, **kw}).state_dict()
        if key.startswith("upsampler.") and key != "upsampler.MetaUpsample"
    ]


@pytest.mark.parametrize(("layout", "key"), _upsampler_tensors(NO_META_LAYOUTS))
def test_missing_upsampler_tensor_named(layout: str, key: str) -> None:
    sd = real(**NO_META_LAYOUTS[layout])
    del sd[key]
    assert_refused(sd, key)


UNI_LAYOUTS = {
    "pixelshuffle-x2": dict(upsampler_type="pixelshuffle", scale=2),
    "pixelshuffledirect-x3": dict(upsampler_type="pixelshuffledirect", scale=3),
    "transpose-x4": dict(upsampler_type="transpose+conv", scale=4),
    "nearest-conv-x3": dict(upsampler_type="nearest+conv", scale=3),
    "dysample-x2": dict(upsampler_type="dysample", scale=2),
    "lda-x2": dict(upsampler_type="lda", scale=2),
    "pa-up-x4": dict(upsampler_type="pa_up", scale=4),
    "conv-x1": dict(upsampler_type="conv", scale=1),
}


@pytest.mark.parametrize(("layout", "key"), _upsampler_tensors(UNI_LAYOUTS))
def test_missing_uniupsample_tensor_refused(layout: str, key: str) -> None:
    """UniUpsample layouts are read from their shapes, so a missing tensor may first show as
    another mode's shape mismatch; still one FDATCheckpointError naming an upsampler key."""
    sd = real(**UNI_LAYOUTS[layout])
    del sd[key]
    assert is_fdat_state_dict(sd)
    for load in entry_points().values():
        with pytest.raises(Exception) as info:
            load(sd)
        err = info.value
        assert isinstance(err, FDATCheckpointError), f"{type(err).__name__}: {err}"
        assert "\n" not in str(err)
        assert err.key is not None and err.key.startswith("upsampler."), str(err)


# --- MetaUpsample that disagrees with the shapes: the shapes win ---------------------
CONTRADICTIONS = [
    # (network, MetaUpsample entries to overwrite {index: value})
    (dict(upsampler_type="transpose+conv", scale=2), {1: 2, 2: 4}),  # says pixelshuffle x4
    (dict(upsampler_type="transpose+conv", scale=4), {1: 0, 2: 1}),  # says conv x1
    (dict(upsampler_type="pixelshuffle", scale=2), {1: 4, 2: 3}),  # says dysample x3
    (dict(upsampler_type="pixelshuffle", scale=4), {2: 2}),  # says x2
    (dict(upsampler_type="nearest+conv", scale=4), {1: 1, 2: 8}),  # says pixelshuffledirect x8
    (dict(upsampler_type="dysample", scale=2), {1: 3, 2: 4, 5: 99}),  # says nearest+conv x4, mid 99
    (dict(upsampler_type="pixelshuffle", scale=2), {1: 9}),  # a mode index no version knows
    (dict(upsampler_type="pixelshuffle", scale=2), {4: 1, 3: 7}),  # wrong out and in dims
]


@pytest.mark.parametrize(
    ("net", "override"),
    CONTRADICTIONS,
    ids=[
        f"{n['upsampler_type']}-x{n['scale']}-meta-" + ",".join(f"{i}={v}" for i, v in o.items())
        for n, o in CONTRADICTIONS
    ],
)
def test_contradicting_meta_loads_per_shapes(net: dict[str, Any], override: dict[int, int]) -> None:
    sd = real(**net)
    truth = infer_config(sd)
    assert truth.meta_agrees is True
    meta = sd["upsampler.MetaUpsample"].clone()
    for i, v in override.items():
        meta[i] = v
    assert meta.tolist() != sd["upsampler.MetaUpsample"].tolist()
    lying = {**sd, "upsampler.MetaUpsample": meta}

    inference = infer_config(lying)
    assert inference.meta_agrees is False
    assert inference.stored_meta == tuple(meta.tolist())
    assert inference.config == truth.config
    assert inference.config.upsampler_type == net["upsampler_type"]
    assert inference.config.scale == net["scale"]

    x = image(3, 7, 6)
    expected = FDATArch().load(sd).model(x)
    got = FDATArch().load(lying)
    assert got.scale == net["scale"]
    out = got.model(x)
    assert out.shape[-2:] == (7 * net["scale"], 6 * net["scale"])
    assert torch.equal(out, expected)


def test_meta_decides_where_shapes_cannot() -> None:
    """nearest+conv x2 and x3 have the same keys and shapes (field guide §5): MetaUpsample's scale decides."""
    x2, x3 = real(upsampler_type="nearest+conv", scale=2), real(upsampler_type="nearest+conv", scale=3)
    assert {k: v.shape for k, v in x2.items() if k != "upsampler.MetaUpsample"} == {
        k: v.shape for k, v in x3.items() if k != "upsampler.MetaUpsample"
    }
    for sd, s in ((x2, 2), (x3, 3)):
        inference = infer_config(sd)
        assert inference.config.scale == s and inference.meta_agrees and not inference.scale_guessed
        assert FDATArch().load(sd).model(image(3, 5, 4)).shape[-2:] == (5 * s, 4 * s)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64, torch.int64, torch.int32])
@pytest.mark.parametrize(
    "net",
    [
        dict(upsampler_type="pixelshuffle", scale=2),
        dict(upsampler_type="nearest+conv", scale=3),
        dict(scale=1, unshuffle_mod=True),
    ],
    ids=["pixelshuffle-x2", "nearest-conv-x3", "unshuffle-x1"],
)
def test_meta_dtype_irrelevant(net: dict[str, Any], dtype: torch.dtype) -> None:
    """A whole-dict cast or an interpolation in chaiNNer changes MetaUpsample's dtype, nothing else."""
    sd = real(**net)
    assert sd["upsampler.MetaUpsample"].dtype == torch.uint8
    cast = {**sd, "upsampler.MetaUpsample": sd["upsampler.MetaUpsample"].to(dtype)}
    reference, inference = infer_config(sd), infer_config(cast)
    assert inference == reference
    x = image(3, 9, 7)
    a, b = FDATArch().load(sd), FDATArch().load(cast)
    assert (a.scale, a.tags) == (b.scale, b.tags)
    assert torch.equal(a.model(x), b.model(x))


def test_interpolated_meta_rounds_to_integers() -> None:
    """Blending two equal MetaUpsamples as floats can leave values a rounding error off the integer."""
    sd = real(upsampler_type="nearest+conv", scale=3)
    meta = sd["upsampler.MetaUpsample"].double()
    wobble = 1e-3 * torch.tensor([1.0, -1.0] * 4)[:7]
    blended = {**sd, "upsampler.MetaUpsample": (meta + wobble).float()}
    assert not torch.equal(
        blended["upsampler.MetaUpsample"].double().round(), blended["upsampler.MetaUpsample"].double()
    )
    assert infer_config(blended) == infer_config(sd)
