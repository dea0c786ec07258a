"""Row bands for CPU inference: a block part computed band by band, each band's
intermediates small enough to stay in cache (see `network.FDATBlock`).

A band is a run of output rows with a one-row halo above and below, the rows the
3x3 depthwise convolutions read.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class Band(NamedTuple):
    """Output rows [start, stop) of a block part, read from input rows [lo, hi): a one-row halo
    for the 3x3 depthwise convolutions. `stop is None`: the whole image, not sliced."""

    start: int = 0
    stop: int | None = None
    lo: int = 0
    hi: int | None = None


WHOLE = (Band(),)


def row_bands(height: int, width: int, window_size: int, pixels: int) -> tuple[Band, ...]:
    """About height * width / pixels bands of equal height, each a multiple of the window size tall
    (but the last); fewer where windows are too tall."""
    count = round(height * width / pixels) if pixels > 0 else 1
    if count <= 1:
        return WHOLE
    rows = -(-height // count)  # ceil
    rows = -(-rows // window_size) * window_size  # to whole windows
    if rows >= height:
        return WHOLE
    starts = range(0, height, rows)
    return tuple(Band(s, min(s + rows, height), max(s - 1, 0), min(s + rows + 1, height)) for s in starts)


def rows(x: Tensor, band: Band) -> Tensor:
    """The band's output rows of a full (B, H, W, C) tensor."""
    return x if band.stop is None else x[:, band.start : band.stop]


def halo(x: Tensor, band: Band) -> Tensor:
    """The rows a band reads, halo included."""
    return x if band.hi is None else x[:, band.lo : band.hi]


def core(t: Tensor, band: Band) -> Tensor:
    """The output rows of a tensor computed on the band's halo rows."""
    return t if band.stop is None else t[:, band.start - band.lo : band.stop - band.lo]


def into(out: Tensor | None, band: Band) -> Tensor | None:
    """Where a band's result goes: its rows of `out`, or a new tensor."""
    return None if out is None else rows(out, band)
