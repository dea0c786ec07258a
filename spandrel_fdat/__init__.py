"""FDAT for spandrel: detect, infer and load every FDAT-family checkpoint.

After `spandrel_fdat.install()`, `spandrel.ModelLoader().load_from_file(path)`
loads FDAT checkpoints of every known layout with this package's FDAT.
"""

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
