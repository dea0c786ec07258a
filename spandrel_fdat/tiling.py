"""Tiled inference: run an image model on overlapping tiles and blend them, in bounded memory.

`upscale_tiled(run, image, scale=..., tile=..., overlap=...)` cuts a (B, C, H, W) tensor into
overlapping tiles of at most `tile` pixels a side, runs each through `run`, and blends the
upscaled tiles into one (B, C', H*scale, W*scale) tensor. Only one tile is ever handed to the
model, so the model's memory depends on the tile size, not on the image size. `tile=0` (or a
tile at least as large as the image) gives one tile: the untiled result, through the same code.

Blending: along each axis, every tile gets a weight that ramps up linearly over `overlap*scale`
output pixels from each edge it shares with another tile (edges on the image border keep full
weight), and the weights of the tiles covering a pixel are divided by their sum. A tile's 2-D
weight is the product of its row and column weights; as the tiles form a grid, these products
sum to exactly 1 at every output pixel, so the tiles are accumulated straight into the output,
with no weight image and no division at the end.

Nothing here knows about files or FDAT: `align` (the model's window size) is the only hint.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["axis_spans", "axis_weights", "count_tiles", "tile_grid", "upscale_tiled"]

Span = tuple[int, int]
"""[start, stop) along one axis, in input pixels."""


def axis_spans(length: int, tile: int, overlap: int, align: int = 1) -> list[Span]:
    """The tiles' [start, stop) along an axis of `length` pixels, left to right.

    One span when `tile` is 0 or at least `length`. Otherwise the fewest tiles, all of one
    size (a multiple of `align`, at most `tile`), starting on multiples of `align` and spread
    evenly, such that neighbours share at least `overlap` pixels; of those, the smallest tiles.
    The last tile ends on the border, so it can be up to `align - 1` pixels longer. Where the
    tile is too small to overlap that much on the `align` grid, neighbours are one `align` apart.
    """
    if length < 1:
        raise ValueError(f"expected a length of at least 1 pixel, got {length}")
    if tile < 0 or overlap < 0 or align < 1:
        raise ValueError(f"expected tile >= 0, overlap >= 0 and align >= 1, got {tile}, {overlap}, {align}")
    if tile == 0 or length <= tile:
        return [(0, length)]
    if overlap >= tile:
        raise ValueError(f"expected an overlap smaller than the tile, got overlap {overlap} for tile {tile}")
    largest = max(tile // align * align, align)
    cramped = largest - overlap < align  # no tile keeps `overlap` on the align grid: space them one align apart
    for count in itertools.count(2):
        for size in range(max(-(-length // count) // align, 1) * align, largest + 1, align):
            last = (length - size) // align  # the last tile's start, in units of align
            step = (size - overlap) // align  # the widest spacing that keeps `overlap`, in units of align
            if cramped:
                step = max(step, 1)
            if step >= 1 and -(-last // (count - 1)) <= step:  # even spacing: ceil(last / (count - 1)) units at most
                # start i: round(i * last / (count - 1)) units of align
                units = sorted({(i * last + (count - 1) // 2) // (count - 1) for i in range(count)})
                spans = [(unit * align, unit * align + size) for unit in units]
                spans[-1] = (spans[-1][0], length)
                return spans
    raise AssertionError("unreachable: count = last + 1 always fits")


def axis_weights(spans: list[Span], length: int, scale: int, overlap: int) -> list[Tensor]:
    """Each span's blending weights over its output pixels (1-D float32, `(stop - start) * scale` long).

    The weights of the spans that cover an output pixel sum to 1.
    """
    ramp = overlap * scale
    raw: list[Tensor] = []
    for start, stop in spans:
        size = (stop - start) * scale
        weight = torch.ones(size)
        if ramp > 0:
            # (d + 0.5) / ramp at distance d from an inner edge: two neighbours overlapping by
            # exactly `overlap` get weights that already sum to 1
            up = ((torch.arange(min(ramp, size), dtype=torch.float32) + 0.5) / ramp).clamp(max=1)
            if start > 0:
                weight[: up.numel()] *= up
            if stop < length:
                weight[size - up.numel() :] *= up.flip(0)
        raw.append(weight)
    total = torch.zeros(length * scale)
    for (start, stop), weight in zip(spans, raw, strict=True):
        total[start * scale : stop * scale] += weight
    return [weight / total[start * scale : stop * scale] for (start, stop), weight in zip(spans, raw, strict=True)]


def tile_grid(height: int, width: int, tile: int, overlap: int, align: int = 1) -> list[tuple[Span, Span]]:
    """The tiles of a height x width image as (row span, column span), row by row."""
    rows, cols = axis_spans(height, tile, overlap, align), axis_spans(width, tile, overlap, align)
    return [(row, col) for row in rows for col in cols]


def count_tiles(height: int, width: int, tile: int, overlap: int, align: int = 1) -> int:
    """How many times `upscale_tiled` calls the model for one image of this size."""
    return len(axis_spans(height, tile, overlap, align)) * len(axis_spans(width, tile, overlap, align))


def upscale_tiled(
    run: Callable[[Tensor], Tensor],
    image: Tensor,
    *,
    scale: int,
    tile: int,
    overlap: int,
    align: int = 1,
    on_tile: Callable[[], None] | None = None,
) -> Tensor:
    """`run` over overlapping tiles of `image` (B, C, H, W), blended into (B, C', H*scale, W*scale).

    `run` maps a (B, C, h, w) tile to (B, C', h*scale, w*scale); it may run on another device
    or dtype: its outputs are brought back to `image`'s device and accumulated in float32.
    `on_tile` is called after each tile (for progress bars).
    """
    if image.ndim != 4:
        raise ValueError(f"expected a (batch, channels, height, width) tensor, got shape {list(image.shape)}")
    batch, _, height, width = image.shape
    rows, cols = axis_spans(height, tile, overlap, align), axis_spans(width, tile, overlap, align)
    row_weights = axis_weights(rows, height, scale, overlap)
    col_weights = axis_weights(cols, width, scale, overlap)
    out: Tensor | None = None
    for (top, bottom), row_weight in zip(rows, row_weights, strict=True):
        for (left, right), col_weight in zip(cols, col_weights, strict=True):
            result = run(image[:, :, top:bottom, left:right])
            expected = (batch, (bottom - top) * scale, (right - left) * scale)
            if result.ndim != 4 or (result.shape[0], *result.shape[2:]) != expected:
                raise ValueError(
                    f"expected the model to turn a {bottom - top}x{right - left} tile into "
                    f"{expected[1]}x{expected[2]} (x{scale}), got shape {list(result.shape)}"
                )
            if out is None:
                out = torch.zeros(batch, result.shape[1], height * scale, width * scale, device=image.device)
            # (h*s, 1) * (1, w*s): the tile's 2-D weight, broadcast over batch and channels
            weight = row_weight[:, None] * col_weight[None, :]
            region = out[:, :, top * scale : bottom * scale, left * scale : right * scale]
            region.addcmul_(result.to(device=image.device, dtype=torch.float32), weight.to(image.device))
            if on_tile is not None:
                on_tile()
    assert out is not None  # there is always at least one tile
    return out
