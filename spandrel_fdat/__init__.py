"""FDAT for spandrel: detect, infer and load every FDAT-family checkpoint.

After `spandrel_fdat.install()`, `spandrel.ModelLoader().load_from_file(path)`
loads FDAT checkpoints of every known layout with this package's FDAT.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .arch import ARCH_ID, REGISTRY, SCALE_ENV, FDATArch, arch_support, install, load_model
    from .config import PRESETS, FDATConfig, expected_shapes
    from .errors import (
        FDATCheckpointError,
        FDATFileError,
        FDATHalfOverflowWarning,
        FDATNonFiniteWarning,
        FDATScaleWarning,
    )
    from .export import export_onnx
    from .inference import Inference, infer_config, is_fdat_state_dict
    from .network import (
        FDAT,
        fdat_large,
        fdat_light,
        fdat_medium,
        fdat_medium_aligned,
        fdat_tiny,
        fdat_xl,
    )

__version__ = "0.1.0"

# The names below are imported on first use (PEP 562), so that `import spandrel_fdat`
# and the command line's help, version and autoload commands do not import torch.
_LAZY = {
    "ARCH_ID": "arch",
    "REGISTRY": "arch",
    "SCALE_ENV": "arch",
    "FDATArch": "arch",
    "arch_support": "arch",
    "install": "arch",
    "load_model": "arch",
    "PRESETS": "config",
    "FDATConfig": "config",
    "expected_shapes": "config",
    "FDATCheckpointError": "errors",
    "FDATFileError": "errors",
    "FDATHalfOverflowWarning": "errors",
    "FDATNonFiniteWarning": "errors",
    "FDATScaleWarning": "errors",
    "export_onnx": "export",
    "Inference": "inference",
    "infer_config": "inference",
    "is_fdat_state_dict": "inference",
    "FDAT": "network",
    "fdat_large": "network",
    "fdat_light": "network",
    "fdat_medium": "network",
    "fdat_medium_aligned": "network",
    "fdat_tiny": "network",
    "fdat_xl": "network",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ARCH_ID",
    "FDAT",
    "PRESETS",
    "REGISTRY",
    "SCALE_ENV",
    "FDATArch",
    "FDATCheckpointError",
    "FDATConfig",
    "FDATFileError",
    "FDATHalfOverflowWarning",
    "FDATNonFiniteWarning",
    "FDATScaleWarning",
    "Inference",
    "arch_support",
    "expected_shapes",
    "export_onnx",
    "fdat_large",
    "fdat_light",
    "fdat_medium",
    "fdat_medium_aligned",
    "fdat_tiny",
    "fdat_xl",
    "infer_config",
    "install",
    "is_fdat_state_dict",
    "load_model",
]
