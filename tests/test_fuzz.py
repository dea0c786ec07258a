"""Fuzzing the loader: detect means load, and a clear error otherwise.

Every bundled checkpoint in fixtures/ (every layout family) seeds a Hypothesis
search that breaks it: keys deleted, added, renamed; shapes changed (zero-size,
1-D, 0-D, off by one, huge declared sizes on zero-stride views); dtypes changed
(integers, bool, complex, fp16, bf16, float64, float8); MetaUpsample values out
of range, negative, fractional, NaN; NaN/inf weights; non-tensor values; keys of
other spandrel architectures merged in; whole-dict casts; the empty dict. Each
mutated mapping goes to one entry point (`FDATArch().load`, a registry holding
only our architecture, spandrel's `ModelLoader().load_from_state_dict`, or
`spandrel_fdat.load_model`), and exactly one of these happens:

- detect is False: the registry entry points raise UnsupportedModelError, and
  `FDATArch().load` (asked anyway) raises an FDATCheckpointError;
- detect is True: the model loads and a forward pass on a small image of its
  declared channel count gives an image scaled by its declared scale (with an
  FDATNonFiniteWarning naming the first non-finite weight, if any), or loading
  raises one FDATCheckpointError (a ValueError) whose one-line message names
  the offending key.

Nothing else may escape. The run is deterministic (`derandomize=True`); its size
is `FDAT_FUZZ_EXAMPLES` (total over all seeds, default 10,200: 300 per fixture).
A longer run is one command away:

    FDAT_FUZZ_EXAMPLES=200000 python -m pytest tests/test_fuzz.py

and `FDAT_FUZZ_SEED=<int>` explores a different, seeded part of the space
instead of the default derandomized one.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from spandrel import ArchRegistry, ImageModelDescriptor, ModelLoader, UnsupportedModelError, canonicalize_state_dict
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.SPAN import SPAN

import spandrel_fdat
from spandrel_fdat import (
    FDAT,
    FDATArch,
    FDATCheckpointError,
    FDATConfig,
    FDATNonFiniteWarning,
    FDATScaleWarning,
    expected_shapes,
    inference,
    install,
    is_fdat_state_dict,
)

StateDict = dict[Any, Any]
Mutation = Callable[[StateDict], StateDict]

ROOT = Path(__file__).resolve().parent.parent
FIXTURES_DIR = ROOT / "fixtures"
MANIFEST = json.loads((FIXTURES_DIR / "manifest.json").read_text())
LEAKED = (KeyError, IndexError, ZeroDivisionError, TypeError, RuntimeError, AttributeError)


def _load_seeds() -> dict[str, StateDict]:
    """Every fixture, as spandrel hands it to an architecture (canonicalised)."""
    return {
        name: canonicalize_state_dict(load_file(str(FIXTURES_DIR / f"{name}.safetensors")))
        for name in sorted(MANIFEST["fixtures"])
    }


SEEDS = _load_seeds()
SEED_NAMES = sorted(SEEDS)

# --- the size of the run ------------------------------------------------------------
DEFAULT_EXAMPLES = 300 * len(SEED_NAMES)
TOTAL_EXAMPLES = int(os.environ.get("FDAT_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
PER_SEED = max(1, math.ceil(TOTAL_EXAMPLES / len(SEED_NAMES)))
FUZZ_SEED = os.environ.get("FDAT_FUZZ_SEED")

FUZZ_SETTINGS = settings(
    max_examples=PER_SEED,
    derandomize=FUZZ_SEED is None,
    deadline=None,
    database=None,
    print_blob=False,
    suppress_health_check=list(HealthCheck),
)


def _seeded(test: Any) -> Any:
    return seed(int(FUZZ_SEED))(test) if FUZZ_SEED is not None else test


@pytest.fixture(autouse=True)
def _no_scale_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(spandrel_fdat.SCALE_ENV, raising=False)


# --- what to mix in -------------------------------------------------------------------
def _foreign_state_dicts() -> dict[str, StateDict]:
    """Real state dicts of other spandrel architectures, and key names of FDAT look-alikes."""
    lookalike = {
        # TFDAT (video FDAT), FDAT-RD (dictionary attention), "FastDAT" prototypes (field guide §7)
        "flow_net.conv.weight": torch.zeros(2, 6, 3, 3),
        "temporal_fuse.weight": torch.zeros(16, 48, 1, 1),
        "shallow_stem.0.weight": torch.zeros(16, 3, 3, 3),
        "groups.0.blocks.0.attn.dictionary": torch.zeros(8, 16),
        "groups.0.blocks.2.attn.r_q.weight": torch.zeros(16, 16),
        "groups.0.blocks.0.attn.rel_pos_bias": torch.zeros(2, 49),
        "groups.0.blocks.0.norm1.weight": torch.zeros(16),
        "groups.0.blocks.0.attn.relative_position_bias_table": torch.zeros(49, 2),
        "groups.0.blocks.0.interaction.conv.weight": torch.zeros(16, 16, 1, 1),
        "conv_after_group.weight": torch.zeros(16, 16, 3, 3),
        "upsampler.MetaUpsample2": torch.zeros(7, dtype=torch.uint8),
        "upsampler.0.weight_g": torch.zeros(16, 1, 1, 1),
        "groups.0.blocks.0.attn.qkv.bias": torch.zeros(48),
    }
    return {
        "ESRGAN": dict(ESRGAN(num_filters=8, num_blocks=1, scale=2).state_dict()),
        "SPAN": dict(SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2).state_dict()),
        "lookalike": lookalike,
    }


FOREIGN = _foreign_state_dicts()
FOREIGN_TENSORS = {k: v for sd in FOREIGN.values() for k, v in sd.items()}
FOREIGN_KEYS = sorted(FOREIGN_TENSORS)
ALL_SEED_KEYS = sorted({k for sd in SEEDS.values() for k in sd})
"""Keys of every layout: adding another layout's key mixes layouts."""

