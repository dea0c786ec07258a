"""The spandrel side: the descriptor a host sees, and registration in spandrel registries."""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import pytest
import safetensors.torch
import torch
from spandrel import (
    MAIN_REGISTRY,
    Architecture,
    ArchRegistry,
    ArchSupport,
    DuplicateArchitectureError,
    ImageModelDescriptor,
    ModelTiling,
    UnsupportedModelError,
)
from spandrel.architectures.ESRGAN import ESRGAN

import spandrel_fdat
from spandrel_fdat import (
    ARCH_ID,
    REGISTRY,
    SCALE_ENV,
    FDATArch,
    FDATScaleWarning,
    infer_config,
    install,
    load_model,
)
from tests.helpers import SMALL, build, builtin_fdat, image, reference_dysample_on_cpu

StateDict = dict[str, Any]


def real(seed: int = 0, **kw: Any) -> StateDict:
    return dict(build(seed, **{**SMALL, **kw}).state_dict())


def load(sd: StateDict) -> ImageModelDescriptor[Any]:
    return FDATArch().load(sd)


def embed_dim_of(sd: StateDict) -> int:
    return int(sd.get("conv_first.weight", sd.get("conv_first.1.weight")).shape[0])


def main_copy() -> ArchRegistry:
    """spandrel's main registry as a host has it (without ours, whatever other tests installed)."""
    reg = MAIN_REGISTRY.copy()
    if ARCH_ID in reg:
        fresh = ArchRegistry()
        fresh.add(*[a for a in reg.architectures("insertion") if a.architecture.id != ARCH_ID])
        return fresh
    return reg


def psnr(out: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR over the reference's dynamic range (random weights do not map into [0, 1])."""
    mse = (out.double() - ref.double()).pow(2).mean().item()
    peak = (ref.max() - ref.min()).item()
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


# --- scale and purpose -----------------------------------------------------------
def test_conv_mode_reports_its_true_scale() -> None:
    """spandrel's own FDAT class stores the requested scale (4) in conv mode; the network keeps the size."""
    upstream = builtin_fdat().FDAT(**SMALL, upsampler_type="conv", scale=4)
    sd = dict(upstream.state_dict())
    assert sd["upsampler.MetaUpsample"][2].item() == 4
    x = image(3, 7, 5)
    upstream_out = upstream.eval()(x)
    assert upstream_out.shape[-2:] == x.shape[-2:]  # what "true scale 1" means

    d = load(sd)
    assert d.scale == 1
    assert d.purpose == "Restoration"
    assert d(x).shape[-2:] == x.shape[-2:]
    assert torch.allclose(d.model(x), upstream_out, atol=1e-5)
    assert infer_config(sd).meta_agrees is False  # stored 4, is 1
    # spandrel 0.4.2's own loader believes the stored scale
    assert builtin_fdat().FDATArch().load(sd).scale == 4


@pytest.mark.parametrize(
    ("kw", "purpose"),
    [
        (dict(upsampler_type="pixelshuffle", scale=2), "SR"),
        (dict(upsampler_type="transpose+conv", scale=3), "SR"),
        (dict(upsampler_type="pixelshuffledirect", scale=1), "Restoration"),
        (dict(scale=1, unshuffle_mod=True), "Restoration"),
        (dict(scale=2, unshuffle_mod=True), "SR"),
        (dict(layout="standalone", upsampler_type="pixelshuffle", scale=1), "Restoration"),
    ],
    ids=lambda v: str(v) if isinstance(v, str) else "-".join(f"{k}={x}" for k, x in v.items()),
)
def test_scale_and_purpose(kw: dict[str, Any], purpose: str) -> None:
    d = load(real(**kw))
    x = image(3, 6, 5)
    out = d(x)
    # the scale is what the network does to an image
    assert out.shape[-2:] == (6 * d.scale, 5 * d.scale)
    assert d.scale == kw["scale"]
    assert d.purpose == purpose


# --- channels ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw",
    [
        dict(num_in_ch=1, num_out_ch=1, scale=2),
        dict(num_in_ch=3, num_out_ch=3, scale=2),
        dict(num_in_ch=4, num_out_ch=4, scale=2, upsampler_type="pixelshuffle"),
        dict(num_in_ch=1, num_out_ch=3, scale=2, upsampler_type="nearest+conv"),
        dict(num_in_ch=4, num_out_ch=3, scale=3, upsampler_type="pixelshuffledirect"),
        dict(num_in_ch=3, num_out_ch=1, scale=2, upsampler_type="dysample"),
        dict(num_in_ch=1, num_out_ch=3, scale=2, unshuffle_mod=True),
        dict(num_in_ch=4, num_out_ch=4, scale=1, unshuffle_mod=True),
        dict(num_in_ch=1, num_out_ch=1, scale=3, layout="standalone", upsampler_type="pixelshuffle"),
        dict(num_in_ch=4, num_out_ch=4, scale=2, layout="lhan", upsampler_type="transpose+conv"),
    ],
    ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()),
)
def test_channels(kw: dict[str, Any]) -> None:
    d = load(real(**kw))
    assert (d.input_channels, d.output_channels) == (kw["num_in_ch"], kw["num_out_ch"])
    out = d(image(kw["num_in_ch"], 5, 6))
    assert out.shape == (1, kw["num_out_ch"], 5 * kw["scale"], 6 * kw["scale"])


