"""Reshape, pad and crop that export as one ONNX node each, their shapes computed once per forward.

torch's TorchScript-based ONNX exporter writes each size a traced `view`, `F.pad` or slice reads
(`x.shape[0]`, `h + pad`) as its own Shape, Gather, Unsqueeze and Concat nodes, at every call: in
FDAT, about 200 nodes of shape arithmetic per block. The Functions here take their target as an
int64 tensor instead, built once per forward (`WindowShapes`) and shared by every block, and each
exports as one Reshape, Pad or Slice. A 0 in a reshape target keeps that dimension (ONNX Reshape's
rule), so most targets are constants. They are meant for `exporting()` only; elsewhere the network
keeps its own forms.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function


def exporting() -> bool:
    """True while torch.onnx.export traces the network."""
    return torch.onnx.is_in_onnx_export()


def fp32_island(x: Tensor) -> bool:
    """True where x, traced into an fp16 or bf16 ONNX graph, is to be cast to fp32 for a few
    operations (LayerNorm's moments) and back: explicit Casts that every runtime keeps."""
    return exporting() and x.dtype in (torch.float16, torch.bfloat16)


class _Shape(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return torch.tensor(x.shape, dtype=torch.int64)

    @staticmethod
    def symbolic(g: Any, x: Any) -> Any:
        return g.op("Shape", x)


class _Reshape(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, target: Tensor) -> Tensor:
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(target.tolist())]
        return x.reshape(dims)

    @staticmethod
    def symbolic(g: Any, x: Any, target: Any) -> Any:
        return g.op("Reshape", x, target)


class _Pad(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, pads: Tensor) -> Tensor:
        n, p = x.ndim, pads.tolist()
        # ONNX order (begin of each dim, then end of each) -> F.pad's (last dim first, begin, end)
        return F.pad(x, [v for d in reversed(range(n)) for v in (p[d], p[n + d])])

    @staticmethod
    def symbolic(g: Any, x: Any, pads: Any) -> Any:
        return g.op("Pad", x, pads)


class _Slice(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, starts: Tensor, ends: Tensor, axes: Tensor) -> Tensor:
        index = [slice(None)] * x.ndim
        for a, s, e in zip(axes.tolist(), starts.tolist(), ends.tolist(), strict=True):
            index[a] = slice(s, e)
        return x[tuple(index)]

    @staticmethod
    def symbolic(g: Any, x: Any, starts: Any, ends: Any, axes: Any) -> Any:
        return g.op("Slice", x, starts, ends, axes)


def shape(x: Tensor) -> Tensor:
    """x's shape as an int64 tensor (one Shape node)."""
    return _Shape.apply(x)


def reshape(x: Tensor, target: Tensor | list[int]) -> Tensor:
    """x reshaped to `target` (int64; 0 keeps that dimension of x, -1 is inferred): one Reshape node.
    A target with a 0 needs a -1 too (torch's ONNX shape inference rejects it otherwise)."""
    if not isinstance(target, Tensor):
        target = torch.tensor(target, dtype=torch.int64)
    return _Reshape.apply(x, target)


def ints(*values: int) -> Tensor:
    """A constant int64 vector."""
    return torch.tensor(values, dtype=torch.int64)


class WindowShapes(NamedTuple):
    """The shapes window attention needs for a (B, H, W, C) feature map, as int64 tensors.

    Windows are ws x ws; the map is zero-padded at the bottom/right to (Hp, Wp), whole windows.
    """

    pads: Tensor  # Pad's pads for (B, H, W, C): [0, 0, 0, 0, 0, Hp - H, Wp - W, 0]
    windows: Tensor  # (B, Hp, Wp, C) -> (B * Hp/ws, ws, Wp/ws, ws, C)
    image: Tensor  # (B * Hp/ws, ws, Wp/ws, ws, C) -> (B, Hp, Wp, C)
    grid: Tensor  # (windows, ws * ws, C) -> (B * Hp/ws, Wp/ws, ws, ws, C)
    starts: Tensor  # crop (B, Hp, Wp, C) to (B, H, W, C): Slice's starts, ends and axes
    ends: Tensor
    axes: Tensor

    @classmethod
    def of(cls, x: Tensor, window_size: int, channels: int) -> WindowShapes:
        """From x, a (B, C_any, H, W) tensor of the features' height and width."""
        ws = window_size
        size = shape(x)[2:]  # (H, W)
        padded = (size + ws - 1) // ws * ws  # (Hp, Wp)
        cols = padded[1:] // ws  # Wp / ws, the windows per row
        zeros = ints(0, 0, 0, 0, 0)
        return cls(
            pads=torch.cat([zeros, padded - size, zeros[:1]]),
            windows=torch.cat([ints(-1, ws), cols, ints(ws, channels)]),
            image=torch.cat([ints(-1), padded, ints(channels)]),
            grid=torch.cat([ints(-1), cols, ints(ws, ws, channels)]),
            starts=ints(0, 0),
            ends=size,
            axes=ints(1, 2),
        )

    def pad(self, x: Tensor) -> Tensor:
        """(B, H, W, C) -> (B, Hp, Wp, C), zeros at the bottom/right."""
        return _Pad.apply(x, self.pads)

    def crop(self, x: Tensor) -> Tensor:
        """(B, Hp, Wp, C) -> (B, H, W, C)."""
        return _Slice.apply(x, self.starts, self.ends, self.axes)
