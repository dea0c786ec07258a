"""The spandrel architecture: detection, loading into a descriptor, registration."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from spandrel import (
    MAIN_REGISTRY,
    ArchId,
    Architecture,
    ArchRegistry,
    ArchSupport,
    ImageModelDescriptor,
    ModelLoader,
    ModelTiling,
    SizeRequirements,
    StateDict,
    canonicalize_state_dict,
)

from .errors import FDATScaleWarning
from .inference import Inference, infer_config, is_fdat_state_dict
from .network import FDAT

ARCH_ID = "spandrel_fdat.FDAT"
SCALE_ENV = "SPANDREL_FDAT_SCALE"
"""Environment variable: the scale to use for checkpoints that do not store it."""


class FDATArch(Architecture[FDAT]):
    """FDAT for spandrel: every known checkpoint layout (see the README's table)."""

    def __init__(self) -> None:
        super().__init__(id=ArchId(ARCH_ID), name="FDAT", detect=is_fdat_state_dict)

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[FDAT]:
        return self.load_with(state_dict, scale=_env_scale())

    def load_with(self, state_dict: StateDict, *, scale: int | None = None) -> ImageModelDescriptor[FDAT]:
        """`load`, with the scale to use where the checkpoint does not store it."""
        inference = infer_config(state_dict, scale=scale)
        if inference.scale_guessed:
            warnings.warn(
                f"this FDAT checkpoint does not record its scale; loaded as x{inference.config.scale}. "
                f"Choose with spandrel_fdat.load_model(path, scale=N) or the environment variable {SCALE_ENV}=N.",
                FDATScaleWarning,
                stacklevel=3,
            )
        return build_descriptor(state_dict, inference, self)


def build_descriptor(
    state_dict: Mapping[str, Any], inference: Inference, architecture: FDATArch
) -> ImageModelDescriptor[FDAT]:
    config = inference.config
    model = FDAT.from_config(config)
    weights = dict(state_dict)  # never write into the caller's dict
    if "upsampler.MetaUpsample" in weights:  # ours is canonical, whatever dtype or values were stored
        weights["upsampler.MetaUpsample"] = model.upsampler.MetaUpsample
    model.load_state_dict(weights, strict=True)
    model.eval()

    tags = [t for t in (config.preset_name(), f"{config.embed_dim}dim", config.upsampler_type) if t]
    if config.layout != "uniupsample":
        tags.append(config.layout)
    if config.unshuffle_mod:
        tags.append("unshuffle")
    if inference.scale_guessed:
        tags.append("scale-guessed")
    return ImageModelDescriptor(
        model,
        dict(state_dict),
        architecture=architecture,
        purpose="Restoration" if config.scale == 1 else "SR",
        tags=tags,
        supports_half=True,
        supports_bfloat16=True,
        scale=config.scale,
        input_channels=config.num_in_ch,
        output_channels=config.num_out_ch,
        size_requirements=SizeRequirements(),
        # Channel attention and the AIM channel gate see the whole input: tiles change the result.
        tiling=ModelTiling.DISCOURAGED,
    )


def _env_scale() -> int | None:
    raw = os.environ.get(SCALE_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{SCALE_ENV} must be a positive integer, got {raw!r}")
    return int(raw)


def arch_support() -> ArchSupport:
    """Our entry for a spandrel registry: detected before spandrel's built-in FDAT."""
    return ArchSupport.from_architecture(FDATArch(), before=(ArchId("FDAT"),))


REGISTRY = ArchRegistry()
"""A registry holding only our FDAT, for hosts that do `MAIN_REGISTRY.add(*REGISTRY)`."""
REGISTRY.add(arch_support())


def install(registry: ArchRegistry = MAIN_REGISTRY, *, ignore_duplicates: bool = False) -> list[ArchSupport]:
    """Register FDAT in `registry` (spandrel's main registry by default); returns what was added.

    Installing twice is harmless: when our architecture is already there,
    nothing is added and [] is returned. Another architecture holding our id
    raises spandrel's DuplicateArchitectureError unless `ignore_duplicates`.
    """
    present = registry.get(ARCH_ID)
    if present is not None and isinstance(present.architecture, FDATArch):
        return []
    return registry.add(*REGISTRY, ignore_duplicates=ignore_duplicates)


def load_model(
    source: str | os.PathLike[str] | Mapping[str, Any], *, scale: int | None = None, device: str | torch.device = "cpu"
) -> ImageModelDescriptor[FDAT]:
    """Load an FDAT checkpoint (a file through spandrel's loader, or a state dict).

    `scale` is used only where the checkpoint does not record its scale.
    Raises UnsupportedModelError for a file that is not FDAT.
    """
    from spandrel import UnsupportedModelError

    if isinstance(source, Mapping):
        state_dict = canonicalize_state_dict(dict(source))
    else:
        state_dict = ModelLoader(device=device).load_state_dict_from_file(Path(source))
    arch = FDATArch()
    if not arch.detect(state_dict):
        raise UnsupportedModelError(
            f"{source if not isinstance(source, Mapping) else 'state dict'} is not an FDAT checkpoint"
        )
    return arch.load_with(state_dict, scale=scale).to(device)


__all__ = ["ARCH_ID", "REGISTRY", "SCALE_ENV", "FDATArch", "arch_support", "install", "load_model"]