# --- tags ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_x2() -> StateDict:
    return dict(spandrel_fdat.fdat_tiny(scale=2).state_dict())


def test_preset_tags(tiny_x2: StateDict) -> None:
    d = load(tiny_x2)
    e = embed_dim_of(tiny_x2)
    assert e == 96
    assert set(d.tags) == {"tiny", f"{e}dim", "transpose+conv"}
    assert d.architecture.name == "FDAT"


def test_preset_tag_needs_an_exact_match() -> None:
    # a changed hyperparameter: no preset
    d = load(dict(spandrel_fdat.fdat_tiny(scale=2, ffn_expansion_ratio=2.0).state_dict()))
    assert set(d.tags) == {"96dim", "transpose+conv"}
    # mid_dim visible in the weights (pixelshuffle): 32 is not tiny's 64
    d = load(dict(spandrel_fdat.fdat_tiny(scale=2, upsampler_type="pixelshuffle", mid_dim=32).state_dict()))
    assert "tiny" not in d.tags
    d = load(dict(spandrel_fdat.fdat_tiny(scale=2, upsampler_type="pixelshuffle").state_dict()))
    assert set(d.tags) == {"tiny", "96dim", "pixelshuffle"}


def test_medium_aligned_tag_which_spandrel_lacks() -> None:
    sd = dict(spandrel_fdat.fdat_medium_aligned(scale=4, upsampler_type="pixelshuffle").state_dict())
    e = embed_dim_of(sd)
    d = load(sd)
    assert set(d.tags) == {"medium_aligned", f"{e}dim", "pixelshuffle"}
    builtin = builtin_fdat().FDATArch().load(sd)
    assert "medium_aligned" not in builtin.tags
    assert not {"tiny", "light", "medium", "large", "xl"} & set(builtin.tags)


@pytest.mark.parametrize(
    ("kw", "extra"),
    [
        (dict(upsampler_type="dysample", scale=2), set()),
        (dict(upsampler_type="lda", scale=2), set()),
        (dict(upsampler_type="pa_up", scale=3), set()),
        (dict(scale=2, unshuffle_mod=True), {"unshuffle"}),
        (dict(scale=1, unshuffle_mod=True), {"unshuffle"}),
        (dict(layout="lhan", upsampler_type="pixelshuffle", scale=4), {"lhan"}),
        (dict(layout="lhan", upsampler_type="transpose+conv", scale=3), {"lhan"}),
        (dict(layout="standalone", upsampler_type="pixelshuffle", scale=2), {"standalone"}),
        (dict(layout="standalone", upsampler_type="transpose+conv", scale=4), {"standalone"}),
    ],
    ids=lambda v: ",".join(sorted(v)) if isinstance(v, set) else "-".join(f"{k}={x}" for k, x in v.items()),
)
def test_layout_and_upsampler_tags(kw: dict[str, Any], extra: set[str]) -> None:
    kw.setdefault("upsampler_type", "transpose+conv")
    sd = real(**kw)
    d = load(sd)
    assert set(d.tags) == {f"{embed_dim_of(sd)}dim", kw["upsampler_type"], *extra}


# --- the scale LHAN nearest_conv does not store -------------------------------------
@pytest.fixture(scope="module")
def lhan_nearest() -> StateDict:
    return real(layout="lhan", upsampler_type="nearest+conv", scale=3)


def test_lhan_nearest_stores_no_scale() -> None:
    """The premise: x2 and x3 checkpoints have identical keys and shapes (field guide §2b)."""
    x2 = real(layout="lhan", upsampler_type="nearest+conv", scale=2)
    x3 = real(layout="lhan", upsampler_type="nearest+conv", scale=3)
    assert {k: v.shape for k, v in x2.items()} == {k: v.shape for k, v in x3.items()}


