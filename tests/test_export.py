"""ONNX export (onnxruntime vs PyTorch at two sizes) and torch.compile (no graph breaks, same output)."""

from __future__ import annotations

import collections
import io
import json
import warnings
from pathlib import Path
from typing import Any, Literal

import pytest
import torch

from spandrel_fdat import FDAT, export_onnx, load_model
from spandrel_fdat.sampling import grid_sample
from tests.helpers import SMALL, assert_one_line_error, build, image, run_cli

ort = pytest.importorskip("onnxruntime")

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FIXTURE_NAMES = sorted(json.loads((FIXTURES / "manifest.json").read_text())["fixtures"])

LAYOUTS: list[dict[str, Any]] = [
    *(
        dict(upsampler_type=up, scale=2)
        for up in ("conv", "pixelshuffledirect", "pixelshuffle", "nearest+conv", "dysample", "transpose+conv", "lda")
    ),
    dict(upsampler_type="pa_up", scale=3),
    dict(upsampler_type="pixelshuffle", scale=1, unshuffle_mod=True),
    dict(upsampler_type="dysample", scale=2, unshuffle_mod=True),
    dict(upsampler_type="pixelshuffle", scale=2, group_block_pattern=["channel", "spatial", "spatial"]),
    dict(layout="lhan", upsampler_type="nearest+conv", scale=3),
    dict(layout="lhan", upsampler_type="pixelshuffle", scale=2),
    dict(layout="lhan", upsampler_type="transpose+conv", scale=4),
    dict(layout="standalone", upsampler_type="pixelshuffle", scale=4),
    dict(layout="standalone", upsampler_type="pixelshuffle", scale=3),
    dict(layout="standalone", upsampler_type="transpose+conv", scale=4),
]


def _id(kw: dict[str, Any]) -> str:
    return "-".join(f"{v}" for v in kw.values() if not isinstance(v, list)) + (
        "-pattern" if "group_block_pattern" in kw else ""
    )


@pytest.mark.parametrize("kwargs", LAYOUTS, ids=_id)
def test_onnx_matches_pytorch_at_two_sizes(kwargs: dict[str, Any], tmp_path: Path) -> None:
    model = build(**SMALL, **kwargs)
    path = export_onnx(model, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # one size not a multiple of the window (4) nor of the unshuffle factor, batch 2 on the second
    for batch, h, w in ((1, 20, 24), (2, 13, 9)):
        x = torch.cat([image(3, h, w, seed=i) for i in range(batch)])
        with torch.inference_mode():
            expected = model(x)
        (out,) = session.run(None, {"input": x.numpy()})
        assert out.shape == tuple(expected.shape)
        torch.testing.assert_close(torch.from_numpy(out), expected, rtol=0, atol=1e-4)
    assert not model.training  # export leaves the model as it found it


def test_export_rejects_other_models(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="FDAT model"):
        export_onnx(torch.nn.Conv2d(3, 3, 3), tmp_path / "x.onnx")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(upsampler_type="pixelshuffle", scale=2),
        dict(upsampler_type="dysample", scale=2, unshuffle_mod=True),
        dict(upsampler_type="nearest+conv", scale=2),  # upsamplers.nearest_conv_phases, then conv_phases
    ],
    ids=_id,
)
def test_torch_compile_has_no_graph_breaks_and_same_output(kwargs: dict[str, Any]) -> None:
    model = build(**SMALL, **kwargs)
    x = image(3, 13, 11)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1
    compiled = torch.compile(model, backend="aot_eager", dynamic=True)
    with torch.inference_mode():
        for h, w in ((13, 11), (16, 20)):
            x = image(3, h, w)
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)


def test_compile_takes_the_graph_forms() -> None:
    """Under torch.compile in inference, the network takes tracing's out-of-place forms: no
    in-place GELU, no window partition written into a fresh tensor (they made compiling slower)."""
    graphs: list[torch.fx.GraphModule] = []

    def record(gm: torch.fx.GraphModule, _: Any) -> Any:
        graphs.append(gm)
        return gm.forward

    model = build(**SMALL, upsampler_type="pixelshuffle", scale=2)
    x = image(3, 13, 11)
    with torch.inference_mode():
        torch.testing.assert_close(torch.compile(model, backend=record)(x), model(x), rtol=1e-5, atol=1e-5)
    assert len(graphs) == 1
    targets = {getattr(n.target, "__name__", str(n.target)) for n in graphs[0].graph.nodes if n.op != "placeholder"}
    assert "gelu" in targets and "pad" in targets
    assert not targets & {"gelu_", "new_empty", "addmm_"}