NUMBERS = [0, 1, 2, 3, 4, 5, 7, 9, 10, 12, 2**31, 10**20]
HUGE = [2**16, 2**24, 2**31 + 1, 2**40]
WEIGHT_DTYPES = [
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.int8,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.bool,
    torch.complex64,
]
META_DTYPES = [torch.uint8, torch.int64, torch.int32, torch.float16, torch.float32, torch.float64, torch.bfloat16]
META_VALUES = [-1, -0.4, 0, 0.49, 1, 2, 2.5, 3, 4, 5, 7, 8, 9, 16, 64, 255, 255.6, 256, 1e9, math.nan, math.inf]
NON_TENSORS: list[Any] = [None, 0, 3, 1.5, "weights", b"\x00", [1, 2, 3], (16,), {"weight": torch.zeros(1)}, object()]


# --- mutations -----------------------------------------------------------------------
BIG = 1 << 20
"""Tensors larger than this are zero-stride views (a huge declared size): mutations keep them views."""


def _plain(v: Any) -> bool:
    """A dense tensor with data (what mutations other than `_odd_tensor` work on)."""
    return isinstance(v, torch.Tensor) and v.layout == torch.strided and not v.is_meta and not v.is_nested


def _retyped(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A copy of `t` in `dtype`; for a huge view, a view again (materialising it would exhaust memory)."""
    return t.to(dtype, copy=True) if t.numel() <= BIG else torch.zeros((), dtype=dtype).expand(t.shape)


def _reshaped(t: torch.Tensor, shape: list[int]) -> torch.Tensor:
    return t.reshape(shape).clone() if t.numel() <= BIG else torch.zeros((), dtype=t.dtype).expand(shape)


def _fresh(shape: list[int], dtype: torch.dtype) -> torch.Tensor:
    """Random values of `shape`, or a zero-stride view where that would be huge."""
    return torch.randn(shape).to(dtype) if math.prod(shape) <= BIG else torch.zeros((), dtype=dtype).expand(shape)


def _pick(sd: StateDict, index: int) -> Any:
    keys = list(sd)
    return keys[index % len(keys)]


def _replace(sd: StateDict, key: Any, value: Any) -> StateDict:
    return {**sd, key: value}


def _on_one_tensor(index: int, change: Callable[[torch.Tensor], Any]) -> Mutation:
    """A mutation that replaces the index-th plain tensor of the dict by `change(tensor)`."""

    def mutate(d: StateDict) -> StateDict:
        tensors = [k for k, v in d.items() if _plain(v)]
        if not tensors:
            return d
        key = tensors[index % len(tensors)]
        return _replace(d, key, change(d[key]))

    return mutate


@st.composite
def _delete(draw: st.DrawFn, sd: StateDict) -> Mutation:
    index = draw(st.integers(0, 10_000))
    return lambda d: {k: v for i, (k, v) in enumerate(d.items()) if i != index % max(len(d), 1)}


@st.composite
def _add(draw: st.DrawFn, sd: StateDict) -> Mutation:
    source = draw(st.sampled_from(["other-layout", "foreign", "grammar"]))
    if source == "foreign":
        foreign = draw(st.sampled_from(FOREIGN_KEYS))
        return lambda d: _replace(d, foreign, FOREIGN_TENSORS[foreign])
    if source == "other-layout":
        key = draw(st.sampled_from(ALL_SEED_KEYS))
    else:  # a key the FDAT grammar accepts, at an index the dict may not have
        g, b, i = draw(st.sampled_from(NUMBERS)), draw(st.sampled_from(NUMBERS)), draw(st.sampled_from(NUMBERS))
        key = draw(
            st.sampled_from(
                [
                    f"groups.{g}.blocks.{b}.attn.temp",
                    f"groups.{g}.blocks.{b}.attn.bias",
                    f"groups.{g}.blocks.{b}.ffn.fc1.weight",
                    f"groups.{g}.conv.weight",
                    f"upsampler.{i}.weight",
                    f"upsampler.{i}.bias",
                    f"upsampler.{i}.conv.0.weight",
                    f"upsampler.{i}.offset.weight",
                    f"upsampler.{i}.proj_q.weight",
                    "upsampler.MetaUpsample",
                    "conv_first.1.weight",
                    "upsampler.body.weight",
                ]
            )
        )
    shape = draw(st.lists(st.integers(0, 6), max_size=4))
    like = draw(st.booleans())

    def mutate(d: StateDict) -> StateDict:
        value = _retyped(d[key], d[key].dtype) if like and _plain(d.get(key)) else torch.randn(shape)
        return _replace(d, key, value)

    return mutate


@st.composite
def _rename(draw: st.DrawFn, sd: StateDict) -> Mutation:
    index = draw(st.integers(0, 10_000))
    how = draw(st.sampled_from(["number", "other-key", "prefix", "suffix", "non-string"]))
    number, which = draw(st.sampled_from(NUMBERS)), draw(st.integers(0, 3))
    other = draw(st.sampled_from(ALL_SEED_KEYS))

    def new_name(key: str) -> Any:
        if how == "number":
            spans = [m.span() for m in re.finditer(r"\d+", key)]
            if not spans:
                return key + f".{number}"
            start, end = spans[which % len(spans)]
            return key[:start] + str(number) + key[end:]
        if how == "other-key":
            return other
        if how == "prefix":
            return "module." + key
        if how == "suffix":
            return key + "_orig"
        return number

    def mutate(d: StateDict) -> StateDict:
        if not d:
            return d
        key = _pick(d, index)
        new = new_name(key) if isinstance(key, str) else f"{key}"
        out = {k: v for k, v in d.items() if k != key}
        out[new] = d[key]
        return out

    return mutate


def _with_dim(shape: list[int], i: int, size: int) -> list[int]:
    """`shape` with dimension i set to `size` (a 1-D shape [size] for a 0-D tensor)."""
    return [*shape[:i], size, *shape[i + 1 :]] if shape else [size]


@st.composite
def _reshape(draw: st.DrawFn, sd: StateDict) -> Mutation:
    index = draw(st.integers(0, 10_000))
    how = draw(st.sampled_from(["zero", "flatten", "scalar", "drop-dim", "add-dim", "off-by-one", "huge", "swap"]))
    dim, delta, huge = draw(st.integers(0, 3)), draw(st.sampled_from([-1, 1, 2])), draw(st.sampled_from(HUGE))
    other_index = draw(st.integers(0, 10_000))

    def mutate(d: StateDict) -> StateDict:
        tensors = [k for k, v in d.items() if _plain(v)]
        if not tensors:
            return d
        key = tensors[index % len(tensors)]
        t: torch.Tensor = d[key]
        shape = list(t.shape)
        i = dim % max(len(shape), 1)
        if how == "huge" and math.prod(_with_dim(shape, i, huge)) >= 2**62:
            return d  # a second huge dimension would overflow torch's element count
        if how == "zero":
            new = torch.zeros(_with_dim(shape, i, 0), dtype=t.dtype)
        elif how == "flatten":
            new = _reshaped(t, [t.numel()])
        elif how == "scalar":
            new = _reshaped(t.flatten()[:1] if t.numel() <= BIG else t, []) if t.numel() else torch.tensor(1.0)
        elif how == "drop-dim":
            new = _reshaped(t, [shape[0] * shape[1], *shape[2:]]) if t.ndim >= 2 else t.sum()
        elif how == "add-dim":
            new = t.unsqueeze(i)
        elif how == "off-by-one":
            new = _fresh(_with_dim(shape, i, max(shape[i] + delta, 0) if shape else 1), t.dtype)
        elif how == "huge":  # a huge declared size on a zero-stride view: no memory behind it
            new = torch.zeros((), dtype=t.dtype).expand(_with_dim(shape, i, huge))
        else:  # swap two tensors' values
            other = tensors[other_index % len(tensors)]
            return {**d, key: d[other], other: t}
        return _replace(d, key, new)

    return mutate


@st.composite
def _dtype(draw: st.DrawFn, sd: StateDict) -> Mutation:
    index = draw(st.integers(0, 10_000))
    dtype = draw(st.sampled_from(WEIGHT_DTYPES))

    return _on_one_tensor(index, lambda t: _retyped(t, dtype))


@st.composite
def _cast_all(draw: st.DrawFn, sd: StateDict) -> Mutation:
    """A whole-dict cast, as hosts and converters do (MetaUpsample included or not)."""
    dtype = draw(st.sampled_from([torch.float16, torch.bfloat16, torch.float64, torch.float32]))
    meta_too = draw(st.booleans())

    def mutate(d: StateDict) -> StateDict:
        return {
            k: _retyped(v, dtype) if _plain(v) and (meta_too or k != "upsampler.MetaUpsample") else v
            for k, v in d.items()
        }

    return mutate


@st.composite
def _meta(draw: st.DrawFn, sd: StateDict) -> Mutation:
    dtype = draw(st.sampled_from(META_DTYPES))
    edits = draw(st.lists(st.tuples(st.integers(0, 6), st.sampled_from(META_VALUES)), min_size=1, max_size=3))

    def mutate(d: StateDict) -> StateDict:
        meta = d.get("upsampler.MetaUpsample")
        if not isinstance(meta, torch.Tensor) or not _plain(meta) or meta.shape != (7,):
            meta = torch.tensor([3, 2, 2, 16, 3, 8, 4])
        values = meta.double()
        for i, v in edits:
            values[i] = v
        if not dtype.is_floating_point:  # an integer dtype cannot hold NaN or fractions: wrap as a cast would
            values = torch.nan_to_num(values, nan=0.0, posinf=2.0**40, neginf=-(2.0**40)).floor()
        return _replace(d, "upsampler.MetaUpsample", values.to(dtype))

    return mutate


@st.composite
def _non_finite(draw: st.DrawFn, sd: StateDict) -> Mutation:
    index = draw(st.integers(0, 10_000))
    value = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    where = draw(st.integers(0, 10_000))

    def mutate(d: StateDict) -> StateDict:
        floats = [
            k
            for k, v in d.items()
            if _plain(v) and v.is_floating_point() and 0 < v.numel() <= BIG and k != "upsampler.MetaUpsample"
        ]
        if not floats:
            return d
        key = floats[index % len(floats)]
        t = d[key].clone()
        t.view(-1)[where % t.numel()] = value
        return _replace(d, key, t)

    return mutate


@st.composite
def _non_tensor(draw: st.DrawFn, sd: StateDict) -> Mutation:
    index = draw(st.integers(0, 10_000))
    value = draw(st.sampled_from(NON_TENSORS))
    return lambda d: _replace(d, _pick(d, index), value) if d else d


def _odd_kind(t: torch.Tensor, kind: str) -> torch.Tensor:
    """`t` as a tensor without plain dense data: sparse, on the meta device, or nested."""
    if kind == "meta":
        return torch.empty(t.shape, dtype=t.dtype, device="meta")
    if kind == "nested":
        return torch.nested.nested_tensor([torch.zeros(2, 3), torch.zeros(4, 3)])
    if t.numel() > BIG or t.numel() == 0 or t.ndim == 0:
        return torch.zeros(1, 2).to_sparse()
    if t.is_floating_point() and t.element_size() == 1:
        t = t.float()  # torch has no sparse float8
    return t.to_sparse() if kind == "sparse_coo" else t.reshape(t.shape[0], -1).to_sparse_csr()


@st.composite
def _odd_tensor(draw: st.DrawFn, sd: StateDict) -> Mutation:
    index = draw(st.integers(0, 10_000))
    kind = draw(st.sampled_from(["meta", "nested", "sparse_coo", "sparse_csr"]))

    return _on_one_tensor(index, lambda t: _odd_kind(t, kind))


@st.composite
def _merge_foreign(draw: st.DrawFn, sd: StateDict) -> Mutation:
    name = draw(st.sampled_from(sorted(FOREIGN)))
    replace_all = draw(st.booleans())
    return lambda d: dict(FOREIGN[name]) if replace_all else {**d, **FOREIGN[name]}


@st.composite
def _subset(draw: st.DrawFn, sd: StateDict) -> Mutation:
    """Keep only some keys (the empty dict included)."""
    keep = draw(st.sets(st.integers(0, len(sd) - 1), max_size=len(sd)))
    return lambda d: {k: v for i, (k, v) in enumerate(d.items()) if i in keep}


MUTATIONS = [_delete, _add, _rename, _reshape, _dtype, _cast_all, _meta, _non_finite, _non_tensor]
RARE_MUTATIONS = [_merge_foreign, _subset, _odd_tensor]


class Mutated:
    """A mutated state dict, shown by Hypothesis as keys with dtypes and shapes (not values)."""

    def __init__(self, sd: StateDict) -> None:
        self.sd = sd

    def __repr__(self) -> str:
        def show(v: Any) -> str:
            if _plain(v):
                return f"{str(v.dtype).removeprefix('torch.')}{list(v.shape)}"
            if isinstance(v, torch.Tensor):
                return "nested" if v.is_nested else f"{v.layout if not v.is_meta else 'meta'} {list(v.shape)}"
            return type(v).__name__

        return "{" + ", ".join(f"{k!r}: {show(v)}" for k, v in self.sd.items()) + "}"


@st.composite
def mutated(draw: st.DrawFn, name: str) -> Mutated:
    sd = SEEDS[name]
    count = draw(st.integers(1, 3))
    mutations = [
        draw(
            st.one_of(*[m(sd) for m in MUTATIONS])
            if draw(st.integers(0, 9))
            else st.one_of(*[m(sd) for m in RARE_MUTATIONS])
        )
        for _ in range(count)
    ]
    out = dict(sd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "casting complex values to real discards the imaginary part"
        for mutate in mutations:
            out = mutate(out)
    return Mutated(out)


# --- entry points ----------------------------------------------------------------------
def _only_ours() -> ArchRegistry:
    registry = ArchRegistry()
    install(registry)
    return registry


REGISTRY = _only_ours()
ENTRY_POINTS: dict[str, Callable[[StateDict], Any]] = {
    "FDATArch.load": FDATArch().load,
    "registry.load": REGISTRY.load,
    "ModelLoader.load_from_state_dict": ModelLoader(registry=REGISTRY).load_from_state_dict,
    "load_model": spandrel_fdat.load_model,
}


def _as_detected(entry: str, sd: StateDict) -> StateDict:
    """The dict the entry point detects on: all but FDATArch.load canonicalise first, as spandrel's registry does."""
    if entry != "FDATArch.load" and all(isinstance(k, str) for k in sd):
        return canonicalize_state_dict(dict(sd))
    return sd


def _check_spandrel_non_string_keys(sd: StateDict, entry: str) -> None:
    """Declined. (spandrel's registry canonicalises before any architecture sees the dict, and its prefix
    removal may call `str.startswith` on a non-string key: that AttributeError is spandrel's, not ours.)"""
    assert not is_fdat_state_dict(sd)
    with pytest.raises((UnsupportedModelError, AttributeError)) as info:
        ENTRY_POINTS[entry](sd)
    if info.errisinstance(AttributeError):
        assert Path(info.traceback[-1].path).name == "canonicalize.py", info.traceback[-1]


def _first_non_finite(model: torch.nn.Module) -> str | None:
    for key, value in model.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return key
    return None


def check_outcome(sd: StateDict, entry: str, height: int, width: int) -> None:
    """The guarantee: declined, or loaded and runs, or one FDATCheckpointError naming the key."""
    if entry in ("registry.load", "ModelLoader.load_from_state_dict") and not all(isinstance(k, str) for k in sd):
        return _check_spandrel_non_string_keys(sd, entry)
    detected = is_fdat_state_dict(_as_detected(entry, sd))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            desc = ENTRY_POINTS[entry](sd)
        except UnsupportedModelError:
            assert entry != "FDATArch.load", "FDATArch.load raised UnsupportedModelError"
            assert not detected, "detected, then declined by the registry"
            return
        except FDATCheckpointError as err:
            assert isinstance(err, ValueError) and not isinstance(err, LEAKED)
            assert detected or entry == "FDATArch.load", f"not detected, yet refused by {entry}: {err}"
            message = str(err)
            assert message.startswith("FDAT checkpoint: "), message
            assert "\n" not in message and message == message.strip(), repr(message)
            if detected:
                assert err.key is not None and err.key in message, message
                # the key is in the dict, or its module is (a tensor of it missing), or it is called missing
                module = err.key.rsplit(".", 1)[0] + "."
                named = err.key in sd or any(isinstance(k, str) and k.startswith(module) for k in sd)
                assert named or "missing" in message, f"{err.key!r} is in no module of the dict: {message}"
                assert re.search(r"\bexpected\b.*\bfound\b", message) or "missing" in message, message
            return
    assert detected, f"{entry} loaded a dict that detection declines"
    assert isinstance(desc, ImageModelDescriptor)
    model = desc.model
    assert isinstance(model, FDAT)
    assert set(model.state_dict()) == set(_as_detected(entry, sd))

    non_finite = [w for w in caught if issubclass(w.category, FDATNonFiniteWarning)]
    first = _first_non_finite(model)
    if first is None:
        assert not non_finite, [str(w.message) for w in non_finite]
    else:
        assert len(non_finite) == 1 and first in str(non_finite[0].message), (first, non_finite)
    if any(issubclass(w.category, FDATScaleWarning) for w in caught):
        assert "scale-guessed" in desc.tags

    x = torch.rand(1, desc.input_channels, height, width)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, desc.output_channels, height * desc.scale, width * desc.scale)


