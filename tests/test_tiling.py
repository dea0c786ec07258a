"""Tiled inference (`spandrel_fdat.tiling`): the tile grid, the blending weights, and the blend itself.

A pointwise model (each output pixel depends on one input pixel) gives the same result tiled or
not, whatever the tiles; FDAT does not (its channel attention and AIM gates see the whole tile),
so a small real model is checked for closeness instead. The 1024x1024 trade-off is measured by
bench/tiling.py.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from spandrel_fdat.tiling import axis_spans, axis_weights, count_tiles, tile_grid, upscale_tiled
from tests.helpers import SMALL, build, image

lengths = st.integers(1, 300)
tiles = st.integers(0, 96)
aligns = st.sampled_from([1, 2, 4, 8, 16])


@st.composite
def grids(draw: st.DrawFn) -> tuple[int, int, int, int]:
    """(length, tile, overlap, align) with tile a multiple of align (as the CLI makes it) and overlap < tile."""
    align = draw(aligns)
    tile = draw(st.integers(0, 12)) * align
    overlap = draw(st.integers(0, max(tile - 1, 0)))
    return draw(lengths), tile, overlap, align


@settings(max_examples=300, deadline=None)
@given(grids())
def test_spans_cover_the_axis_on_the_align_grid(grid: tuple[int, int, int, int]) -> None:
    length, tile, overlap, align = grid
    spans = axis_spans(length, tile, overlap, align)
    assert spans[0][0] == 0 and spans[-1][1] == length
    if tile == 0 or length <= tile:
        assert spans == [(0, length)]
        return
    sizes = {stop - start for start, stop in spans[:-1]}
    assert len(sizes) <= 1 and all(size <= tile for size in sizes)  # one size, at most the tile
    assert spans[-1][1] - spans[-1][0] <= tile + align - 1  # the last one reaches the border
    for (start, stop), (next_start, _) in itertools.pairwise(spans):
        assert start % align == 0 and start < next_start <= stop  # sorted, no gap
        if tile - overlap >= align:
            assert stop - next_start >= overlap  # neighbours share at least `overlap` pixels


@settings(max_examples=200, deadline=None)
@given(grids(), st.integers(1, 4))
def test_weights_are_positive_and_sum_to_one(grid: tuple[int, int, int, int], scale: int) -> None:
    length, tile, overlap, align = grid
    spans = axis_spans(length, tile, overlap, align)
    weights = axis_weights(spans, length, scale, overlap)
    total = torch.zeros(length * scale, dtype=torch.float64)
    for (start, stop), weight in zip(spans, weights, strict=True):
        assert weight.shape == ((stop - start) * scale,)
        assert bool((weight > 0).all())
        total[start * scale : stop * scale] += weight.double()
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-6, rtol=0)


def test_two_tiles_overlapping_by_the_overlap_blend_linearly() -> None:
    spans = axis_spans(24, 16, 8, 1)
    assert spans == [(0, 16), (8, 24)]
    left, right = axis_weights(spans, 24, 1, 8)
    assert left[:8].tolist() == [1.0] * 8
    expected = [(d + 0.5) / 8 for d in range(8)]  # the right tile ramps up over the shared 8 pixels
    torch.testing.assert_close(right[:8], torch.tensor(expected))
    torch.testing.assert_close(left[8:], torch.tensor(expected[::-1]))


def test_the_grid_is_the_product_of_the_axes() -> None:
    grid = tile_grid(50, 30, 16, 4, 4)
    rows, cols = axis_spans(50, 16, 4, 4), axis_spans(30, 16, 4, 4)
    assert grid == [(r, c) for r in rows for c in cols]
    assert count_tiles(50, 30, 16, 4, 4) == len(grid)
    assert count_tiles(50, 30, 0, 4, 4) == 1


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="overlap smaller than the tile"):
        axis_spans(100, 16, 16)
    with pytest.raises(ValueError, match="at least 1 pixel"):
        axis_spans(0, 16, 4)
    with pytest.raises(ValueError, match="tile >= 0"):
        axis_spans(10, -1, 0)


# --- the blend --------------------------------------------------------------------------------


def pointwise(scale: int, out_channels: int = 3) -> tuple[torch.nn.Module, list[torch.Size]]:
    """A model whose every output pixel depends on one input pixel; it records its input shapes."""
    seen: list[torch.Size] = []
    weight = torch.linspace(-1, 2, out_channels * 3).reshape(out_channels, 3, 1, 1)

    class Pointwise(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.shape)
            return F.interpolate(F.conv2d(x, weight) + 0.25, scale_factor=scale, mode="nearest")

    return Pointwise(), seen


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.integers(1, 70), st.integers(1, 3), st.sampled_from([1, 3]), grids(), st.integers(1, 2))
def test_a_pointwise_model_is_the_same_tiled_and_untiled(
    height: int, width: int, scale: int, out_channels: int, grid: tuple[int, int, int, int], batch: int
) -> None:
    _, tile, overlap, align = grid
    model, seen = pointwise(scale, out_channels)
    x = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(height * 71 + width))
    calls = 0

    def count() -> None:
        nonlocal calls
        calls += 1

    out = upscale_tiled(model, x, scale=scale, tile=tile, overlap=overlap, align=align, on_tile=count)
    assert out.shape == (batch, out_channels, height * scale, width * scale) and out.dtype == torch.float32
    torch.testing.assert_close(out, model(x), atol=1e-5, rtol=1e-5)
    assert calls == count_tiles(height, width, tile, overlap, align) == len(seen) - 1
    largest = max(tile, 1) + align - 1
    assert all(shape[-2] <= max(largest, height) and shape[-1] <= max(largest, width) for shape in seen[:-1])


def test_no_tiling_is_one_call_and_bitwise_the_model() -> None:
    model, seen = pointwise(2)
    x = torch.rand(1, 3, 37, 23)
    out = upscale_tiled(model, x, scale=2, tile=0, overlap=8)
    assert len(seen) == 1 and seen[0] == x.shape
    assert torch.equal(out, model(x))


def test_a_model_of_the_wrong_scale_is_reported() -> None:
    model, _ = pointwise(3)
    with pytest.raises(ValueError, match=r"expected the model to turn a 16x16 tile into 32x32 \(x2\)"):
        upscale_tiled(model, torch.rand(1, 3, 40, 40), scale=2, tile=16, overlap=4)


def test_outputs_come_back_to_the_images_device_in_float32() -> None:
    model, _ = pointwise(2)
    out = upscale_tiled(lambda t: model(t).half(), torch.rand(1, 3, 20, 20), scale=2, tile=8, overlap=2)
    assert out.dtype == torch.float32 and out.device.type == "cpu"


def psnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    peak = float(reference.max() - reference.min())
    return 10 * math.log10(peak**2 / float(((reference - other) ** 2).mean()))


@pytest.mark.parametrize("upsampler", ["pixelshuffle", "transpose+conv"])
def test_a_real_model_tiled_with_overlap_is_close_to_untiled(upsampler: str) -> None:
    model = build(seed=3, scale=2, upsampler_type=upsampler, **SMALL)  # window 4
    x = image(3, 64, 56, seed=5)
    with torch.inference_mode():
        untiled = model(x)
        tiled = upscale_tiled(model, x, scale=2, tile=32, overlap=16, align=4)
        seams = upscale_tiled(model, x, scale=2, tile=32, overlap=0, align=4)
    assert tiled.shape == untiled.shape
    assert psnr(untiled, tiled) > 40
    assert psnr(untiled, tiled) > psnr(untiled, seams)  # blending over an overlap beats butting tiles