def test_training_step_runs() -> None:
    """The inference-first module still trains: gradients reach the window bias and every used weight.

    As upstream, a spatial block uses only its AIM channel gate (cg) and a channel block only its
    spatial gate (sg); the other gate's weights exist in checkpoints but get no gradient.
    """
    model = FDAT(**SMALL, upsampler_type="pixelshuffle", scale=2).train()
    out = model(image(3, 12, 12))
    out.square().mean().backward()
    unused = {
        f"groups.{g}.blocks.{b}.inter.{gate}"
        for g, group in enumerate(model.groups)
        for b, block in enumerate(group.blocks)
        for gate in (["sg.0.weight"] if block.block_type == "spatial" else ["cg.1.weight", "cg.3.weight"])
    }
    no_grad = {name for name, p in model.named_parameters() if p.grad is None}
    assert no_grad == unused
    assert float(model.groups[0].blocks[0].attn.bias.grad.abs().sum()) > 0


@pytest.mark.parametrize("kwargs", LAYOUTS, ids=_id)
def test_a_batch_is_its_images(kwargs: dict[str, Any]) -> None:
    """Batch of 3 = the 3 images one by one (upstream's LDA cannot even run a batch)."""
    model = build(**SMALL, **kwargs)
    x = torch.cat([image(3, 13, 9, seed=i) for i in range(3)])
    with torch.inference_mode():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_chainner_style_export_of_every_fixture_runs_at_other_sizes(name: str) -> None:
    """chaiNNer's "Convert to ONNX" pattern: torch.onnx.export of the module itself at opset 14
    (no GridSample), dynamic batch/height/width, a 3x3 dummy input. The graph then runs at two
    sizes other than the traced one and matches PyTorch (standalone pixelshuffle once baked the
    traced size into a Reshape; DySample and LDA need the gather form of grid sampling below 16)."""
    buffer = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LHAN nearest_conv's scale warning; tracer chatter
        model = load_model(FIXTURES / f"{name}.safetensors")
        net, c = model.model, model.input_channels
        torch.onnx.export(
            net,
            (torch.rand(1, c, 3, 3),),
            buffer,
            opset_version=14,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": axes, "output": axes},
            dynamo=False,
        )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for h, w in ((20, 24), (13, 9)):
        x = image(c, h, w)
        with torch.inference_mode():
            expected = net(x)
        (out,) = session.run(None, {"input": x.numpy()})
        torch.testing.assert_close(torch.from_numpy(out), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize(("padding_mode", "align_corners"), [("border", False), ("zeros", True)])
def test_gather_grid_sample_equals_torch(padding_mode: Literal["zeros", "border"], align_corners: bool) -> None:
    """The exportable bilinear sampling gives grid_sample's numbers, points outside the image included."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 7, 9, generator=gen)
    grid = torch.rand(3, 11, 6, 2, generator=gen) * 2.6 - 1.3  # up to 0.3 outside [-1, 1]
    got = grid_sample(x, grid, padding_mode=padding_mode, align_corners=align_corners, gather=True)
    expected = grid_sample(x, grid, padding_mode=padding_mode, align_corners=align_corners, gather=False)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_fp16_graph_with_fp32_or_fp16_io_runs_in_onnxruntime(tmp_path: Path) -> None:
    """A native fp16 graph loads in onnxruntime and stays near the fp32 model; the model exported
    is a copy (the caller's keeps its dtype and mode)."""
    model = build(**SMALL, upsampler_type="dysample", scale=2).train()
    x = image(3, 20, 24)
    with torch.inference_mode():
        expected = model.eval()(x)
    model.train()
    for io_dtype in ("fp32", "fp16"):
        path = export_onnx(model, tmp_path / f"{io_dtype}.onnx", dtype="fp16", io_dtype=io_dtype)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (out,) = session.run(None, {"input": x.numpy().astype("float16" if io_dtype == "fp16" else "float32")})
        assert out.dtype.name == ("float16" if io_dtype == "fp16" else "float32")
        torch.testing.assert_close(torch.from_numpy(out).float(), expected, rtol=0, atol=2e-2)
    assert model.training and next(model.parameters()).dtype == torch.float32


def test_static_graph_has_fixed_shapes(tmp_path: Path) -> None:
    model = build(**SMALL, upsampler_type="pixelshuffle", scale=2)
    session = ort.InferenceSession(str(export_onnx(model, tmp_path / "s.onnx", static=(20, 24))))
    assert session.get_inputs()[0].shape == [1, 3, 20, 24]
    assert session.get_outputs()[0].shape == [1, 3, 40, 48]
    x = image(3, 20, 24)
    with torch.inference_mode():
        expected = model(x)
    (out,) = session.run(None, {"input": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(dtype="fp8"), "dtype='fp8'; choose one of fp32, fp16, bf16"),
        (dict(opset=13), "opset 13 is too old; choose 14 or newer"),
        (dict(static=(0, 8)), "static=\\(0, 8\\); give \\(height, width\\)"),
    ],
)
def test_export_rejects_bad_options_in_one_line(kwargs: dict[str, Any], message: str, tmp_path: Path) -> None:
    model = build(**SMALL, upsampler_type="conv", scale=2)
    with pytest.raises(ValueError, match=message):
        export_onnx(model, tmp_path / "x.onnx", **kwargs)


def test_convert_cli_writes_a_static_fp16_graph(tmp_path: Path) -> None:
    out, graph = tmp_path / "m.safetensors", tmp_path / "m.onnx"
    source = FIXTURES / "uni_pixelshuffle_x3.safetensors"
    args = ("--onnx", graph, "--onnx-dtype", "fp16", "--onnx-io", "fp16", "--static", "12x10", "--opset", "14")
    result = run_cli("convert", source, out, *args)
    assert result.exit_code == 0, result.output
    assert "opset 14, fp16 with fp16 input/output, static 1x12x10" in result.stdout
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 12, 10]
    x = image(3, 12, 10)
    with torch.inference_mode():
        expected = load_model(source).model(x)
    (out_image,) = session.run(None, {"input": x.numpy().astype("float16")})
    torch.testing.assert_close(torch.from_numpy(out_image).float(), expected, rtol=0, atol=2e-2)