@pytest.mark.parametrize("name", SEED_NAMES)
@FUZZ_SETTINGS
@given(data=st.data())
@_seeded
def test_fuzz_mutated_checkpoint(name: str, data: st.DataObject) -> None:
    sd = data.draw(mutated(name), label="state dict").sd
    entry = data.draw(st.sampled_from(sorted(ENTRY_POINTS)), label="entry point")
    height = data.draw(st.integers(1, 9), label="height")
    width = data.draw(st.integers(1, 9), label="width")
    check_outcome(sd, entry, height, width)


@pytest.mark.parametrize("name", SEED_NAMES)
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_unmutated_seed_loads(name: str, entry: str) -> None:
    """The control: every seed is detected and loads through every entry point."""
    sd = SEEDS[name]
    assert is_fdat_state_dict(sd)
    check_outcome(dict(sd), entry, 5, 4)


# --- regressions: the bugs this fuzzer found, one test each -----------------------------------
def _refused(sd: StateDict, key: str, *, entry: str = "FDATArch.load") -> FDATCheckpointError:
    """`entry` refuses `sd` with one FDATCheckpointError naming `key`, before any network is built."""
    with pytest.raises(FDATCheckpointError) as info:
        ENTRY_POINTS[entry](sd)
    assert info.value.key == key, str(info.value)
    assert key in str(info.value) and "\n" not in str(info.value)
    return info.value


