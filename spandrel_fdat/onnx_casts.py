"""Post-pass on an exported ONNX graph, for onnxconverter-common's fp16 conversion of it.

Casts to the type their input already has become Identity; casts of integers or booleans to fp32 become
CastLike an fp32 constant (opset 15 on).

torch's TorchScript exporter writes every traced `.to(dtype)` as a Cast, also where the tensor
already has that dtype. In an fp32 graph such a Cast(to=FLOAT) breaks onnxconverter-common's
`convert_float_to_float16`: it relabels the Cast's output as fp16 but keeps `to=FLOAT`, and
onnxruntime refuses the converted model ("Type Error: ... Cast ... does not match expected type").
An Identity carries its input's type, and CastLike its constant's (which the converter turns
to fp16 with the weights), so the converter relabels both sides alike.
"""

from __future__ import annotations

from pathlib import Path

INTEGERS = (6, 7, 2, 3, 4, 5, 12, 13, 9)  # INT32, INT64, UINT8, INT8, UINT16, INT16, UINT32, UINT64, BOOL


FLOAT_LIKE = "fp32_like"  # the scalar constant that CastLike copies the type of


def retype_casts(path: Path, opset: int) -> int:
    """Rewrite the graph at `path` in place; returns how many Casts were replaced."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    types.update({t.name: t.data_type for t in graph.initializer})
    count = 0
    for node in model.graph.node:
        if node.op_type != "Cast":
            continue
        to = next(a.i for a in node.attribute if a.name == "to")
        source = types.get(node.input[0])
        if source == to:
            node.op_type = "Identity"
            del node.attribute[:]
            count += 1
        elif to == TensorProto.FLOAT and source in INTEGERS and opset >= 15:
            node.op_type = "CastLike"
            del node.attribute[:]
            node.input.append(FLOAT_LIKE)
            count += 1
    if any(node.op_type == "CastLike" and FLOAT_LIKE in node.input for node in model.graph.node):
        model.graph.initializer.append(helper.make_tensor(FLOAT_LIKE, TensorProto.FLOAT, [], [0.0]))
    if count:
        onnx.save(model, str(path))
    return count
