"""Band-wise CPU inference (network.Band): the same image as the whole-image pass, in every layout.

The body of a large image runs in bands of rows with a one-row halo; channel attention's
Gram matrix and the AIM channel gate's mean are summed over all bands first. These tests
force many bands on small images (`band_pixels`) and compare with the one-band pass.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from spandrel_fdat import FDAT
from spandrel_fdat.network import WHOLE, row_bands
from tests.helpers import SMALL, build, image
from tests.test_properties import PROPERTY_SETTINGS, fdat_kwargs


@settings(max_examples=300, **PROPERTY_SETTINGS)  # type: ignore[arg-type]
@given(
    height=st.integers(1, 300),
    width=st.integers(1, 300),
    window=st.integers(1, 16),
    pixels=st.integers(0, 5000),
)
def test_row_bands_tile_the_rows(height: int, width: int, window: int, pixels: int) -> None:
    bands = row_bands(height, width, window, pixels)
    wanted = round(height * width / pixels) if pixels else 1
    if bands == WHOLE:  # one band wanted, or one band of whole windows covers the image
        rows = math.ceil(math.ceil(height / wanted) / window) * window if wanted > 1 else height
        assert rows >= height
        return
    assert 1 < len(bands) <= wanted
    assert bands[0].start == 0 and bands[-1].stop == height
    rows = bands[0].stop - bands[0].start
    assert rows % window == 0
    for band, following in itertools.pairwise(bands):
        assert band.stop == following.start
        assert band.stop - band.start == rows  # equal bands but the last
    for band in bands:
        assert band.stop is not None and band.start < band.stop
        assert (band.lo, band.hi) == (max(band.start - 1, 0), min(band.stop + 1, height))


def _outputs(model: FDAT, x: torch.Tensor, band_pixels: int) -> torch.Tensor:
    model.band_pixels = band_pixels
    with torch.inference_mode():
        return model(x)


@settings(max_examples=120, **PROPERTY_SETTINGS)  # type: ignore[arg-type]
@given(
    kwargs=fdat_kwargs(),
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    band_pixels=st.integers(1, 200),
    batch=st.integers(1, 2),
)
def test_bands_compute_the_whole_image(
    kwargs: dict[str, Any], height: int, width: int, band_pixels: int, batch: int
) -> None:
    model = build(**kwargs).double()
    x = torch.cat([image(model.config.num_in_ch, height, width, seed=i) for i in range(batch)]).double()
    model.band_pixels = band_pixels
    with torch.inference_mode():
        assume(len(model.bands_for(x)) > 1)
    whole = _outputs(model, x, 0)
    banded = _outputs(model, x, band_pixels)
    # float64: only the order of the sums over bands differs
    torch.testing.assert_close(banded, whole, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bands_in_other_dtypes(dtype: torch.dtype) -> None:
    model = build(**SMALL, upsampler_type="pixelshuffle", scale=2, group_block_pattern=["spatial", "channel"])
    model.to(dtype)
    x = image(3, 37, 29).to(dtype)
    banded = _outputs(model, x, 64)
    assert banded.dtype == dtype
    tol = {torch.float32: 1e-5, torch.bfloat16: 5e-2}[dtype]
    torch.testing.assert_close(banded.float(), _outputs(model, x, 0).float(), rtol=tol, atol=tol)


def test_float16_sums_over_a_large_image_stay_finite() -> None:
    """The AIM channel gate's sum over a 512x512 image's pixels exceeds fp16's range (65504):
    it is taken in float32, so the fp16 output stays finite and close to fp32."""
    model = build(**{**SMALL, "depth_per_group": 2}, upsampler_type="pixelshuffle", scale=1)
    x = image(3, 512, 512)
    with torch.inference_mode():
        assert len(model.bands_for(x)) > 1
    expected = _outputs(model, x, model.band_pixels)
    half = _outputs(model.half(), x.half(), model.band_pixels).float()
    assert torch.isfinite(half).all()
    mse = float((half - expected).square().mean())
    assert 10 * torch.log10(torch.tensor(float(expected.abs().max()) ** 2 / mse)) > 40


def test_training_runs_as_one_band() -> None:
    """With grad enabled the body takes the whole image (band writes cannot be differentiated)."""
    model = build(**SMALL, upsampler_type="pixelshuffle", scale=2).train()
    model.band_pixels = 16
    x = image(3, 24, 24)
    assert model.bands_for(x) == WHOLE
    out = model(x)
    out.square().mean().backward()
    assert model.groups[0].blocks[0].ffn.fc1.weight.grad is not None
    model.eval()
    with torch.inference_mode():
        assert len(model.bands_for(x)) > 1
        torch.testing.assert_close(model(x), out.detach(), rtol=1e-5, atol=1e-5)


def test_graphs_and_gpus_take_one_band() -> None:
    model = build(**SMALL, upsampler_type="pixelshuffle", scale=2)
    model.band_pixels = 16
    x = image(3, 24, 24)
    with torch.inference_mode():
        assert len(model.bands_for(x)) > 1
        assert model.bands_for(x.to("meta")) == WHOLE
        model.band_pixels = 0
        assert model.bands_for(x) == WHOLE