@pytest.fixture
def no_network_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a network fails the test: the refusal must come before anything is allocated."""

    def built(*_: Any, **__: Any) -> None:
        raise AssertionError("a network was built")

    monkeypatch.setattr(FDAT, "from_config", built)


def test_regression_non_string_key(no_network_built: None) -> None:
    """Was a TypeError from the key grammar's regex (`_count`): now named, and declined everywhere."""
    sd = {**SEEDS["uni_pixelshuffle_x4"], 0: torch.zeros(3)}
    assert not is_fdat_state_dict(sd)
    err = _refused(sd, "0")
    assert "expected a string key, found int" in str(err)
    only_keys: list[dict[Any, Any]] = [{0: torch.zeros(3)}, {("conv_after", "weight"): torch.zeros(3)}]
    for only_key in only_keys:
        with pytest.raises(UnsupportedModelError):  # was an AttributeError from spandrel's prefix removal
            spandrel_fdat.load_model(only_key)


def test_regression_huge_declared_input_channels_refused_before_allocating(no_network_built: None) -> None:
    """conv_first.weight declaring 2**24 input channels on a zero-stride view (a few bytes of memory) was
    consistent with everything else, so loading built a 9.6 GB network (an OOM kill in CI)."""
    sd = dict(SEEDS["uni_transpose_conv_x4"])
    sd["conv_first.weight"] = torch.zeros(()).expand(16, 2**24, 3, 3)
    assert is_fdat_state_dict(sd)
    err = _refused(sd, "conv_first.weight")
    assert str(inference.MAX_PARAMETERS) in str(err)


