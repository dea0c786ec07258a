"""fp16 ONNX graphs whose sums over pixels cannot overflow: the native fp16 export and
onnxconverter-common's conversion of the fp32 graph, on a model whose fp32 sums exceed fp16's range."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from spandrel_fdat import FDAT, export_onnx
from spandrel_fdat import network as net
from spandrel_fdat.network import ChannelAttention, FDATBlock
from spandrel_fdat.upsamplers import LDAUpsample
from tests.helpers import SMALL, assert_one_line_error, build, image, run_cli

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

FP16_MAX = 65504.0
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SUM_OPS = ("ReduceSum", "ReduceMean", "MatMul")


def hot_sums_model() -> FDAT:
    """A small x2 model with large normalised features (LayerNorm weights x16, the conv branch x4)
    and a residual stream 300 times larger (the upsampler's first conv scaled back down)."""
    model = build(**SMALL, upsampler_type="pixelshuffle", scale=2)
    with torch.no_grad():
        for block in model.modules():
            if isinstance(block, FDATBlock):
                block.n1.weight.mul_(16)
                block.conv[0].weight.mul_(4)
        model.conv_first.weight.mul_(300)
        model.conv_first.bias.mul_(300)
        first = next(m for m in model.upsampler.modules() if isinstance(m, torch.nn.Conv2d))
        first.weight.div_(300)
    return model


def largest_pixel_sums(model: FDAT, x: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """The largest |sum over pixels| of the eager fp32 forward: the AIM conv branch's, and channel
    attention's squared norms."""
    found: dict[str, float] = {}
    pixels = x.shape[-2] * x.shape[-1]

    def spy(name: str, fn: Callable[..., Any], value: Callable[..., float]) -> Callable[..., Any]:
        def wrapped(*args: Any) -> Any:
            result = fn(*args)
            found[name] = max(found.get(name, 0.0), value(args, result))
            return result

        return wrapped

    for block in model.modules():
        if isinstance(block, FDATBlock) and isinstance(block.attn, ChannelAttention):
            stats = spy("squared norms", block.attn.statistics, lambda _a, r: float(r[1].abs().max()))
            monkeypatch.setattr(block.attn, "statistics", stats)
        elif isinstance(block, FDATBlock):
            gate = spy("AIM sum", block.inter.channel_gate, lambda a, _r: float(a[0].abs().max()) * pixels)
            monkeypatch.setattr(block.inter, "channel_gate", gate)
    with torch.inference_mode():
        model(x)
    monkeypatch.undo()
    return found


def run_with_sums(graph: Any, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The graph's output and the outputs of all its reductions and products."""
    names = [n.output[0] for n in graph.graph.node if n.op_type in SUM_OPS]
    graph.graph.output.extend([onnx.ValueInfoProto(name=name) for name in names])
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    out, *sums = session.run(None, {"input": x})
    return out, sums


def nonfinite(arrays: list[np.ndarray]) -> int:
    return sum(int((~np.isfinite(a.astype(np.float32))).sum()) for a in arrays)


@pytest.fixture(scope="module")
def hot() -> tuple[FDAT, torch.Tensor, torch.Tensor]:
    model, x = hot_sums_model(), image(3, 96, 96)
    with torch.inference_mode():
        expected = model(x)
    return model, x, expected


def test_the_hot_model_sums_beyond_fp16(
    hot: tuple[FDAT, torch.Tensor, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The setup the tests below rely on: in fp32, both kinds of sum exceed fp16's 65504."""
    model, x, _ = hot
    sums = largest_pixel_sums(model, x, monkeypatch)
    assert sums["AIM sum"] > FP16_MAX and sums["squared norms"] > FP16_MAX, sums


def test_naive_fp16_sums_overflow_and_ours_do_not(
    hot: tuple[FDAT, torch.Tensor, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x, expected = hot
    monkeypatch.setattr(net, "NAIVE_EXPORT_SUMS", True)
    naive = export_onnx(model, tmp_path / "naive.onnx", dtype="fp16")
    monkeypatch.setattr(net, "NAIVE_EXPORT_SUMS", False)
    ours = export_onnx(model, tmp_path / "ours.onnx", dtype="fp16")
    _, naive_sums = run_with_sums(onnx.load(str(naive)), x.numpy())
    assert nonfinite(naive_sums) > 0  # the plain fp16 sums overflow in onnxruntime
    out, sums = run_with_sums(onnx.load(str(ours)), x.numpy())
    assert nonfinite(sums) == 0 and nonfinite([out]) == 0
    torch.testing.assert_close(torch.from_numpy(out), expected, rtol=0, atol=2e-2)


def test_the_fp32_graph_has_no_cast_that_fp16_conversion_mislabels(tmp_path: Path) -> None:
    """onnxconverter-common relabels a Cast(to=FLOAT)'s output as fp16 but keeps the Cast: the
    fp32 graph has none (no-op Casts are Identity, integer ones CastLike a constant)."""
    model = build(**SMALL, upsampler_type="dysample", scale=2)
    graph = onnx.load(str(export_onnx(model, tmp_path / "m.onnx")))
    casts = [n.name for n in graph.graph.node if n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT]
    assert casts == []


@pytest.mark.parametrize("upsampler", ["pixelshuffle", "dysample"])
def test_onnxconverter_common_fp16_of_our_fp32_graph_loads_and_does_not_overflow(
    upsampler: str, hot: tuple[FDAT, torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    float16 = pytest.importorskip(
        "onnxconverter_common.float16",
        reason="onnxconverter-common is not installed (pip install onnxconverter-common)",
    )
    if upsampler == "pixelshuffle":
        model, x, expected = hot
    else:  # its sampling positions are fp16 too after conversion: a small image
        model, x = build(**SMALL, upsampler_type=upsampler, scale=2), image(3, 20, 24)
        with torch.inference_mode():
            expected = model(x)
    path = export_onnx(model, tmp_path / "fp32.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = float16.convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    out, sums = run_with_sums(converted, x.numpy())  # onnxruntime loads it
    assert nonfinite(sums) == 0 and nonfinite([out]) == 0
    torch.testing.assert_close(torch.from_numpy(out), expected, rtol=0, atol=3e-2)


def test_convert_dtype_fp16_writes_an_fp16_graph(tmp_path: Path) -> None:
    """`convert --dtype fp16 --onnx` (the issue's command): fp16 weights in both files, fp32 I/O."""
    graph_path = tmp_path / "m.onnx"
    result = run_cli(
        "convert",
        FIXTURES / "uni_pixelshuffle_x3.safetensors",
        tmp_path / "m.safetensors",
        "--dtype",
        "fp16",
        "--onnx",
        graph_path,
    )
    assert result.exit_code == 0, result.output
    assert "fp16 with fp32 input/output" in result.stdout
    graph = onnx.load(str(graph_path))
    weights = {t.name: t.data_type for t in graph.graph.initializer if t.name.endswith(".weight")}
    assert "net.conv_first.weight" in weights
    assert set(weights.values()) == {onnx.TensorProto.FLOAT16}
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def reference_evaluator(graph: Any) -> Any:
    """onnx's reference evaluator, with GatherElements as numpy's take_along_axis: its own uses
    np.choose, which takes at most 64 entries along the axis (DySample/LDA gather from H*W)."""
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    class GatherElements(OpRun):
        op_domain = ""

        def _run(self, data: np.ndarray, indices: np.ndarray, axis: int | None = None) -> tuple[np.ndarray]:
            axis = axis or 0
            indices = np.where(indices < 0, indices + data.shape[axis], indices)
            return (np.take_along_axis(data, indices, axis=axis),)

    return ReferenceEvaluator(graph, new_ops=[GatherElements])


@pytest.mark.parametrize("upsampler", ["pixelshuffle", "dysample", "lda"])
def test_bf16_graph_runs_in_the_reference_evaluator_near_eager_bf16(upsampler: str, tmp_path: Path) -> None:
    """A bf16 graph (opset 22: bf16 Conv) is as close to fp32 as PyTorch's own bf16 forward.
    onnxruntime's CPU has no bf16 Conv, so onnx's reference evaluator runs it, at 12x12."""
    model, x = build(**SMALL, upsampler_type=upsampler, scale=2), image(3, 12, 12)
    graph = onnx.load(str(export_onnx(model, tmp_path / "bf16.onnx", dtype="bf16")))
    assert graph.opset_import[0].version == 22
    weights = {t.data_type for t in graph.graph.initializer if t.name.endswith(".weight")}
    assert weights == {onnx.TensorProto.BFLOAT16}
    (out,) = reference_evaluator(graph).run(None, {"input": x.numpy()})
    with torch.inference_mode():
        expected = model(x)
        eager_error = float((model.bfloat16()(x.bfloat16()).float() - expected).abs().max())
    assert out.dtype == np.float32 and nonfinite([out]) == 0
    error = float(np.abs(out - expected.numpy()).max())
    assert 0 < error < 2 * eager_error, (error, eager_error)


def test_convert_dtype_bf16_writes_a_bf16_graph_and_refuses_fp16_io(tmp_path: Path) -> None:
    source, graph_path = FIXTURES / "uni_pixelshuffle_x3.safetensors", tmp_path / "m.onnx"
    result = run_cli("convert", source, tmp_path / "m.safetensors", "--dtype", "bf16", "--onnx", graph_path)
    assert result.exit_code == 0, result.output
    assert "(ONNX opset 22, bf16 with fp32 input/output" in result.stdout
    assert onnx.load(str(graph_path)).opset_import[0].version == 22
    args = ("--dtype", "bf16", "--onnx", tmp_path / "n.onnx", "--onnx-io", "fp16")
    assert_one_line_error(run_cli("convert", source, tmp_path / "n.safetensors", *args), "--onnx-io fp16", "bf16")
    assert not (tmp_path / "n.onnx").exists() and not (tmp_path / "n.safetensors").exists()


def test_the_lda_upsamplers_layernorm_is_an_fp32_island(tmp_path: Path) -> None:
    """LDA's LayerNorm sees the residual stream: made 2000 times larger here, its squares pass
    fp16's range. In the fp16 graph its moments are fp32 (onnxruntime's CPU runs fp16 ops it has
    no fp16 kernel for in fp32, so the graph's types are what a GPU runtime would see), and the
    output stays near fp32's."""
    model, x = build(**SMALL, upsampler_type="lda", scale=2), image(3, 16, 20)
    lda = next(m for m in model.upsampler.modules() if isinstance(m, LDAUpsample))
    with torch.no_grad():
        model.conv_first.weight.mul_(2000)
        model.conv_first.bias.mul_(2000)
        model.upsampler[-1].weight.div_(2000)  # the conv after LDA: output back in range
        model.upsampler[-1].bias.div_(2000)
    seen: list[torch.Tensor] = []
    handle = lda.layer_norm.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    with torch.inference_mode():
        expected = model(x)
    handle.remove()
    squares = (seen[0] - seen[0].mean(1, keepdim=True)).pow(2)
    assert float(squares.max()) > FP16_MAX  # the setup: fp16 squares would overflow
    path = export_onnx(model, tmp_path / "m.onnx", dtype="fp16")
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    types = {v.name: v.type.tensor_type.elem_type for v in graph.graph.value_info}
    moments = [n for n in graph.graph.node if "layer_norm" in n.name and n.op_type in ("Pow", "ReduceMean")]
    assert len(moments) == 3  # mean, squares, variance
    assert {types[n.input[0]] for n in moments} == {onnx.TensorProto.FLOAT}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": x.numpy()})
    assert nonfinite([out]) == 0
    torch.testing.assert_close(torch.from_numpy(out), expected, rtol=0, atol=2e-2)
