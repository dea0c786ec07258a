"""Checkpoint files that cannot be loaded: one clear error each, and nothing in them is ever run.

Through `spandrel_fdat.load_model` every unreadable file is one FDATFileError (a
ValueError) naming the path and what was expected and found; through spandrel's
own `ModelLoader().load_from_file` (with FDAT installed) it is spandrel's error,
and the tests only require that one is raised and that nothing was executed.

A `.pth`/`.ckpt`/`.pt` pickle that would create a file when unpickled is refused by
spandrel's restricted unpickler (and by torch's weights-only load): the file is
never created. The payload is checked to be real by unpickling it unrestricted.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from spandrel import ArchRegistry, ImageModelDescriptor, ModelLoader, UnsupportedModelError
from spandrel.architectures.ESRGAN import ESRGAN

import spandrel_fdat
from spandrel_fdat import FDATFileError, install

ROOT = Path(__file__).resolve().parent.parent
FIXTURES_DIR = ROOT / "fixtures"
MANIFEST = json.loads((FIXTURES_DIR / "manifest.json").read_text())
pytestmark = [
    pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning"),  # torch's weights-only reader
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning"),  # spandrel reads .pt so
]
# one fixture per format with a stored scale, so that loading it is warning-free
PTH = FIXTURES_DIR / "uni_pixelshuffle_x3.pth"
SAFETENSORS = FIXTURES_DIR / "uni_pixelshuffle_x3.safetensors"


@pytest.fixture(scope="module")
def loader() -> ModelLoader:
    """spandrel's file loader with a registry holding only our FDAT."""
    registry = ArchRegistry()
    install(registry)
    return ModelLoader(registry=registry)


def refused(path: Path, *words: str) -> FDATFileError:
    """load_model raises one FDATFileError naming the path; its one-line message holds `words`."""
    with pytest.raises(FDATFileError) as info:
        spandrel_fdat.load_model(path)
    err = info.value
    assert isinstance(err, ValueError)
    message = str(err)
    assert message.startswith(f"FDAT file: {path}: expected "), message
    assert "found" in message and "\n" not in message, message
    assert err.path == str(path)
    for word in words:
        assert word in message, (word, message)
    return err


def test_control_good_files_load(loader: ModelLoader) -> None:
    for path in (PTH, SAFETENSORS):
        for load in (spandrel_fdat.load_model, loader.load_from_file):
            desc = load(path)
            assert isinstance(desc, ImageModelDescriptor) and desc.scale == 3


