"""ONNX export: fp32, fp16 or bf16 graphs, dynamic or static height and width."""

from __future__ import annotations

import copy
import importlib.util
import os
import warnings
from pathlib import Path
from typing import Literal

import torch
from spandrel import ImageModelDescriptor
from torch import Tensor, nn

from .network import FDAT
from .onnx_bf16 import fp16_graph_to_bf16
from .onnx_casts import retype_casts

DEFAULT_OPSET = 17  # any opset from 14 on works: DySample and LDA sample with gathers when exporting
MIN_OPSET = 14
INPUT_NAME, OUTPUT_NAME = "input", "output"  # the names chaiNNer's and vs-mlrt's ONNX nodes read the first of

OnnxDtype = Literal["fp32", "fp16", "bf16"]
# bf16 graphs are traced as fp16 and relabelled (onnx_bf16.py): torch cannot trace a bf16 FDAT
ONNX_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.float16}


class _CastIO(nn.Module):
    """The network in its dtype between casts from and to the graph's input/output dtype."""

    def __init__(self, net: FDAT, dtype: torch.dtype, io_dtype: torch.dtype) -> None:
        super().__init__()
        self.net, self.dtype, self.io_dtype = net, dtype, io_dtype

    def forward(self, x: Tensor) -> Tensor:
        if self.dtype != self.io_dtype:
            x = x.to(self.dtype)
        out = self.net(x)
        return out if self.dtype == self.io_dtype else out.to(self.io_dtype)


def export_onnx(
    model: FDAT | ImageModelDescriptor[FDAT],
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    dtype: OnnxDtype = "fp32",
    io_dtype: OnnxDtype | None = None,
    static: tuple[int, int] | None = None,
) -> Path:
    """Write `model` as ONNX: input "input" (N, C, H, W), output "output" (N, C, sH, sW).

    dtype: the graph's weights and computation, fp32, fp16 or bf16. In fp16 and bf16 graphs the sums
    over pixels, LayerNorm and sampling positions are fp32 islands; the sums are also scaled so that
    no fp16 partial sum can overflow after any fp16 conversion. bf16 graphs are written at opset 22
    (or `opset` if newer): the first with bf16 convolutions. io_dtype: the input and output, fp32
    (default), fp16, or bf16 (only with a bf16 graph, which takes fp32 or bf16). static=(H, W) fixes height and width (TensorRT engines, vs-mlrt);
    None keeps batch, height and width dynamic. The output is not clamped to [0, 1].
    A deep copy is exported: `model` is left as it was. Uses torch's TorchScript-based exporter
    (its dynamo exporter cannot decompose scaled_dot_product_attention with symbolic window counts).
    Unshuffle models need inputs of at least 4 pixels per side in ONNX.
    """
    if importlib.util.find_spec("onnx") is None:
        raise ImportError("export_onnx needs the onnx package: pip install 'spandrel-fdat[onnx]'")
    net = model.model if isinstance(model, ImageModelDescriptor) else model
    if not isinstance(net, FDAT):
        raise TypeError(f"export_onnx takes an FDAT model or its descriptor, not {type(net).__name__}")
    for name, value in (("dtype", dtype), ("io_dtype", io_dtype)):
        if value is not None and value not in ONNX_DTYPES:
            raise ValueError(f"export_onnx: {name}={value!r}; choose one of {', '.join(ONNX_DTYPES)}")
    if dtype == "bf16" and io_dtype not in (None, "fp32", "bf16"):
        raise ValueError(f"export_onnx: io_dtype={io_dtype!r} with dtype='bf16'; choose fp32 or bf16")
    if dtype != "bf16" and io_dtype == "bf16":
        raise ValueError(f"export_onnx: io_dtype='bf16' needs dtype='bf16', not {dtype!r}")
    if opset < MIN_OPSET:
        raise ValueError(f"export_onnx: opset {opset} is too old; choose {MIN_OPSET} or newer")
    if static is not None and (len(static) != 2 or min(static) < 1):
        raise ValueError(f"export_onnx: static={static!r}; give (height, width), both at least 1")
    path = Path(path)
    work, io = ONNX_DTYPES[dtype], ONNX_DTYPES[io_dtype or "fp32"]
    copied = copy.deepcopy(net).eval().to("cpu")
    if dtype == "bf16":  # rounded to bf16 first: fp16 then holds the values exactly (within its range)
        copied = copied.to(torch.bfloat16)
    wrapped = _CastIO(copied.to(work), work, io)
    h, w = static if static is not None else (32, 32)
    example = torch.rand(1, net.config.num_in_ch, h, w).to(io)
    axes = None
    if static is None:
        axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter
        torch.onnx.export(
            wrapped,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=min(opset, 20) if dtype == "bf16" else opset,  # the exporter's newest: 20
            dynamo=False,
        )
    retype_casts(path, opset)  # so that onnxconverter-common's fp16 conversion of it loads
    if dtype == "bf16":
        fp16_graph_to_bf16(path, opset)
    return path