def test_regression_huge_consistent_network_refused_before_allocating(no_network_built: None) -> None:
    """A whole checkpoint of zero-stride views, every shape consistent, declaring E = 16384 (9e9 weights)."""
    config = FDATConfig(
        embed_dim=2**14, num_heads=2, window_size=4, layout="lhan", upsampler_type="pixelshuffle", scale=2
    )
    sd = {key: torch.zeros(()).expand(shape) for key, shape in expected_shapes(config).items()}
    assert is_fdat_state_dict(sd)
    largest = max(sd, key=lambda k: sd[k].numel())
    for entry in ENTRY_POINTS:
        _refused(sd, largest, entry=entry)


def test_regression_gap_in_pixelshuffle_conv_indices() -> None:
    """upsampler.0 deleted from a UniUpsample pixelshuffle (convs at 2, 4, 6): was KeyError: 0."""
    sd = {k: v for k, v in SEEDS["uni_unshuffle_gray_x1"].items() if not k.startswith("upsampler.0.")}
    assert is_fdat_state_dict(sd)
    err = _refused(sd, "upsampler.0.weight")
    assert "missing" in str(err)


@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        ("standalone_pixelshuffle_x4", "upsampler.body.5.weight", f"upsampler.body.{10**20}.weight"),
        ("standalone_pixelshuffle_x2", "upsampler.body.3.weight", f"upsampler.body.{2**31}.weight"),
        ("uni_nearest_conv_x4", "upsampler.8.weight", f"upsampler.{10**20}.weight"),
        ("uni_pa_up_x2", "upsampler.4.weight", f"upsampler.{2**31}.weight"),
    ],
)
def test_regression_huge_key_index_refused_without_computing_its_scale(name: str, old: str, new: str) -> None:
    """A conv renamed to index 10**20: the staged upsamplers' scale 2**(index/2) was computed
    (a MemoryError or a hang, then a loop over 2**31 stages)."""
    sd = dict(SEEDS[name])
    sd[new] = sd.pop(old)
    assert is_fdat_state_dict(sd)
    with pytest.raises(FDATCheckpointError) as info:
        FDATArch().load(sd)
    assert info.value.key is not None and info.value.key.startswith("upsampler."), str(info.value)


