"""spandrel 0.4.2's own FDAT is the oracle: its checkpoints load here and compute the same images.

The case list is spandrel's upstream FDAT test list (27 configurations, spandrel's
default body) plus the modes and corners it does not cover (pa_up, lda, dysample x3,
unshuffle), the latter on a small body. For every case the checkpoint is written by
spandrel's class with randomised weights, then read back through spandrel's
ModelLoader with our architecture installed.

Outputs are compared in float64: both implementations then agree to ~1e-13, so
rtol = atol = 1e-5 is a real test of the arithmetic rather than of float32
rounding (outputs of a randomised default body reach |y| ~ 30, where float32
rounding of two differently ordered computations alone exceeds 1e-5, and DySample's
and LDA's sampling offsets amplify it). A float32 run is checked too, with a
tolerance relative to the output's magnitude.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import spandrel
import torch
from safetensors.torch import save_file

import spandrel_fdat
from spandrel_fdat import FDAT, FDATArch, FDATConfig, infer_config
from tests.helpers import SMALL, builtin_fdat, image, randomize_, reference_dysample_on_cpu

RefFDAT = builtin_fdat().FDAT  # spandrel 0.4.2's own FDAT: the oracle (the module skips on 0.4.1)
META = "upsampler.MetaUpsample"

# spandrel's LDA_AQU calls torch.meshgrid without `indexing`
pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning")

# spandrel 0.4.2's tests/test_FDAT.py list, as keyword arguments of its FDAT class.
UPSTREAM: list[dict[str, Any]] = [
    dict(upsampler_type="pixelshuffle"),
    dict(upsampler_type="transpose+conv"),
    dict(upsampler_type="nearest+conv"),
    dict(upsampler_type="dysample"),
    dict(upsampler_type="pixelshuffledirect"),
    dict(upsampler_type="pixelshuffle", scale=1),
    dict(upsampler_type="pixelshuffle", scale=2),
    dict(upsampler_type="pixelshuffle", scale=3),
    dict(upsampler_type="pixelshuffle", scale=8),
    dict(upsampler_type="pixelshuffle", scale=1, num_in_ch=1, num_out_ch=1),
    dict(upsampler_type="transpose+conv", scale=2),
    dict(upsampler_type="transpose+conv", scale=3),
    dict(upsampler_type="transpose+conv", scale=2, num_in_ch=1, num_out_ch=1),
    dict(upsampler_type="nearest+conv", scale=1),
    dict(upsampler_type="nearest+conv", scale=2),
    dict(upsampler_type="nearest+conv", scale=3),
    dict(upsampler_type="nearest+conv", scale=8),
    dict(num_groups=6),
    dict(depth_per_group=6),
    dict(num_heads=6),
    dict(ffn_expansion_ratio=1.5),
    dict(aim_reduction_ratio=7),
    dict(mid_dim=48),
    dict(
        scale=2,
        embed_dim=96,
        num_groups=2,
        depth_per_group=2,
        num_heads=3,
        window_size=8,
        ffn_expansion_ratio=1.5,
        aim_reduction_ratio=8,
        upsampler_type="pixelshuffle",
        img_range=1.0,
    ),
]

# Small bodies for what the upstream list leaves out.
EXTRA: list[dict[str, Any]] = [
    dict(SMALL, upsampler_type="pa_up", scale=2),  # MetaUpsample[3] holds mid_dim, not E
    dict(SMALL, upsampler_type="pa_up", scale=3),
    dict(SMALL, upsampler_type="pa_up", scale=4),
    dict(SMALL, upsampler_type="pa_up", scale=4, mid_dim=24),  # mid == E
    dict(SMALL, upsampler_type="lda", scale=2, mid_dim=24),  # mid == E: no conv in front
    dict(SMALL, upsampler_type="lda", scale=3),
    dict(SMALL, upsampler_type="lda", scale=4, mid_dim=32),  # mid > E
    dict(SMALL, upsampler_type="dysample", scale=3),
    dict(SMALL, upsampler_type="dysample", scale=2, mid_dim=24),  # DySample at index 0
    dict(SMALL, upsampler_type="pixelshuffledirect", scale=3, num_out_ch=1, num_in_ch=1),
    dict(SMALL, upsampler_type="conv", scale=4),  # conv mode: x1 whatever is stored
    dict(SMALL, unshuffle_mod=True, scale=1),
    dict(SMALL, unshuffle_mod=True, scale=2),
    dict(SMALL, unshuffle_mod=True, scale=2, upsampler_type="pixelshuffle"),
    dict(SMALL, unshuffle_mod=True, scale=2, num_in_ch=1, num_out_ch=1),
    dict(SMALL, unshuffle_mod=True, scale=1, upsampler_type="dysample"),
    dict(SMALL, unshuffle_mod=True, scale=3),  # ignored upstream at scale >= 3
]

CASES = UPSTREAM + EXTRA
SIZES = [(11, 9), (12, 10)]  # odd and even; window 8 and 4 both need padding at some size


def case_id(kwargs: dict[str, Any]) -> str:
    small = SMALL.keys() <= kwargs.keys()
    shown = [f"{k}={v}" for k, v in kwargs.items() if not (small and SMALL.get(k) == v)]
    return ",".join((["small"] if small else []) + shown).replace("upsampler_type=", "")


@dataclass
class Case:
    kwargs: dict[str, Any]
    seed: int
    reference: RefFDAT
    state_dict: dict[str, torch.Tensor]
    loaded: spandrel.ImageModelDescriptor[Any]
    keys_before: list[str]
    tensor_ids_before: dict[str, int]
    meta_before: torch.Tensor
    _ref_out: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return self.kwargs.get("num_in_ch", 3)

    def x(self, size: tuple[int, int], dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return image(self.channels, *size, seed=self.seed).to(dtype)

    def reference_output(self, size: tuple[int, int]) -> torch.Tensor:
        """The oracle's float64 output (computed once per size)."""
        if size not in self._ref_out:
            self._ref_out[size] = run(copy.deepcopy(self.reference).double(), self.x(size))
        return self._ref_out[size]