def test_convert_cli_rejects_a_bad_static_size(tmp_path: Path) -> None:
    source = FIXTURES / "uni_pixelshuffle_x3.safetensors"
    result = run_cli("convert", source, tmp_path / "m.safetensors", "--onnx", tmp_path / "m.onnx", "--static", "12by10")
    assert_one_line_error(result, "--static", "HEIGHTxWIDTH")


# Nodes per block of the exported graph as onnx_shapes' forms write it (measured at opset 17: 69-71
# per spatial block, 70-71 per channel block; before, shape arithmetic added about 200 per block),
# per group (its conv, two layout transposes, the residual add) and once per graph (the window
# shapes, conv_first, conv_after, the upsampler, initializers the exporter merged: 47 here).
NODES_PER_SPATIAL_BLOCK, NODES_PER_CHANNEL_BLOCK, NODES_PER_GROUP, NODES_ONCE = 72, 72, 4, 60


def test_exported_graph_is_lean(tmp_path: Path) -> None:
    """medium's structure (groups of spatial and channel blocks, transpose+conv x2) at a small width:
    no control flow, the sizes read once (one Shape node, no Gather/Unsqueeze per block), a node
    count bounded by the block count, and onnxruntime within 1e-4 of PyTorch at two odd sizes."""
    import onnx

    model = build(**{**SMALL, "num_groups": 2, "depth_per_group": 2}, upsampler_type="transpose+conv", scale=2)
    path = export_onnx(model, tmp_path / "lean.onnx")
    ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert not ops.keys() & {"If", "Loop", "EyeLike", "CumSum"}
    assert ops["Shape"] == 1 and ops["Gather"] == 0
    blocks = [block.block_type for group in model.groups for block in group.blocks]
    bound = (
        NODES_PER_SPATIAL_BLOCK * blocks.count("spatial")
        + NODES_PER_CHANNEL_BLOCK * blocks.count("channel")
        + NODES_PER_GROUP * len(model.groups)
        + NODES_ONCE
    )
    assert sum(ops.values()) <= bound, ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, h, w in ((1, 19, 23), (2, 9, 13)):  # neither a multiple of the window (4)
        x = torch.cat([image(3, h, w, seed=i) for i in range(batch)])
        with torch.inference_mode():
            expected = model(x)
        (out,) = session.run(None, {"input": x.numpy()})
        torch.testing.assert_close(torch.from_numpy(out), expected, rtol=0, atol=1e-4)