def test_regression_absurd_meta_scale_refused(no_network_built: None) -> None:
    """LDA's scale is in no weight, only MetaUpsample: a byte of 255 loaded as x255, and a 9x9 forward
    pass took 15 s and 6.4 GB. Scales above MAX_SCALE are refused, naming where they were read."""
    sd = dict(SEEDS["uni_lda_mid_ne_e_x2"])
    meta = sd["upsampler.MetaUpsample"].clone()
    meta[2] = 255
    err = _refused({**sd, "upsampler.MetaUpsample": meta}, "upsampler.MetaUpsample")
    assert f"at most x{inference.MAX_SCALE}, found x255" in str(err)
    # the same bound where the scale is read from a weight's rows: PixelShuffleDirect x17
    direct = dict(SEEDS["uni_pixelshuffledirect_x3"])
    direct["upsampler.0.weight"] = torch.zeros(3 * 17 * 17, 16, 3, 3)
    direct["upsampler.0.bias"] = torch.zeros(3 * 17 * 17)
    _refused(direct, "upsampler.0.weight")


@pytest.mark.parametrize("scale", [0, -1, 17, 10**9, True, 2.0, "4"])
def test_scale_hint_is_validated(scale: Any) -> None:
    with pytest.raises(ValueError, match="scale must be an integer from 1 to 16"):
        FDATArch().load_with(SEEDS["lhan_nearest_conv_x2"], scale=scale)


