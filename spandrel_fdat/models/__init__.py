"""Models that ship inside the package (trained by `training/train.py`)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["DEFAULT_MODEL_NAME", "default_model_path"]

DEFAULT_MODEL_NAME = "fdat_x2_skimage.safetensors"


def default_model_path() -> Path:
    """The bundled FDAT x2 model `spandrel-fdat upscale` uses when no `-m` is given."""
    return Path(str(resources.files(__name__).joinpath(DEFAULT_MODEL_NAME)))
