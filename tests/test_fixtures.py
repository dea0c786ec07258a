"""The bundled checkpoints in fixtures/: every one loads through spandrel with the configuration it was built with.

fixtures/make_fixtures.py wrote them and fixtures/manifest.json records, per
file, the wrapper, the class that built the state dict, its constructor
arguments and the canonical configuration. UniUpsample fixtures were built
with spandrel 0.4.2's own FDAT, which also serves as the oracle for outputs.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import spandrel
import torch
from safetensors.torch import load_file

import spandrel_fdat
from spandrel_fdat.inference import DEFAULT_GUESSED_SCALE
from tests.helpers import image, reference_dysample_on_cpu

ROOT = Path(__file__).resolve().parent.parent
FIXTURES_DIR = ROOT / "fixtures"
MANIFEST = json.loads((FIXTURES_DIR / "manifest.json").read_text())

HAS_REFERENCE = importlib.util.find_spec("spandrel.architectures.FDAT") is not None
needs_reference = pytest.mark.skipif(not HAS_REFERENCE, reason="spandrel < 0.4.2 has no FDAT class to compare with")


def _import_generator() -> ModuleType:
    name = "make_fixtures"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, FIXTURES_DIR / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


make_fixtures = _import_generator()

CASES = [
    pytest.param(filename, entry, info, id=filename)
    for entry in MANIFEST["fixtures"].values()
    for filename, info in entry["files"].items()
]
REFERENCE_CASES = [case for case in CASES if case.values[1]["source"] == make_fixtures.REFERENCE]
STORED_SCALE_CASES = [case for case in CASES if case.values[1]["scale_hint"] is None]
GUESSED_SCALE_CASES = [case for case in CASES if case.values[1]["scale_hint"] is not None]


@pytest.fixture(autouse=True)
def _installed(monkeypatch: pytest.MonkeyPatch) -> None:
    spandrel_fdat.install()
    monkeypatch.delenv(spandrel_fdat.SCALE_ENV, raising=False)


def read_file(path: Path) -> dict[str, Any]:
    """The file's contents as saved (wrapper included), tensors only."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def stored_state_dict(filename: str, info: dict[str, Any]) -> dict[str, torch.Tensor]:
    return make_fixtures.unwrap(read_file(FIXTURES_DIR / filename), info["wrapper"])


def check_descriptor(desc: Any, config: dict[str, Any], filename: str, info: dict[str, Any]) -> torch.Tensor:
    """Architecture, configuration, sizes, loaded weights and a forward pass; returns the output."""
    assert isinstance(desc, spandrel.ImageModelDescriptor)
    assert desc.architecture.id == spandrel_fdat.ARCH_ID
    assert desc.architecture.name == "FDAT"
    assert isinstance(desc.model, spandrel_fdat.FDAT)
    assert desc.model.config.to_kwargs() == config
    assert desc.scale == config["scale"]
    assert desc.input_channels == config["num_in_ch"]
    assert desc.output_channels == config["num_out_ch"]

    # every stored tensor went into the model (MetaUpsample is rewritten in canonical form)
    stored = stored_state_dict(filename, info)
    loaded = desc.model.state_dict()
    assert set(loaded) == set(stored)
    for key, value in stored.items():
        if key != "upsampler.MetaUpsample":
            assert torch.equal(loaded[key], value.to(loaded[key].dtype)), key

    x = image(config["num_in_ch"], 13, 11)
    with torch.no_grad():
        out = desc.model(x)
    s = config["scale"]
    assert out.shape == (1, config["num_out_ch"], 13 * s, 11 * s)
    assert torch.isfinite(out).all()
    return out


def load(filename: str) -> Any:
    return spandrel.ModelLoader().load_from_file(FIXTURES_DIR / filename)


def test_manifest_lists_every_fixture_file() -> None:
    on_disk = {p.name for p in FIXTURES_DIR.iterdir() if p.suffix in (".pth", ".safetensors")}
    listed = {filename for entry in MANIFEST["fixtures"].values() for filename in entry["files"]}
    assert on_disk == listed
    assert sorted(MANIFEST["fixtures"]) == sorted(f.name for f in make_fixtures.FIXTURES)


