"""`spandrel-fdat inspect` and `spandrel-fdat convert`, and the modules behind them.

- inspect, text and --json, on every bundled fixture (.pth and .safetensors): the JSON keys are
  the documented ones in the documented order, and every value equals what `infer_config` and
  the descriptor say about the file's state dict;
- convert on every fixture at fp32, fp16 and bf16: the written keys are the built model's,
  floating tensors have the asked dtype and MetaUpsample stays uint8, the metadata holds the
  configuration (read back by inspect and `read_stored_config`), and the file loads through
  spandrel and `load_model` with the same configuration and output (fp32: identical; fp16/bf16:
  identical to the original with its weights rounded, and within a derived tolerance of it);
- --onnx through onnxruntime; the onnx package missing; an export that fails;
- refusals, each one line naming the file or argument: a pickle that would run code (nothing
  runs), a file that is not FDAT, truncated, missing, broken; a wrong output extension; an
  existing output without --force; --debug adds the traceback;
- `save_safetensors` over random configurations of every layout (hypothesis).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file
from spandrel import ArchRegistry, ModelLoader
from spandrel.architectures.ESRGAN import ESRGAN

import spandrel_fdat
from spandrel_fdat import FDAT, FDATConfig, FDATFileError, FDATScaleWarning, errors, infer_config, install
from spandrel_fdat.convert import CONFIG_KEY, VERSION_KEY, read_metadata, read_stored_config, save_safetensors
from spandrel_fdat.errors import SCALE_ENV
from spandrel_fdat.report import REPORT_KEYS, build_report
from tests.helpers import SMALL, assert_one_line_error, build, image
from tests.helpers import run_cli as run
from tests.test_files import CreatesFile
from tests.test_properties import fdat_kwargs

ROOT = Path(__file__).resolve().parent.parent
FIXTURES_DIR = ROOT / "fixtures"
MANIFEST: dict[str, dict[str, Any]] = json.loads((FIXTURES_DIR / "manifest.json").read_text())["fixtures"]
FILES = [pytest.param(name, ext, id=f"{name}{ext}") for name in MANIFEST for ext in (".pth", ".safetensors")]
NAMES = list(MANIFEST)
SMALL_FIXTURE = FIXTURES_DIR / "uni_pixelshuffle_x3.safetensors"  # records its scale: loads warning-free
SMALL_PTH = FIXTURES_DIR / "uni_pixelshuffle_x3.pth"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
UNIT_ROUNDOFF = {"fp32": 0.0, "fp16": 2.0**-11, "bf16": 2.0**-8}  # half the spacing of [1, 2): 2**-(mantissa bits + 1)

# The documented --json keys, in order (the README's table): changing them is a schema change.
DOCUMENTED_KEYS = [
    "schema",
    "file",
    "format",
    "file_bytes",
    "architecture",
    "layout",
    "upsampler",
    "scale",
    "scale_guessed",
    "input_channels",
    "output_channels",
    "parameters",
    "preset",
    "tags",
    "purpose",
    "config",
    "tensors",
    "dtypes",
    "meta_upsample",
    "meta_upsample_expected",
    "meta_agrees",
    "stored_config",
    "stored_version",
    "stored_config_matches",
    "stored_config_differences",
    "warnings",
]

pytestmark = [
    pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning"),
]


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.stdout + result.stderr
    return result


def scale_args(name: str) -> list[str]:
    hint = MANIFEST[name]["scale_hint"]
    return [] if hint is None else ["--scale", str(hint)]


def state_dict_of(path: Path) -> dict[str, torch.Tensor]:
    return ModelLoader().load_state_dict_from_file(path)


def loader() -> ModelLoader:
    registry = ArchRegistry()
    install(registry)
    return ModelLoader(registry=registry)


# --- inspect ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "ext"), FILES)
def test_inspect_json_equals_inference(name: str, ext: str) -> None:
    path = FIXTURES_DIR / f"{name}{ext}"
    report = json.loads(ok(run("inspect", path, "--json")).stdout)
    assert list(report) == DOCUMENTED_KEYS == list(REPORT_KEYS)

    sd = state_dict_of(path)
    inference = infer_config(sd)
    config = inference.config
    assert report["config"] == config.to_kwargs()
    assert FDATConfig.from_json(json.dumps(report["config"])) == config
    assert report["schema"] == 1 and report["architecture"] == "spandrel_fdat.FDAT"
    assert report["file"] == str(path) and report["format"] == ext[1:] and report["file_bytes"] == path.stat().st_size
    assert (report["layout"], report["upsampler"]) == (config.layout, config.upsampler_type)
    assert (report["scale"], report["scale_guessed"]) == (config.scale, inference.scale_guessed)
    assert (report["input_channels"], report["output_channels"]) == (config.num_in_ch, config.num_out_ch)
    assert report["parameters"] == sum(p.numel() for p in FDAT.from_config(config).parameters())
    assert report["preset"] == config.preset_name()
    assert report["tensors"] == len(sd)
    assert report["dtypes"] == dict(Counter(str(v.dtype).removeprefix("torch.") for v in sd.values()))
    assert report["meta_upsample"] == (list(inference.stored_meta) if inference.stored_meta else None)
    assert report["meta_agrees"] is inference.meta_agrees
    if config.layout == "uniupsample":
        assert report["meta_upsample_expected"] == config.meta_upsample()
    else:
        assert report["meta_upsample"] is report["meta_upsample_expected"] is report["meta_agrees"] is None
    assert report["stored_config"] is report["stored_version"] is report["stored_config_matches"] is None
    assert report["stored_config_differences"] == {}
    assert bool(report["warnings"]) is inference.scale_guessed
    descriptor = spandrel_fdat.load_model(path, scale=config.scale)
    assert report["tags"] == [t for t in descriptor.tags if t != "scale-guessed"] + (
        ["scale-guessed"] if inference.scale_guessed else []
    )
    assert report["purpose"] == descriptor.purpose

    # --scale (used only where the file cannot tell): the manifest's configuration
    hinted = json.loads(ok(run("inspect", path, "--json", *scale_args(name))).stdout)
    assert hinted["config"] == MANIFEST[name]["config"]
    assert hinted["scale_guessed"] is False and hinted["warnings"] == []


@pytest.mark.parametrize(("name", "ext"), FILES)
def test_inspect_text(name: str, ext: str) -> None:
    path = FIXTURES_DIR / f"{name}{ext}"
    out = ok(run("inspect", path, *scale_args(name))).stdout
    report = build_report(path, scale=MANIFEST[name]["scale_hint"])
    lines = out.splitlines()
    head = lines[: lines.index("configuration:")]
    values = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in head}
    assert list(values) == [
        "file",
        "architecture",
        "layout",
        "upsampler",
        "scale",
        "channels",
        "parameters",
        "preset",
        "tags",
        "purpose",
        "tensors",
        "MetaUpsample",
        "stored config",
    ]
    assert len({len(line) - len(line.split(":", 1)[1].lstrip()) for line in head}) == 1  # values aligned
    assert values["layout"].split()[0] == report["layout"]
    assert values["upsampler"] == report["upsampler"]
    assert values["scale"] == f"x{report['scale']}"
    assert values["channels"] == f"{report['input_channels']} in, {report['output_channels']} out"
    assert values["parameters"] == f"{report['parameters']:,}"
    assert values["tags"] == ", ".join(report["tags"])
    for dtype, count in report["dtypes"].items():
        assert f"{dtype} x{count}" in values["tensors"]
    if report["meta_upsample"] is None:
        assert values["MetaUpsample"].startswith("absent")
    elif report["meta_agrees"]:
        assert values["MetaUpsample"] == f"{report['meta_upsample']} (agrees with the shapes)"
    else:  # uni_conv_stored_x2: a conv-mode network stored as x2 is x1
        assert values["MetaUpsample"].startswith(f"{report['meta_upsample']} (disagrees with the shapes")
    config_lines = lines[len(head) + 1 :]
    assert [line.split()[0] for line in config_lines] == list(report["config"])
    assert all(line.startswith("  ") for line in config_lines)
    scale_line = next(line for line in config_lines if line.split()[0] == "scale")
    assert scale_line.split()[1] == str(report["scale"])


def test_inspect_text_says_when_the_scale_is_guessed() -> None:
    out = ok(run("inspect", FIXTURES_DIR / "lhan_nearest_conv_x2.pth")).stdout
    assert "scale:" in out and "x4 (guessed: the checkpoint does not record it; choose with --scale N)" in out
    assert "warning: this FDAT checkpoint does not record its scale" in out


def test_inspect_text_reports_meta_disagreement(tmp_path: Path) -> None:
    """MetaUpsample contradicting the shapes: reported, the shapes win."""
    sd = state_dict_of(SMALL_FIXTURE)
    sd["upsampler.MetaUpsample"] = sd["upsampler.MetaUpsample"].clone()
    sd["upsampler.MetaUpsample"][5] = 99  # mid_dim stored wrong
    path = tmp_path / "meta.safetensors"
    save_file(sd, str(path))
    report = build_report(path)
    assert report["meta_agrees"] is False and report["meta_upsample"][5] == 99
    assert report["meta_upsample_expected"] == infer_config(state_dict_of(SMALL_FIXTURE)).config.meta_upsample()
    assert "disagrees with the shapes" in ok(run("inspect", path)).stdout


# --- convert: round trips ------------------------------------------------------------------------------------
def _tolerance(reference: torch.Tensor, dtype: str, float_tensors: int) -> float:
    """How far a network's output may move when its weights are rounded to `dtype`.

    Rounding a weight to a format with unit roundoff u changes it by a relative error <= u.
    To first order, each of the n rounded tensors then moves the output by at most u times the
    size of what that tensor contributes to it, which in these O(1)-gain networks (LayerNorm
    before every attention and FFN, residual sums) is bounded by the output's own scale
    max(1, max|y|). The first-order errors add: |dy| <= n * u * max(1, max|y|). Measured on all
    fixtures the largest |dy| is under 0.09 of this bound (fp16 and bf16 alike).
    """
    return float_tensors * UNIT_ROUNDOFF[dtype] * max(1.0, reference.abs().max().item())


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", NAMES)
def test_convert_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, dtype: str) -> None:
    # alternate the source format over fixtures and dtypes: both readers are covered at every dtype
    ext = (".pth", ".safetensors")[(NAMES.index(name) + list(DTYPES).index(dtype)) % 2]
    source = FIXTURES_DIR / f"{name}{ext}"
    out = tmp_path / "clean.safetensors"
    result = ok(run("convert", source, out, "--dtype", dtype, *scale_args(name)))
    assert f"wrote {out} ({dtype}" in result.stdout and result.stderr == ""

    original = spandrel_fdat.load_model(source, scale=MANIFEST[name]["scale_hint"])
    config = original.model.config
    assert config.to_kwargs() == MANIFEST[name]["config"]
    canonical = original.model.state_dict()

    with safe_open(str(out), framework="pt") as handle:
        assert set(handle.keys()) == set(canonical)
        stored = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - safe_open has no __iter__
        metadata = handle.metadata()
    for key, value in stored.items():
        if key == "upsampler.MetaUpsample":
            assert value.dtype == torch.uint8 and value.tolist() == config.meta_upsample()
        else:
            assert value.dtype == DTYPES[dtype], key
            assert torch.equal(value, canonical[key].to(DTYPES[dtype])), key  # a plain cast, nothing else
    assert metadata[CONFIG_KEY] == config.to_json() and metadata[VERSION_KEY] == spandrel_fdat.__version__
    assert read_stored_config(out) == config

    # loads back with the same configuration: load_model, and spandrel's loader after install()
    reloaded = spandrel_fdat.load_model(out, scale=MANIFEST[name]["scale_hint"])
    if MANIFEST[name]["scale_hint"] is not None:
        monkeypatch.setenv(spandrel_fdat.SCALE_ENV, str(MANIFEST[name]["scale_hint"]))
    via_spandrel = loader().load_from_file(out)
    assert reloaded.model.config == via_spandrel.model.config == config
    assert via_spandrel.architecture.id == "spandrel_fdat.FDAT"

    x = image(config.num_in_ch, 11, 9, seed=3)
    rounded = FDAT.from_config(config).eval()
    rounded.load_state_dict({k: v.to(DTYPES[dtype]).to(v.dtype) for k, v in canonical.items()})
    with torch.inference_mode():
        expected, got, got_spandrel, exact = original.model(x), reloaded.model(x), via_spandrel.model(x), rounded(x)
    assert torch.equal(got, got_spandrel)
    assert torch.equal(got, exact)  # the file holds exactly the rounded weights
    if dtype == "fp32":
        assert torch.equal(got, expected)
    else:
        n = sum(1 for v in canonical.values() if v.is_floating_point())
        torch.testing.assert_close(got, expected, rtol=0, atol=_tolerance(expected, dtype, n))

    # inspect reads the metadata back: equal to the inferred configuration
    report = json.loads(ok(run("inspect", out, "--json", *scale_args(name))).stdout)
    assert report["stored_config"] == config.to_kwargs() == report["config"]
    assert report["stored_version"] == spandrel_fdat.__version__
    assert report["stored_config_matches"] is True and report["stored_config_differences"] == {}
    expected_dtypes = Counter(
        str(DTYPES[dtype]).removeprefix("torch.") for k in stored if k != "upsampler.MetaUpsample"
    )
    if "upsampler.MetaUpsample" in stored:
        expected_dtypes["uint8"] += 1
    assert report["dtypes"] == dict(sorted(expected_dtypes.items()))
    assert "present, equal to the inferred configuration" in ok(run("inspect", out, *scale_args(name))).stdout


def test_converted_files_get_the_usual_permissions(tmp_path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    out = tmp_path / "model.safetensors"
    ok(run("convert", SMALL_FIXTURE, out))
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would create it, not mkstemp's 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temporary file left


def test_convert_default_dtype_is_fp32_and_fp16_input_is_widened(tmp_path: Path) -> None:
    source = FIXTURES_DIR / "host_fp16_pixelshuffle_x2.safetensors"
    assert build_report(source)["dtypes"] == {"float16": 41}
    out = tmp_path / "wide.safetensors"
    ok(run("convert", source, out))
    assert build_report(out)["dtypes"] == {"float32": 40, "uint8": 1}  # MetaUpsample back to canonical uint8


def test_a_stored_scale_is_used_where_the_shapes_cannot_tell(tmp_path: Path) -> None:
    source = FIXTURES_DIR / "lhan_nearest_conv_x2.pth"
    assert build_report(source)["scale_guessed"] is True  # nearest_conv stores no scale
    recorded_x2 = tmp_path / "lhan_x2.safetensors"
    ok(run("convert", source, recorded_x2, "--scale", "2"))
    report = build_report(recorded_x2)
    assert (report["scale"], report["scale_guessed"], report["stored_config_matches"]) == (2, False, True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scale-guessed warning either
        assert spandrel_fdat.load_model(recorded_x2).scale == 2
    # an explicit scale still wins; the stored one is then reported as different
    report = build_report(recorded_x2, scale=3)
    assert report["scale"] == 3 and report["stored_config_differences"] == {"scale": {"stored": 2, "inferred": 3}}


def test_convert_of_a_guessed_scale_names_the_hosts_remedy_in_their_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The note names the host remedy in the same words as the warning a host shows."""
    monkeypatch.delenv(SCALE_ENV, raising=False)
    result = run("convert", FIXTURES_DIR / "lhan_nearest_conv_x2.pth", tmp_path / "m.safetensors")
    ok(result)
    with pytest.warns(FDATScaleWarning) as record, errors.interface("host"):
        spandrel_fdat.load_model(FIXTURES_DIR / "lhan_nearest_conv_x2.pth")
    host_remedy = str(record[0].message).split("Choose with ", 1)[1].rstrip(".")
    assert SCALE_ENV in host_remedy and "Load Upscale Model (FDAT)" in host_remedy
    assert f"choose with {host_remedy}" in " ".join(result.stderr.split())