@pytest.mark.parametrize("kind", ["meta", "nested", "sparse_coo", "sparse_csr"])
def test_regression_tensors_without_dense_data(kind: str) -> None:
    """Sparse and meta tensors passed every shape check and failed in load_state_dict (a RuntimeError);
    a nested attn.bias crashed detection itself."""
    sd = dict(SEEDS["uni_pixelshuffle_x3"])
    key = "groups.0.blocks.0.attn.bias" if kind == "nested" else "groups.0.conv.weight"
    sd[key] = _odd_kind(sd[key], kind)
    assert is_fdat_state_dict(sd)  # no crash
    err = _refused(sd, key)
    assert "expected a dense tensor with data" in str(err)


@pytest.mark.parametrize(
    ("value", "where"),
    [(math.nan, "groups.0.blocks.1.ffn.fc2.weight"), (-math.inf, "conv_first.bias"), (1e300, "upsampler.0.weight")],
)
def test_regression_non_finite_weights_load_with_a_warning(value: float, where: str) -> None:
    """Non-finite weights loaded silently (every output NaN). Now: loaded, with a warning naming the
    first such key; float64 weights beyond float32's range count, since they load as inf."""
    sd = {k: v.double() if k == where else v for k, v in SEEDS["uni_pixelshuffle_x3"].items()}
    sd[where].view(-1)[1] = value
    sd["conv_after.weight"] = sd["conv_after.weight"].clone()
    sd["conv_after.weight"][0, 0, 0, 0] = math.nan  # a second one, reported as "1 more"
    with pytest.warns(FDATNonFiniteWarning) as caught:
        desc = FDATArch().load(sd)
    assert len(caught) == 1
    message = str(caught[0].message)
    first = next(k for k in desc.model.state_dict() if k in (where, "conv_after.weight"))
    assert message.startswith(f"FDAT checkpoint: {first}: expected finite weights, found 1 NaN/inf")
    assert "1 more" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FDATArch().load(SEEDS["uni_pixelshuffle_x3"])  # clean weights: no warning


