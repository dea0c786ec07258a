"""The bundled default model (`spandrel_fdat/models/`, trained by `training/train.py`)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import spandrel
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

import spandrel_fdat
from spandrel_fdat import ARCH_ID, FDAT, infer_config, install, load_model
from spandrel_fdat.convert import CONFIG_KEY, VERSION_KEY, read_stored_config
from spandrel_fdat.models import default_model_path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the training degradation and metric, also under plain `pytest`

from training.imageops import bicubic_upscale, degrade, from_tensor_layout, psnr_y, to_tensor_layout  # noqa: E402

MODEL = default_model_path()
SAMPLE = ROOT / "examples" / "sample.png"


def test_bundled_model_is_a_small_file() -> None:
    assert MODEL.is_file()
    assert MODEL.stat().st_size < 5_000_000


def test_loads_with_load_model() -> None:
    model = load_model(MODEL)
    assert model.scale == 2
    assert isinstance(model.model, FDAT)
    assert (model.input_channels, model.output_channels) == (3, 3)


def test_loads_through_spandrel_after_install() -> None:
    install()  # idempotent: other tests may have installed it already
    model = spandrel.ModelLoader().load_from_file(MODEL)
    assert model.architecture.id == ARCH_ID
    assert model.scale == 2


def test_stored_config_is_the_inferred_one() -> None:
    inferred = infer_config(load_file(MODEL)).config
    assert read_stored_config(MODEL) == inferred
    assert inferred.layout == "uniupsample" and inferred.meta_version == 3
    with safe_open(str(MODEL), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata[CONFIG_KEY] == inferred.to_json()
    assert metadata[VERSION_KEY] == spandrel_fdat.__version__


def test_beats_bicubic_on_the_sample_photograph() -> None:
    original = np.asarray(Image.open(SAMPLE).convert("RGB"))
    lr = degrade(original)
    model = load_model(MODEL).model.eval()
    with torch.inference_mode():
        fdat = from_tensor_layout(model(torch.from_numpy(to_tensor_layout(lr))).numpy())
    assert fdat.shape == original.shape
    assert psnr_y(fdat, original) > psnr_y(bicubic_upscale(lr), original) + 0.5


def test_spandrel_builtin_fdat_loads_it_too() -> None:
    builtin = pytest.importorskip("spandrel.architectures.FDAT", reason="spandrel 0.4.1 has no built-in FDAT")
    registry = spandrel.ArchRegistry()
    registry.add(spandrel.ArchSupport.from_architecture(builtin.FDATArch()))
    theirs = spandrel.ModelLoader(registry=registry).load_from_file(MODEL)
    ours = load_model(MODEL)
    assert theirs.architecture.id == "FDAT"
    x = torch.rand(1, 3, 24, 20)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-4, rtol=1e-4)