@pytest.mark.parametrize(("filename", "entry", "info"), STORED_SCALE_CASES)
def test_fixture_loads_with_its_configuration(filename: str, entry: dict[str, Any], info: dict[str, Any]) -> None:
    desc = load(filename)  # an FDATScaleWarning would be an error here (pyproject filterwarnings)
    assert "scale-guessed" not in desc.tags
    check_descriptor(desc, entry["config"], filename, info)


@needs_reference
@pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning")  # spandrel 0.4.2's DySample
@pytest.mark.parametrize(("filename", "entry", "info"), REFERENCE_CASES)
def test_fixture_output_matches_spandrel_reference(filename: str, entry: dict[str, Any], info: dict[str, Any]) -> None:
    from spandrel.architectures.FDAT import FDAT as ReferenceFDAT

    ours = check_descriptor(load(filename), entry["config"], filename, info)
    reference = ReferenceFDAT(**entry["kwargs"]).eval()
    reference.load_state_dict(dict(stored_state_dict(filename, info)))  # it writes into the dict it is given
    x = image(entry["config"]["num_in_ch"], 13, 11)
    with torch.no_grad(), reference_dysample_on_cpu():
        expected = reference(x)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("filename", "entry", "info"), GUESSED_SCALE_CASES)
def test_fixture_without_stored_scale_warns_and_is_tagged(
    filename: str, entry: dict[str, Any], info: dict[str, Any]
) -> None:
    with pytest.warns(spandrel_fdat.FDATScaleWarning, match=spandrel_fdat.SCALE_ENV):
        desc = load(filename)
    assert "scale-guessed" in desc.tags
    assert desc.scale == DEFAULT_GUESSED_SCALE
    # everything but the scale is known
    check_descriptor(desc, {**entry["config"], "scale": DEFAULT_GUESSED_SCALE}, filename, info)


@pytest.mark.parametrize(("filename", "entry", "info"), GUESSED_SCALE_CASES)
def test_fixture_scale_hint_by_argument(filename: str, entry: dict[str, Any], info: dict[str, Any]) -> None:
    hint = entry["scale_hint"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", spandrel_fdat.FDATScaleWarning)
        desc = spandrel_fdat.load_model(FIXTURES_DIR / filename, scale=hint)
    assert desc.scale == hint
    assert "scale-guessed" not in desc.tags
    check_descriptor(desc, entry["config"], filename, info)


@pytest.mark.parametrize(("filename", "entry", "info"), GUESSED_SCALE_CASES)
def test_fixture_scale_hint_by_environment(
    filename: str, entry: dict[str, Any], info: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    hint = entry["scale_hint"]
    monkeypatch.setenv(spandrel_fdat.SCALE_ENV, str(hint))
    with warnings.catch_warnings():
        warnings.simplefilter("error", spandrel_fdat.FDATScaleWarning)
        desc = load(filename)
    assert desc.scale == hint
    assert "scale-guessed" not in desc.tags
    check_descriptor(desc, entry["config"], filename, info)


def _assert_same_contents(a: Any, b: Any, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
        return
    assert isinstance(a, dict) and isinstance(b, dict), where
    assert list(a) == list(b), where
    for key in a:
        _assert_same_contents(a[key], b[key], f"{where}[{key!r}]")


@needs_reference  # the UniUpsample fixtures are built with spandrel 0.4.2's FDAT class
def test_generator_reproduces_the_committed_fixtures(tmp_path: Path) -> None:
    manifest = make_fixtures.main(tmp_path)
    assert manifest == MANIFEST
    assert json.loads((tmp_path / "manifest.json").read_text()) == MANIFEST
    written = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in FIXTURES_DIR.iterdir() if p.suffix in (".pth", ".safetensors", ".json"))
    assert written == committed
    for entry in MANIFEST["fixtures"].values():
        for filename in entry["files"]:
            _assert_same_contents(read_file(tmp_path / filename), read_file(FIXTURES_DIR / filename), filename)