def test_scale_guessed_warns_and_tags(lhan_nearest: StateDict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCALE_ENV, raising=False)
    with pytest.warns(FDATScaleWarning) as record:
        d = load(lhan_nearest)
    assert len(record) == 1
    message = str(record[0].message)
    assert f"x{d.scale}" in message  # which scale was used
    assert f"{SCALE_ENV}=N" in message and "load_model" not in message  # spandrel's path: a host's remedy
    with pytest.warns(FDATScaleWarning, match=r"Choose with spandrel_fdat\.load_model\(path, scale=N\)\."):
        load_model(lhan_nearest)  # Python's remedy
    assert "scale-guessed" in d.tags and "lhan" in d.tags
    assert d(image(3, 4, 5)).shape[-2:] == (4 * d.scale, 5 * d.scale)


def test_scale_hint_from_load_model(lhan_nearest: StateDict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCALE_ENV, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = load_model(lhan_nearest, scale=3)
    assert d.scale == 3
    assert "scale-guessed" not in d.tags
    assert d(image(3, 4, 5)).shape[-2:] == (12, 15)


def test_scale_hint_from_environment(lhan_nearest: StateDict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SCALE_ENV, "3")
    reg = ArchRegistry()
    install(reg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for d in (load(lhan_nearest), reg.load(lhan_nearest)):
            assert d.scale == 3
            assert "scale-guessed" not in d.tags
            assert d(image(3, 4, 5)).shape[-2:] == (12, 15)


def test_scale_hint_never_overrides_a_stored_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    sd = real(upsampler_type="pixelshuffle", scale=2)
    monkeypatch.setenv(SCALE_ENV, "3")
    assert load(sd).scale == 2
    monkeypatch.delenv(SCALE_ENV)
    assert load_model(sd, scale=4).scale == 2


@pytest.mark.parametrize("raw", ["0", "-2", "x3", "2.5"])
def test_bad_scale_environment(raw: str, lhan_nearest: StateDict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SCALE_ENV, raw)
    with pytest.raises(ValueError, match=SCALE_ENV):
        load(lhan_nearest)


# --- tiling and sizes ----------------------------------------------------------------------
SIZE_MODELS = {
    "plain-x2": dict(upsampler_type="transpose+conv", scale=2),
    "unshuffle-x1": dict(scale=1, unshuffle_mod=True),
    "unshuffle-x2": dict(scale=2, unshuffle_mod=True),
}


@pytest.mark.parametrize("name", sorted(SIZE_MODELS))
def test_any_size_runs(name: str) -> None:
    d = load(real(**SIZE_MODELS[name]))
    assert d.size_requirements.none  # nothing for a host to pad: the network pads itself
    assert d.tiling == ModelTiling.DISCOURAGED
    s = d.scale
    for h, w in ((1, 1), (1, 17), (5, 3), (13, 11)):
        x = image(3, h, w, seed=h * w)
        out = d(x)
        assert out.shape == (1, 3, h * s, w * s), (h, w)
        assert bool(torch.isfinite(d.model(x)).all())


def test_tiling_discouraged_because_tiles_change_the_result() -> None:
    """Channel attention and the AIM channel gate see the whole image: a pixel far from a tile seam
    (beyond every conv and window) still changes when the rest of the image is cut away."""
    d = load(real(upsampler_type="pixelshuffle", scale=2))
    x = image(3, 16, 32, seed=5)
    whole = d.model(x)
    tile = d.model(x[..., :16])
    corner = (slice(None), slice(None), slice(0, 4), slice(0, 4))  # 28+ pixels from the seam at x = 16
    diff = (whole[corner] - tile[corner]).abs().max().item()
    assert diff > 1e-3
    assert d.tiling == ModelTiling.DISCOURAGED


# --- the caller's state dict ---------------------------------------------------------------
def _snapshot(sd: StateDict) -> list[tuple[str, int, torch.dtype, torch.Tensor]]:
    return [(k, id(v), v.dtype, v.clone()) for k, v in sd.items()]


def _unchanged(sd: StateDict, snapshot: list[tuple[str, int, torch.dtype, torch.Tensor]]) -> bool:
    now = list(sd.items())
    return len(now) == len(snapshot) and all(
        k == k0 and id(v) == i0 and v.dtype == dt0 and torch.equal(v, v0)
        for (k, v), (k0, i0, dt0, v0) in zip(now, snapshot, strict=True)
    )


@pytest.mark.parametrize("meta_dtype", [torch.uint8, torch.float32, torch.float16])
def test_callers_state_dict_untouched(meta_dtype: torch.dtype) -> None:
    sd = real(upsampler_type="nearest+conv", scale=3)
    sd["upsampler.MetaUpsample"] = sd["upsampler.MetaUpsample"].to(meta_dtype)
    snapshot = _snapshot(sd)
    reg = ArchRegistry()
    install(reg)
    for loader in (load, reg.load, load_model):
        d = loader(sd)
        assert _unchanged(sd, snapshot), loader
        # the model owns its weights: changing them does not reach the caller's tensors
        with torch.no_grad():
            for p in d.model.parameters():
                p.add_(1.0)
        assert _unchanged(sd, snapshot), loader
        assert d.model.state_dict()["upsampler.MetaUpsample"].dtype == torch.uint8


def test_saved_and_reloaded_descriptor_is_the_same_network() -> None:
    """chaiNNer saves `model.state_dict()` and reloads it."""
    sd = real(upsampler_type="pa_up", scale=4)
    d = load(sd)
    again = load(dict(d.model.state_dict()))
    assert (again.scale, again.tags, again.input_channels) == (d.scale, d.tags, d.input_channels)
    x = image(3, 5, 5)
    assert torch.equal(again.model(x), d.model(x))


# --- registration ------------------------------------------------------------------------
def test_install_twice() -> None:
    reg = ArchRegistry()
    first = install(reg)
    assert [a.architecture.id for a in first] == [ARCH_ID]
    assert isinstance(first[0].architecture, FDATArch)
    assert install(reg) == []
    assert len(reg) == 1
    reg2 = ArchRegistry()
    reg2.add(*REGISTRY)  # a host registered us its own way
    assert install(reg2) == []
    assert len(reg2) == 1


class _Impostor(Architecture[torch.nn.Module]):
    """Another architecture that took our id."""

    def __init__(self) -> None:
        super().__init__(id=ARCH_ID, detect=lambda sd: False)

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[torch.nn.Module]:
        raise AssertionError("never detected")


def test_install_with_our_id_taken() -> None:
    reg = ArchRegistry()
    impostor = ArchSupport.from_architecture(_Impostor())
    reg.add(impostor)
    with pytest.raises(DuplicateArchitectureError):
        install(reg)
    assert reg.architectures() == [impostor]  # unchanged by the failed install
    assert install(reg, ignore_duplicates=True) == []
    assert reg.architectures() == [impostor]
    assert reg.get(ARCH_ID) is impostor


class _Extra(Architecture[torch.nn.Module]):
    """An architecture from an extra-arches package (detects only its own marker key)."""

    def __init__(self, arch_id: str) -> None:
        super().__init__(id=arch_id, detect=lambda sd: f"{arch_id}.marker" in sd)

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[torch.nn.Module]:
        raise AssertionError("never detected")


def _extra_registry() -> ArchRegistry:
    extra = ArchRegistry()
    extra.add(*(ArchSupport.from_architecture(_Extra(i)) for i in ("ExtraA", "ExtraB")))
    return extra


def _order(reg: ArchRegistry) -> list[str]:
    return [a.architecture.id for a in reg.architectures("detection")]


@pytest.fixture(scope="module")
def builtin_detected() -> StateDict:
    """A checkpoint spandrel's built-in FDAT detects (UniUpsample, first block spatial)."""
    sd = real(upsampler_type="pixelshuffle", scale=2)
    assert builtin_fdat().FDATArch().detect(sd)
    assert main_copy().load(sd).architecture.id == "FDAT"  # without us, spandrel's own FDAT takes it
    return sd


@pytest.mark.parametrize("extras", ["none", "extras-first", "extras-after"])
def test_ours_detected_before_spandrels_fdat(extras: str, builtin_detected: StateDict) -> None:
    reg = main_copy()
    if extras == "extras-first":
        reg.add(*_extra_registry())
    reg.add(*spandrel_fdat.REGISTRY)
    if extras == "extras-after":
        reg.add(*_extra_registry())
    order = _order(reg)
    assert order.index(ARCH_ID) < order.index("FDAT")
    d = reg.load(builtin_detected)
    assert d.architecture.id == ARCH_ID and isinstance(d.architecture, FDATArch)


def test_ours_before_an_fdat_registered_later(builtin_detected: StateDict) -> None:
    """chaiNNer's spandrel 0.4.1 has no "FDAT": our `before` must still hold when one arrives later."""
    reg = ArchRegistry()
    reg.add(*[a for a in main_copy().architectures("insertion") if a.architecture.id != "FDAT"])
    assert install(reg)
    assert reg.load(builtin_detected).architecture.id == ARCH_ID
    reg.add(ArchSupport.from_architecture(builtin_fdat().FDATArch()))
    order = _order(reg)
    assert order.index(ARCH_ID) < order.index("FDAT")
    assert reg.load(builtin_detected).architecture.id == ARCH_ID


def test_install_into_main_registry_copy(builtin_detected: StateDict) -> None:
    reg = main_copy()
    assert [a.architecture.id for a in install(reg)] == [ARCH_ID]
    assert reg.load(builtin_detected).architecture.id == ARCH_ID
    assert install(reg) == []


# --- DySample on a CUDA build without a GPU ---------------------------------------------------
def test_dysample_runs_on_cpu() -> None:
    sd = real(upsampler_type="dysample", scale=2)
    x = image(3, 10, 9)
    ours = load(sd)
    out = ours(x)
    assert out.shape == (1, 3, 20, 18)
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: spandrel's own DySample does not fail here")
    builtin = builtin_fdat().FDATArch().load(sd)
    with pytest.raises(RuntimeError):
        builtin(x)
    builtin.model.eval()  # spandrel's descriptor leaves its FDAT in training mode (drop path) until called
    with reference_dysample_on_cpu():  # the same network, once its pinned-memory call is shimmed
        expected = builtin.model(x)
    assert torch.allclose(ours.model(x), expected, atol=1e-4)


# --- half precision on CPU ------------------------------------------------------------------
# Measured over 11 upsampler/layout configurations x 4 seeds at 24x24 (PSNR over the fp32
# output's range): fp16 62-80 dB, bf16 44-62 dB, bf16 ~18 dB below fp16 (3 fewer mantissa
# bits); a network with other weights scores 7-17 dB. The bounds keep ~10 dB of margin.
MIN_PSNR = {torch.float16: 50.0, torch.bfloat16: 35.0}


@pytest.mark.parametrize(
    "kw",
    [
        dict(upsampler_type="transpose+conv", scale=2),
        dict(upsampler_type="dysample", scale=4),
        dict(scale=2, unshuffle_mod=True),
    ],
    ids=["transpose-x2", "dysample-x4", "unshuffle-x2"],
)
def test_half_precision_on_cpu(kw: dict[str, Any]) -> None:
    d = load(real(seed=1, **kw))
    assert d.supports_half and d.supports_bfloat16
    x = image(3, 24, 24, seed=1)
    with torch.no_grad():
        ref = d.model(x)
        other = load(real(seed=2, **kw)).model(x)
        scores = {}
        for dtype in (torch.float16, torch.bfloat16):
            low = copy.deepcopy(d).to(dtype)  # spandrel's .to refuses dtypes a model does not support
            assert low.dtype == dtype
            out = low.model(x.to(dtype))
            assert out.dtype == dtype
            assert bool(torch.isfinite(out).all())
            scores[dtype] = psnr(out.float(), ref)
            assert scores[dtype] > MIN_PSNR[dtype], (dtype, scores[dtype])
            assert low(x.to(dtype)).shape == ref.shape  # the descriptor call too
    assert scores[torch.float16] > scores[torch.bfloat16] + 10
    assert psnr(other, ref) < min(MIN_PSNR.values()) - 10  # the metric tells networks apart


# --- load_model --------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_model_from_file(suffix: str, tmp_path: Any) -> None:
    sd = real(upsampler_type="nearest+conv", scale=3)
    path = tmp_path / f"model{suffix}"
    if suffix == ".pth":
        torch.save({"params_ema": sd}, path)  # wrapped, as trainers save
    else:
        safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    d = load_model(path)
    assert isinstance(d.architecture, FDATArch)
    direct = load(sd)
    assert (d.scale, d.tags, d.input_channels, d.output_channels) == (
        direct.scale,
        direct.tags,
        direct.input_channels,
        direct.output_channels,
    )
    x = image(3, 6, 7)
    assert torch.equal(d.model(x), direct.model(x))
    assert load_model(str(path)).scale == 3


def test_load_model_declines_other_checkpoints(tmp_path: Any) -> None:
    esrgan = dict(ESRGAN(num_filters=8, num_blocks=1, scale=2).state_dict())
    with pytest.raises(UnsupportedModelError):
        load_model(esrgan)
    path = tmp_path / "esrgan.pth"
    torch.save(esrgan, path)
    with pytest.raises(UnsupportedModelError):
        load_model(path)
    with pytest.raises(UnsupportedModelError):
        load_model({**real(), "flow_net.conv1.weight": torch.zeros(1)})
