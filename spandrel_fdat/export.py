"""ONNX export with dynamic batch, height and width."""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import torch
from spandrel import ImageModelDescriptor

from .network import FDAT

DEFAULT_OPSET = 17  # any opset from 14 on works: DySample and LDA sample with gathers when exporting


def export_onnx(
    model: FDAT | ImageModelDescriptor[FDAT], path: str | os.PathLike[str], *, opset: int = DEFAULT_OPSET
) -> Path:
    """Write `model` as ONNX (input "image": (N, C, H, W) float32, output "upscaled").

    Uses torch's TorchScript-based exporter: torch's dynamo exporter fails to
    decompose scaled_dot_product_attention with symbolic window counts (it
    records a view whose strides its own decomposition does not produce).
    Unshuffle models need inputs of at least 4 pixels per side in ONNX.
    """
    if importlib.util.find_spec("onnx") is None:
        raise ImportError("export_onnx needs the onnx package: pip install 'spandrel-fdat[onnx]'")
    net = model.model if isinstance(model, ImageModelDescriptor) else model
    if not isinstance(net, FDAT):
        raise TypeError(f"export_onnx takes an FDAT model or its descriptor, not {type(net).__name__}")
    path = Path(path)
    was_training, device, dtype = net.training, next(net.parameters()).device, next(net.parameters()).dtype
    net.eval().to("cpu", torch.float32)
    example = torch.rand(1, net.config.num_in_ch, 32, 32)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter
            torch.onnx.export(
                net,
                (example,),
                str(path),
                input_names=["image"],
                output_names=["upscaled"],
                dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "upscaled": {0: "batch", 2: "H", 3: "W"}},
                opset_version=opset,
                dynamo=False,
            )
    finally:
        net.train(was_training).to(device, dtype)
    return path