def run(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode(), reference_dysample_on_cpu():
        return model.eval()(x)


def expected_scale(kwargs: dict[str, Any]) -> int:
    return 1 if kwargs.get("upsampler_type") == "conv" else kwargs.get("scale", 4)


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    spandrel_fdat.install()


@pytest.fixture(scope="module", params=range(len(CASES)), ids=[case_id(kw) for kw in CASES])
def case(request: pytest.FixtureRequest, installed: None) -> Case:
    kwargs = CASES[request.param]
    seed = 1000 + request.param
    torch.manual_seed(seed)
    reference = RefFDAT(**kwargs).eval()
    randomize_(reference.state_dict(), seed)
    state_dict = {k: v.clone() for k, v in reference.state_dict().items()}
    keys_before = list(state_dict)
    ids_before = {k: id(v) for k, v in state_dict.items()}
    meta_before = state_dict[META].clone()
    loaded = spandrel.ModelLoader().load_from_state_dict(state_dict)
    assert isinstance(loaded, spandrel.ImageModelDescriptor)
    return Case(kwargs, seed, reference, state_dict, loaded, keys_before, ids_before, meta_before)


def test_detected_and_loaded_as_ours(case: Case) -> None:
    assert FDATArch().detect(case.state_dict)
    assert case.loaded.architecture.id == spandrel_fdat.ARCH_ID
    assert isinstance(case.loaded.model, spandrel_fdat.FDAT)
    assert case.loaded.scale == expected_scale(case.kwargs)
    assert case.loaded.input_channels == case.kwargs.get("num_in_ch", 3)
    assert case.loaded.output_channels == case.kwargs.get("num_out_ch", 3)


def test_caller_state_dict_untouched(case: Case) -> None:
    sd = case.state_dict
    assert list(sd) == case.keys_before
    assert {k: id(v) for k, v in sd.items()} == case.tensor_ids_before
    assert sd[META].dtype == torch.uint8
    assert torch.equal(sd[META], case.meta_before)
    for key, value in case.reference.state_dict().items():
        assert torch.equal(sd[key], value), key
    # and the loaded model does not share storage with the caller's tensors
    ours = case.loaded.model.state_dict()
    assert not any(ours[k].data_ptr() == sd[k].data_ptr() for k in sd)


def test_inferred_config_matches(case: Case) -> None:
    expected = FDATConfig(**case.kwargs)
    assert FDAT(**case.kwargs).config == expected
    inference = infer_config(case.state_dict)
    assert inference.config == expected
    assert not inference.scale_guessed
    assert inference.stored_meta == tuple(case.meta_before.tolist())
    # conv mode stores the trainer's scale but computes x1: only there may the stored meta disagree
    conv_rescaled = case.kwargs.get("upsampler_type") == "conv" and case.kwargs.get("scale", 4) != 1
    assert inference.meta_agrees is (not conv_rescaled)
    model = case.loaded.model
    assert model.config == expected
    assert expected.scale == expected_scale(case.kwargs)

    rebuilt = FDAT(**model.hyperparameters)
    assert rebuilt.config == expected
    assert rebuilt.hyperparameters == model.hyperparameters
    ours_sd = model.state_dict()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in ours_sd.items()}
    rebuilt.load_state_dict(ours_sd, strict=True)
    x = case.x(SIZES[0], torch.float32)
    torch.testing.assert_close(run(rebuilt, x), run(model, x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size", SIZES, ids=["odd", "even"])
def test_outputs_match_reference(case: Case, size: tuple[int, int]) -> None:
    ref = case.reference_output(size)
    h, w = size
    scale = expected_scale(case.kwargs)
    assert ref.shape == (1, case.kwargs.get("num_out_ch", 3), h * scale, w * scale)
    ours = run(copy.deepcopy(case.loaded.model).double(), case.x(size))
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_banded_outputs_match_reference(case: Case) -> None:
    """CPU inference runs a large image's body in bands of rows: forced here, as many as there can be."""
    size = (21, 19)  # unshuffle x1 leaves 6 x 5 features: two bands of the 4-pixel window
    model = copy.deepcopy(case.loaded.model).double()
    model.band_pixels = 1
    x = case.x(size)
    with torch.inference_mode():
        assert len(model.bands_for(x)) > 1
    torch.testing.assert_close(run(model, x), case.reference_output(size), rtol=1e-5, atol=1e-5)


def test_float32_outputs_match_reference(case: Case) -> None:
    x = case.x(SIZES[0], torch.float32)
    ref = run(case.reference, x)
    ours = run(case.loaded.model, x)
    assert ours.dtype == torch.float32
    magnitude = float(ref.abs().max())
    torch.testing.assert_close(ours, ref, rtol=1e-3, atol=1e-5 * max(1.0, magnitude))


def test_safetensors_round_trip(case: Case, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file(case.state_dict, str(path))
    loaded = spandrel.ModelLoader().load_from_file(path)
    assert loaded.architecture.id == spandrel_fdat.ARCH_ID
    assert isinstance(loaded.model, spandrel_fdat.FDAT)
    assert loaded.model.config == FDATConfig(**case.kwargs)
    model = loaded.model.double()
    for size in SIZES:
        torch.testing.assert_close(run(model, case.x(size)), case.reference_output(size), rtol=1e-5, atol=1e-5)


def test_saved_state_dict_is_the_references(case: Case) -> None:
    ours = case.loaded.model.state_dict()
    assert list(ours) == list(case.state_dict) or set(ours) == set(case.state_dict)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in case.state_dict.items()}
    assert ours[META].dtype == torch.uint8
    if infer_config(case.state_dict).meta_agrees:
        assert torch.equal(ours[META], case.meta_before)
    for key, value in case.state_dict.items():
        if key != META:
            assert torch.equal(ours[key], value), key
    # what we save reads back as the same network
    assert infer_config(ours).config == FDATConfig(**case.kwargs)

    # spandrel's own class takes it back (strict), with every tensor as saved
    other = copy.deepcopy(case.reference)
    randomize_(other.state_dict(), case.seed + 1)
    other.load_state_dict({k: v.clone() for k, v in ours.items()}, strict=True)
    for key, value in other.state_dict().items():
        if key != META:  # spandrel's class keeps its own
            assert torch.equal(value, case.state_dict[key]), key


# --- MetaUpsample in other dtypes (whole-dict casts, chaiNNer's interpolation) ---------------
def _as_float32(meta: torch.Tensor) -> torch.Tensor:
    return meta.float()


def _blended(meta: torch.Tensor) -> torch.Tensor:
    """Interpolating two state dicts in float can land a hair below the integer (2.9999998 for 3)."""
    return torch.nextafter(meta.float(), torch.zeros(()))


STORED_META = {
    "float32": _as_float32,
    "float16": lambda meta: meta.half(),
    "int64": lambda meta: meta.long(),
    "float32-blended": _blended,
}


@pytest.mark.parametrize("stored", list(STORED_META))
@pytest.mark.parametrize(
    "kwargs",
    [dict(SMALL, upsampler_type="pa_up", scale=2), dict(SMALL, upsampler_type="nearest+conv", scale=3)],
    ids=case_id,
)
def test_meta_upsample_in_other_dtypes(kwargs: dict[str, Any], stored: str, installed: None) -> None:
    reference = RefFDAT(**kwargs).eval()
    randomize_(reference.state_dict(), 7)
    sd = {k: v.clone() for k, v in reference.state_dict().items()}
    meta = sd[META].clone()
    sd[META] = STORED_META[stored](meta)
    as_stored = sd[META].clone()
    keys = list(sd)

    loaded = spandrel.ModelLoader().load_from_state_dict(sd)
    assert loaded.architecture.id == spandrel_fdat.ARCH_ID
    expected = FDATConfig(**kwargs)
    assert loaded.model.config == expected
    assert loaded.scale == kwargs["scale"]
    # the caller's dict still holds its own MetaUpsample, as it was
    assert list(sd) == keys
    assert sd[META].dtype == as_stored.dtype
    assert torch.equal(sd[META], as_stored)

    # the model's own MetaUpsample is canonical (uint8, upstream's values), so a
    # saved model reads back as the same network
    saved = loaded.model.state_dict()
    assert saved[META].dtype == torch.uint8
    assert saved[META].tolist() == meta.tolist() == expected.meta_upsample()
    assert infer_config(saved).config == expected
    assert spandrel.ModelLoader().load_from_state_dict(saved).scale == kwargs["scale"]

    x = image(3, *SIZES[0], seed=3).double()
    torch.testing.assert_close(run(loaded.model.double(), x), run(reference.double(), x), rtol=1e-5, atol=1e-5)