# --- pickles that would run code ----------------------------------------------------------
class CreatesFile:
    """Unpickling this calls `open(path, "w")`: the file appears if the pickle is ever executed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str, str]]:
        return (open, (str(self.path), "w"))


def _torch_zip(payload: Any, path: Path) -> None:
    torch.save(payload, path)


def _raw_pickle(payload: Any, path: Path) -> None:
    path.write_bytes(pickle.dumps(payload))


MALICIOUS = [
    pytest.param(ext, writer, wrap, id=f"{writer.__name__.strip('_')}-{wrap}{ext}")
    for ext in (".pth", ".ckpt", ".pt")
    for writer in (_torch_zip, _raw_pickle)
    for wrap in ("bare", "in-state-dict")
]


@pytest.mark.parametrize(("ext", "writer", "wrap"), MALICIOUS)
def test_pickle_that_would_create_a_file_is_refused(
    tmp_path: Path, loader: ModelLoader, ext: str, writer: Callable[[Any, Path], None], wrap: str
) -> None:
    marker = tmp_path / "created-by-the-pickle"
    payload: Any = CreatesFile(marker)
    if wrap == "in-state-dict":
        weights = torch.load(PTH, weights_only=True)
        payload = {"params_ema": {**weights, "conv_after.weight": payload}}
    path = tmp_path / f"evil{ext}"
    writer(payload, path)

    err = refused(path)
    if ext != ".pt":  # spandrel reads .pt as TorchScript first and reports that failure instead
        assert "refused, nothing in it was run" in str(err) and "forbidden" in str(err)
    assert not marker.exists()

    with pytest.raises(Exception):  # noqa: B017 - spandrel's own error type, whatever it is
        loader.load_from_file(path)
    assert not marker.exists()

    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert not marker.exists()

    # the control: loaded without restrictions (torch.load with weights_only=False), the payload creates the file
    if writer is _raw_pickle:
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


# --- truncated, empty, missing, misnamed ----------------------------------------------------
TRUNCATION = settings(
    max_examples=25, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


@pytest.mark.parametrize("source", [PTH, SAFETENSORS], ids=["pth", "safetensors"])
@TRUNCATION
@given(fraction=st.floats(0, 1, exclude_max=True))
def test_truncated_file(tmp_path_factory: pytest.TempPathFactory, source: Path, fraction: float) -> None:
    """Cut at a random offset (header, tensor data or the zip directory): one clear error."""
    data = source.read_bytes()
    cut = int(fraction * len(data))
    path = tmp_path_factory.mktemp("cut") / f"model{source.suffix}"
    path.write_bytes(data[:cut])
    if cut == 0:
        refused(path, "empty file")
    else:
        refused(path, f"{cut} bytes", "truncated")
    with pytest.raises(Exception):  # noqa: B017
        ModelLoader().load_from_file(path)


@pytest.mark.parametrize("source", [PTH, SAFETENSORS], ids=["pth", "safetensors"])
@pytest.mark.parametrize("where", ["header", "middle", "last-byte"])
def test_truncated_file_at_fixed_offsets(tmp_path: Path, loader: ModelLoader, source: Path, where: str) -> None:
    data = source.read_bytes()
    cut = {"header": 7, "middle": len(data) // 2, "last-byte": len(data) - 1}[where]
    path = tmp_path / f"model{source.suffix}"
    path.write_bytes(data[:cut])
    refused(path, "truncated", source.suffix)
    with pytest.raises(Exception):  # noqa: B017
        loader.load_from_file(path)


@pytest.mark.parametrize("ext", [".pth", ".pt", ".ckpt", ".safetensors"])
def test_zero_byte_file(tmp_path: Path, loader: ModelLoader, ext: str) -> None:
    path = tmp_path / f"model{ext}"
    path.write_bytes(b"")
    refused(path, "empty file (0 bytes)")
    with pytest.raises(Exception):  # noqa: B017
        loader.load_from_file(path)


def test_directory(tmp_path: Path, loader: ModelLoader) -> None:
    path = tmp_path / "model.pth"
    path.mkdir()
    refused(path, "found a directory")
    with pytest.raises(Exception):  # noqa: B017
        loader.load_from_file(path)


def test_missing_path(tmp_path: Path, loader: ModelLoader) -> None:
    path = tmp_path / "nowhere" / "model.safetensors"
    refused(path, "no such file")
    with pytest.raises(FileNotFoundError):
        loader.load_from_file(path)


@pytest.mark.parametrize("name", ["model.txt", "model.bin", "model.onnx", "model", "model.pth.part"])
def test_wrong_extension(tmp_path: Path, loader: ModelLoader, name: str) -> None:
    """A good checkpoint under a name no loader reads: refused by its extension, before it is opened."""
    path = tmp_path / name
    shutil.copy(SAFETENSORS, path)
    refused(path, ".pth, .pt, .ckpt or .safetensors")
    with pytest.raises(ValueError, match="Unsupported model file extension"):
        loader.load_from_file(path)


@pytest.mark.parametrize(("source", "ext"), [(PTH, ".safetensors"), (SAFETENSORS, ".pth"), (SAFETENSORS, ".ckpt")])
def test_extension_of_the_other_format(tmp_path: Path, loader: ModelLoader, source: Path, ext: str) -> None:
    path = tmp_path / f"model{ext}"
    shutil.copy(source, path)
    refused(path, "corrupt", ext)
    with pytest.raises(Exception):  # noqa: B017
        loader.load_from_file(path)


@pytest.mark.parametrize("payload", [torch.zeros(3), [1, 2], "weights"], ids=["tensor", "list", "str"])
def test_pickle_without_a_state_dict(tmp_path: Path, payload: Any) -> None:
    path = tmp_path / "model.pth"
    torch.save(payload, path)
    refused(path, "a state dict of tensors")


def test_other_architecture_is_unsupported_not_an_error(tmp_path: Path, loader: ModelLoader) -> None:
    """A readable checkpoint of another architecture: UnsupportedModelError, as spandrel says it."""
    path = tmp_path / "esrgan.safetensors"
    save_file(ESRGAN(num_filters=8, num_blocks=1, scale=2).state_dict(), str(path))
    with pytest.raises(UnsupportedModelError):
        spandrel_fdat.load_model(path)
    with pytest.raises(UnsupportedModelError):
        loader.load_from_file(path)
