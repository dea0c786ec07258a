"""Bilinear grid sampling from gathers and arithmetic, for ONNX opsets without GridSample (< 16).

Gives `F.grid_sample(x, grid, mode="bilinear", ...)`'s numbers for the two settings the
upsamplers use: DySample's (border padding, align_corners=False) and LDA's (zero padding,
align_corners=True). torch exports it as Floor, Clip, GatherElements and arithmetic, which
every opset from 11 on has.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor


def grid_sample(
    x: Tensor, grid: Tensor, *, padding_mode: Literal["zeros", "border"], align_corners: bool, gather: bool
) -> Tensor:
    """(N, C, H, W) sampled at grid (N, Ho, Wo, xy in [-1, 1]) -> (N, C, Ho, Wo), bilinear.

    `gather=False` is torch's own grid_sample; `gather=True` the exportable form below.
    """
    if not gather:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=align_corners)
    return _gather_sample(x, grid, padding_mode=padding_mode, align_corners=align_corners)


def _unnormalize(coord: Tensor, size: Tensor, align_corners: bool) -> Tensor:
    """[-1, 1] -> pixel coordinates, as grid_sample maps them."""
    if align_corners:
        return (coord + 1) * 0.5 * (size - 1)
    return ((coord + 1) * size - 1) * 0.5


def _gather_sample(x: Tensor, grid: Tensor, *, padding_mode: str, align_corners: bool) -> Tensor:
    n, c = x.shape[0], x.shape[1]
    # sizes as tensors of x's dtype, so a traced graph reads them from the input's shape
    h = torch.ones_like(x[0, 0, :, 0], dtype=grid.dtype).sum()
    w = torch.ones_like(x[0, 0, 0, :], dtype=grid.dtype).sum()
    ix = _unnormalize(grid[..., 0], w, align_corners)  # (N, Ho, Wo)
    iy = _unnormalize(grid[..., 1], h, align_corners)
    if padding_mode == "border":  # coordinates clipped into the image, then plain bilinear
        ix = torch.minimum(ix.clamp(min=0), w - 1)
        iy = torch.minimum(iy.clamp(min=0), h - 1)
    x0, y0 = ix.floor(), iy.floor()
    fx, fy = ix - x0, iy - y0
    flat = x.flatten(2)  # (N, C, H*W)
    out = None
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            cx, cy = x0 + dx, y0 + dy
            weight = wx * wy
            # a corner outside the image reads zero (zeros padding; with border it has weight 0)
            inside = (cx >= 0) & (cx <= w - 1) & (cy >= 0) & (cy <= h - 1)
            weight = weight * inside.to(weight.dtype)
            cx = torch.minimum(cx.clamp(min=0), w - 1)
            cy = torch.minimum(cy.clamp(min=0), h - 1)
            index = (cy * w + cx).to(torch.int64).flatten(1)  # (N, Ho*Wo)
            taken = flat.gather(2, index.unsqueeze(1).expand(n, c, index.shape[1]))  # (N, C, Ho*Wo)
            term = taken * weight.flatten(1).unsqueeze(1)
            out = term if out is None else out + term
    assert out is not None
    return out.view(n, c, grid.shape[1], grid.shape[2])