def test_stored_config_that_disagrees_with_the_shapes(tmp_path: Path) -> None:
    """The shapes are the truth: the file loads as the shapes say; inspect reports the difference."""

    # a stored configuration that no shape supports at all
    sd = state_dict_of(SMALL_FIXTURE)
    config = infer_config(sd).config
    wrong = FDATConfig(**{**config.to_kwargs(), "embed_dim": 32, "group_block_pattern": ("spatial", "channel")})
    path = tmp_path / "lying.safetensors"
    save_file(sd, str(path), metadata={CONFIG_KEY: wrong.to_json(), VERSION_KEY: "9.9"})
    assert read_stored_config(path) == wrong
    assert spandrel_fdat.load_model(path).model.config == config  # loading ignores the stored configuration
    report = build_report(path)
    assert report["config"] == config.to_kwargs() and report["stored_version"] == "9.9"
    assert report["stored_config_differences"] == {"embed_dim": {"stored": 32, "inferred": 16}}
    assert any("disagrees with the tensor shapes in embed_dim" in w for w in report["warnings"])
    text = ok(run("inspect", path)).stdout
    assert "present, differs from the inferred configuration in embed_dim 32 (shapes: 16)" in text


def test_invalid_stored_config(tmp_path: Path) -> None:
    sd = state_dict_of(SMALL_FIXTURE)
    path = tmp_path / "garbled.safetensors"
    save_file(sd, str(path), metadata={CONFIG_KEY: '{"embed_dim": "many"'})
    with pytest.raises(FDATFileError, match=f"metadata '{CONFIG_KEY}': expected an FDAT configuration") as info:
        read_stored_config(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    report = build_report(path)  # inspect still describes the checkpoint
    assert report["stored_config"] is None and any("not a valid FDAT configuration" in w for w in report["warnings"])


def test_read_stored_config_without_one() -> None:
    assert read_stored_config(SMALL_PTH) is None and read_metadata(SMALL_PTH) == {}
    assert read_stored_config(SMALL_FIXTURE) is None


# --- save_safetensors ------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(kwargs=fdat_kwargs(), dtype=st.sampled_from([None, *DTYPES.values()]), seed=st.integers(0, 2**16))
def test_save_safetensors_round_trips_any_configuration(
    tmp_path_factory: pytest.TempPathFactory, kwargs: dict[str, Any], dtype: torch.dtype | None, seed: int
) -> None:
    model = build(seed, **kwargs)
    config = model.config
    path = save_safetensors(model, tmp_path_factory.mktemp("save") / "m.safetensors", config, dtype)
    assert read_stored_config(path) == config
    sd = state_dict_of(path)
    assert infer_config(sd, scale=config.scale).config == config
    assert {v.dtype for k, v in sd.items() if k != "upsampler.MetaUpsample"} == {dtype or torch.float32}
    report = build_report(path, scale=config.scale)
    assert report["stored_config_matches"] is True and report["config"] == config.to_kwargs()


def test_save_safetensors_takes_a_training_model_a_descriptor_or_a_state_dict(tmp_path: Path) -> None:
    model = build(1, **SMALL, scale=2, upsampler_type="pixelshuffle").train()
    config = model.config
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    for i, source in enumerate((model, spandrel_fdat.load_model(weights), weights)):
        path = save_safetensors(source, tmp_path / f"{i}.safetensors", config, torch.float16)
        assert read_stored_config(path) == config
        loaded = state_dict_of(path)
        assert all(torch.equal(loaded[k], v.to(loaded[k].dtype)) for k, v in weights.items())
    assert model.training  # left as it was
    # an existing file is replaced whole, and no temporary file is left behind
    save_safetensors(model, tmp_path / "0.safetensors", config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.safetensors", "1.safetensors", "2.safetensors"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"img_range": 255.0}, "img_range=255.0 (the shapes give 1.0)"),
        ({"norm_eps": 1e-3}, "norm_eps=0.001 (the shapes give 1e-05)"),
        ({"embed_dim": 48, "num_heads": 2}, "embed_dim=48 (the shapes give 24)"),
        ({"scale": 4}, "scale=4 (the shapes give 2)"),
    ],
    ids=["img_range", "norm_eps", "embed_dim", "scale"],
)
def test_save_safetensors_refuses_a_configuration_the_file_would_not_load_as(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    model = build(0, **SMALL, scale=2, upsampler_type="pixelshuffle")
    config = FDATConfig(**{**model.config.to_kwargs(), **change, "group_block_pattern": ("spatial", "channel")})
    path = tmp_path / "m.safetensors"
    with pytest.raises(ValueError) as info:
        save_safetensors(model, path, config)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_save_safetensors_refuses_other_inputs(tmp_path: Path) -> None:
    model = build(0, **SMALL, scale=2, upsampler_type="pixelshuffle")
    with pytest.raises(ValueError, match="floating-point dtype"):
        save_safetensors(model, tmp_path / "a.safetensors", model.config, torch.int8)
    with pytest.raises(ValueError, match="not an FDAT network"):
        save_safetensors({"conv.weight": torch.zeros(1)}, tmp_path / "a.safetensors", model.config)
    with pytest.raises(TypeError, match="FDATConfig"):
        save_safetensors(model, tmp_path / "a.safetensors", model.config.to_kwargs())  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


# --- convert --onnx ---------------------------------------------------------------------------------------------
def test_convert_onnx_matches_pytorch(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    out, graph = tmp_path / "m.safetensors", tmp_path / "m.onnx"
    result = ok(run("convert", SMALL_PTH, out, "--dtype", "bf16", "--onnx", graph, "--onnx-dtype", "fp32"))
    assert f"wrote {graph} (ONNX" in result.stdout
    model = spandrel_fdat.load_model(SMALL_PTH).model  # the graph is float32, from the checkpoint's weights
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    for batch, h, w in ((1, 12, 10), (2, 7, 9)):
        x = torch.cat([image(3, h, w, seed=i) for i in range(batch)])
        with torch.inference_mode():
            expected = model(x)
        (got,) = session.run(None, {"input": x.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), expected, rtol=0, atol=1e-4)
    assert build_report(out)["dtypes"] == {"bfloat16": 40, "uint8": 1}


def test_convert_onnx_without_the_onnx_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # importlib.util.find_spec("onnx") is then None
    out, graph = tmp_path / "m.safetensors", tmp_path / "m.onnx"
    assert_one_line_error(
        run("convert", SMALL_FIXTURE, out, "--onnx", graph), "--onnx", "pip install 'spandrel-fdat[onnx]'"
    )
    assert list(tmp_path.iterdir()) == []


def test_convert_onnx_export_failure_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("Exporting the operator 'aten::frobnicate' to ONNX opset\nversion 17 is not supported")

    monkeypatch.setattr(spandrel_fdat.export, "export_onnx", fail)
    out, graph = tmp_path / "m.safetensors", tmp_path / "m.onnx"
    assert_one_line_error(
        run("convert", SMALL_FIXTURE, out, "--onnx", graph),
        f"--onnx {graph}: the uniupsample pixelshuffle x3 model could not be exported to ONNX",
        "aten::frobnicate",
    )
    assert list(tmp_path.iterdir()) == []


def test_convert_onnx_wrong_extension(tmp_path: Path) -> None:
    assert_one_line_error(
        run("convert", SMALL_FIXTURE, tmp_path / "m.safetensors", "--onnx", tmp_path / "m.pb"),
        "--onnx: expected a path ending in .onnx",
    )
    assert list(tmp_path.iterdir()) == []


# --- refusals -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".pth", ".ckpt"])
def test_pickle_that_would_run_code_is_refused(tmp_path: Path, ext: str) -> None:
    marker = tmp_path / "created-by-the-pickle"
    weights = torch.load(SMALL_PTH, weights_only=True)
    evil = tmp_path / f"evil{ext}"
    torch.save({"params_ema": {**weights, "conv_after.weight": CreatesFile(marker)}}, evil)
    out = tmp_path / "out.safetensors"
    for args in (("convert", evil, out), ("inspect", evil), ("inspect", evil, "--json")):
        assert_one_line_error(run(*args), str(evil), "refused, nothing in it was run")
        assert not marker.exists() and not out.exists()
    torch.load(evil, weights_only=False)  # the control: unrestricted, the pickle does run
    assert marker.exists()


@pytest.mark.parametrize("ext", [".pth", ".safetensors"])
def test_not_fdat(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"esrgan{ext}"
    weights = ESRGAN(num_filters=8, num_blocks=1, scale=2).state_dict()
    save_file(weights, str(path)) if ext == ".safetensors" else torch.save(weights, path)
    out = tmp_path / "out.safetensors"
    for args in (("inspect", path), ("inspect", path, "--json"), ("convert", path, out)):
        assert_one_line_error(
            run(*args), str(path), "not an FDAT checkpoint: it has model.*", "(keys outside the FDAT layout)"
        )
    assert not out.exists()


@pytest.mark.parametrize("source", [SMALL_PTH, SMALL_FIXTURE], ids=["pth", "safetensors"])
def test_truncated(tmp_path: Path, source: Path) -> None:
    path = tmp_path / f"cut{source.suffix}"
    path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    out = tmp_path / "out.safetensors"
    for args in (("inspect", path), ("convert", path, out)):
        assert_one_line_error(run(*args), str(path), "truncated")
    assert not out.exists()


def test_missing(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.pth"
    for args in (("inspect", path, "--json"), ("convert", path, tmp_path / "out.safetensors")):
        assert_one_line_error(run(*args), str(path), "no such file")
    assert list(tmp_path.iterdir()) == []


def test_broken_fdat_checkpoint_names_the_file_and_key(tmp_path: Path) -> None:
    sd = state_dict_of(SMALL_FIXTURE)
    del sd["groups.0.blocks.0.ffn.fc2.weight"]
    path = tmp_path / "broken.safetensors"
    save_file(sd, str(path))
    for args in (("inspect", path), ("convert", path, tmp_path / "out.safetensors")):
        assert_one_line_error(run(*args), str(path), "groups.0.blocks.0.ffn.fc2.weight: missing")


@pytest.mark.parametrize("name", ["out.pth", "out.safetensors.tmp", "out"])
def test_wrong_output_extension(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    assert_one_line_error(run("convert", SMALL_FIXTURE, out), "OUT.safetensors: expected a path ending in .safetensors")
    assert not out.exists()


def test_existing_outputs_need_force(tmp_path: Path) -> None:
    out, graph = tmp_path / "m.safetensors", tmp_path / "m.onnx"
    out.write_bytes(b"precious")
    assert_one_line_error(run("convert", SMALL_FIXTURE, out), str(out), "already exists", "--force")
    assert out.read_bytes() == b"precious"

    out.unlink()
    graph.write_bytes(b"precious")
    assert_one_line_error(run("convert", SMALL_FIXTURE, out, "--onnx", graph), str(graph), "already exists", "--force")
    assert graph.read_bytes() == b"precious" and not out.exists()

    out.write_bytes(b"precious")
    ok(run("convert", SMALL_FIXTURE, out, "--force"))
    assert read_stored_config(out) == infer_config(state_dict_of(SMALL_FIXTURE)).config
    # converting a file onto itself works with --force: it is read before it is replaced
    ok(run("convert", out, out, "--dtype", "fp16", "--force"))
    assert build_report(out)["dtypes"] == {"float16": 40, "uint8": 1}


def test_output_folder_must_exist(tmp_path: Path) -> None:
    out = tmp_path / "missing" / "m.safetensors"
    assert_one_line_error(run("convert", SMALL_FIXTURE, out), str(out), "does not exist")


def test_bad_flag_values_are_one_line_usage_errors(tmp_path: Path) -> None:
    assert_one_line_error(run("convert", SMALL_FIXTURE, tmp_path / "m.safetensors", "--dtype", "fp8"), "--dtype", "fp8")
    assert_one_line_error(run("inspect", SMALL_FIXTURE, "--scale", "0"), "--scale")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["inspect", "convert"])
def test_debug_prints_the_traceback(tmp_path: Path, command: str) -> None:
    path = tmp_path / "nowhere.safetensors"
    args: list[str | Path] = [command, path]
    if command == "convert":
        args.append(tmp_path / "out.safetensors")
    plain = run(*args)
    assert_one_line_error(plain, "no such file")
    debug = run(*args, "--debug")
    assert debug.exit_code == 2
    assert "Traceback (most recent call last)" in debug.stderr and "FDATFileError" in debug.stderr
    assert debug.stderr.splitlines()[-1] == plain.stderr.strip()


def test_the_commands_are_listed_and_documented() -> None:
    listing = ok(run("--help")).stdout
    assert "inspect" in listing and "convert" in listing
    for command, flags in (
        ("inspect", ["--json", "--scale", "--debug"]),
        ("convert", ["--dtype", "--onnx", "--force"]),
    ):
        text = ok(run(command, "--help")).stdout
        assert all(flag in text for flag in flags), text


def test_converted_file_copies_load_in_spandrel_without_the_package_metadata(tmp_path: Path) -> None:
    """The metadata is extra: a copy whose metadata was dropped by another tool still loads as the same network."""
    out = tmp_path / "m.safetensors"
    ok(run("convert", SMALL_FIXTURE, out))
    stripped = tmp_path / "stripped.safetensors"
    save_file(state_dict_of(out), str(stripped))
    assert read_stored_config(stripped) is None
    assert loader().load_from_file(stripped).model.config == read_stored_config(out)
    shutil.copy(out, tmp_path / "copy.safetensors")
    assert read_stored_config(tmp_path / "copy.safetensors") == read_stored_config(out)
