"""A bf16 ONNX graph from a native fp16 one: every fp16 type and value relabelled bf16, at opset 22.

torch's TorchScript exporter cannot trace a bf16 FDAT (torch 2.14: an internal ComplexDouble
scalar-type error), and ONNX allows bf16 Conv, ConvTranspose and GridSample only from opset 22
while that exporter writes at most opset 20. So `export_onnx(dtype="bf16")` exports the fp16
graph (its fp32 islands included) from weights already rounded to bf16, which fp16 holds exactly
within its range, raises the opset with onnx's version converter and relabels fp16 as bf16.
"""

from __future__ import annotations

from pathlib import Path

BF16_OPSET = 22  # the first opset with bf16 Conv, ConvTranspose and GridSample


def graph_opset(dtype: str, opset: int) -> int:
    """The opset a graph of `dtype` ("fp32", "fp16", "bf16") asked for at `opset` is written at."""
    return max(opset, BF16_OPSET) if dtype == "bf16" else opset


def fp16_graph_to_bf16(path: Path, opset: int) -> None:
    """Rewrite the fp16 graph at `path` in place as a bf16 graph at `graph_opset("bf16", opset)`."""
    try:
        import ml_dtypes  # onnx's own dependency for bf16 tensors in recent versions
    except ImportError as err:
        raise ImportError("bf16 ONNX graphs need the ml_dtypes package: pip install ml_dtypes") from err
    import numpy as np
    import onnx
    from onnx import TensorProto, numpy_helper, version_converter

    model = version_converter.convert_version(onnx.load(str(path)), graph_opset("bf16", opset))

    def relabel(tensor: onnx.TensorProto) -> None:
        if tensor.data_type == TensorProto.FLOAT16:
            values = numpy_helper.to_array(tensor).astype(np.float32).astype(ml_dtypes.bfloat16)
            tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))

    graph = model.graph
    for tensor in graph.initializer:
        relabel(tensor)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                relabel(attribute.t)
            elif attribute.name == "to" and attribute.i == TensorProto.FLOAT16:
                attribute.i = TensorProto.BFLOAT16
    for value in (*graph.value_info, *graph.input, *graph.output):
        if value.type.tensor_type.elem_type == TensorProto.FLOAT16:
            value.type.tensor_type.elem_type = TensorProto.BFLOAT16
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