BROKEN_MESSAGES = [
    # (seed, mutation, key): messages that did not say what was expected and what was found
    ("uni_pixelshuffle_x3", {"conv_first.weight": torch.zeros(0, 3, 3, 3)}, "conv_first.weight"),
    (
        "uni_pixelshuffle_x3",
        {"upsampler.MetaUpsample": torch.tensor([3, 2, 3, 16, 3, 8, -1])},
        "upsampler.MetaUpsample",
    ),
    ("uni_pixelshuffle_x3", {"upsampler.MetaUpsample": torch.tensor([9, 2, 3, 16, 3, 8, 4])}, "upsampler.MetaUpsample"),
    ("uni_pixelshuffle_x3", {"upsampler.body.0.weight": torch.zeros(3, 16, 3, 3)}, "upsampler.body.0.weight"),
    ("uni_pixelshuffle_x3", {"groups.0.blocks.0.attn.temp": torch.zeros(2, 1, 1)}, "groups.0.blocks.0.attn"),
    ("uni_pixelshuffle_x3", {"groups.0.blocks.0.attn.qkv.bias": torch.zeros(48)}, None),  # declined: no grammar key
    ("lhan_transpose_conv_x2", {"conv_first.1.weight": torch.zeros(16, 12, 3, 3)}, "conv_first.1.weight"),
]


@pytest.mark.parametrize(("name", "changes", "key"), BROKEN_MESSAGES)
def test_regression_messages_say_expected_and_found(name: str, changes: StateDict, key: str | None) -> None:
    sd = {**SEEDS[name], **changes}
    if key is None:
        assert not is_fdat_state_dict(sd)
        return
    assert is_fdat_state_dict(sd)
    with pytest.raises(FDATCheckpointError) as info:
        FDATArch().load(sd)
    message = str(info.value)
    assert info.value.key is not None and info.value.key.startswith(key), message
    assert re.search(r"\bexpected\b.*\bfound\b", message), message
