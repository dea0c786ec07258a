"""The spandrel architecture: detection, loading into a descriptor, registration."""

from __future__ import annotations

import os
import pickle
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

from .decline import not_fdat_message
from .errors import (
    SCALE_ENV,
    FDATFileError,
    FDATNonFiniteWarning,
    FDATScaleWarning,
    Interface,
    current_interface,
    one_line,
    scale_warning_text,
)
from .inference import Inference, infer_config, is_fdat_state_dict
from .network import FDAT

ARCH_ID = "spandrel_fdat.FDAT"


class FDATArch(Architecture[FDAT]):
    """FDAT for spandrel: every known checkpoint layout (see the README's table)."""

    def __init__(self) -> None:
        super().__init__(id=ArchId(ARCH_ID), name="FDAT", detect=is_fdat_state_dict)

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[FDAT]:
        """spandrel's entry point (hosts): a guessed scale's warning names the environment variable."""
        return self._load(state_dict, infer_config(state_dict, scale=_env_scale()), "host")

    def load_with(self, state_dict: StateDict, *, scale: int | None = None) -> ImageModelDescriptor[FDAT]:
        """`load`, with the scale to use where the checkpoint does not store it."""
        return self._load(state_dict, infer_config(state_dict, scale=scale), "python")

    def load_inferred(self, state_dict: StateDict, inference: Inference) -> ImageModelDescriptor[FDAT]:
        """The descriptor of a state dict `infer_config` has read; warns as `load` does."""
        return self._load(state_dict, inference, "python")

    def _load(self, state_dict: StateDict, inference: Inference, where: Interface) -> ImageModelDescriptor[FDAT]:
        if inference.scale_guessed:
            warnings.warn(
                scale_warning_text(inference.config.scale, current_interface(where)),
                FDATScaleWarning,
                stacklevel=4,  # the caller of `load_model` / `load_with`
            )
        descriptor = build_descriptor(state_dict, inference, self)
        non_finite = _non_finite(descriptor.model)
        if non_finite:
            key, count, total = non_finite[0]
            more = f" ({len(non_finite) - 1} more tensors have some too)" if len(non_finite) > 1 else ""
            warnings.warn(
                f"FDAT checkpoint: {key}: expected finite weights, found {count} NaN/inf of {total}{more}; "
                "loaded anyway, but the model's outputs will be NaN/inf",
                FDATNonFiniteWarning,
                stacklevel=4,
            )
        return descriptor


def _non_finite(model: FDAT) -> list[tuple[str, int, int]]:
    """(key, non-finite values, values) for each tensor of the loaded model holding NaN or inf.

    Read from the model, not the checkpoint: float64 weights beyond float32's range become inf too.
    """
    found = []
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                found.append((key, bad, value.numel()))
    return found


def build_descriptor(
    state_dict: Mapping[str, Any], inference: Inference, architecture: FDATArch
) -> ImageModelDescriptor[FDAT]:
    config = inference.config
    model = FDAT.from_config(config)
    weights = dict(state_dict)  # never write into the caller's dict
    if "upsampler.MetaUpsample" in weights:  # ours is canonical, whatever dtype or values were stored
        weights["upsampler.MetaUpsample"] = torch.tensor(config.meta_upsample(), dtype=torch.uint8)
    model.eval()

    tags = [t for t in (config.preset_name(), f"{config.embed_dim}dim", config.upsampler_type) if t]
    if config.layout != "uniupsample":
        tags.append(config.layout)
    if config.unshuffle_mod:
        tags.append("unshuffle")
    if inference.scale_guessed:
        tags.append("scale-guessed")
    return ImageModelDescriptor(  # loads `weights` into the model (strict)
        model,
        weights,
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


CHECKPOINT_EXTENSIONS = (".pth", ".pt", ".ckpt", ".safetensors")
"""The file types `load_model` reads (those of spandrel's `ModelLoader`)."""


def load_model(
    source: str | os.PathLike[str] | Mapping[str, Any], *, scale: int | None = None, device: str | torch.device = "cpu"
) -> ImageModelDescriptor[FDAT]:
    """Load an FDAT checkpoint (a file through spandrel's loader, or a state dict).

    `scale` is used only where the checkpoint's shapes do not record its scale; for a
    file written by `save_safetensors` (`spandrel-fdat convert`), the scale stored in its
    metadata is the default.
    Raises UnsupportedModelError for a checkpoint that is not FDAT, FDATCheckpointError
    for one that is but cannot be loaded, and FDATFileError for a file that cannot be
    read (missing, a directory, empty, another extension, truncated or corrupt, or a
    pickle that would run code: spandrel's restricted unpickler refuses it, nothing runs).
    """
    from spandrel import UnsupportedModelError

    if isinstance(source, Mapping):
        try:
            state_dict = canonicalize_state_dict(dict(source))
        except (AttributeError, TypeError):  # spandrel's prefix removal calls str methods on every key
            raise UnsupportedModelError(not_fdat_message("state dict", source)) from None
    else:
        state_dict = _read_checkpoint(source, device)
        scale = scale if scale is not None else stored_scale(source)
    arch = FDATArch()
    if not arch.detect(state_dict):
        label = "state dict" if isinstance(source, Mapping) else f"FDAT file: {os.fspath(source)}"
        raise UnsupportedModelError(not_fdat_message(label, state_dict))
    return arch.load_with(state_dict, scale=scale).to(device)


def stored_scale(path: str | os.PathLike[str]) -> int | None:
    """The scale in a safetensors file's `spandrel_fdat.config` metadata; None without a valid one."""
    from .convert import read_stored_config

    try:
        config = read_stored_config(path)
    except FDATFileError:  # unreadable metadata: reading the tensors reports the file's problem
        return None
    return config.scale if config is not None else None


def _read_checkpoint(source: str | os.PathLike[str], device: str | torch.device) -> StateDict:
    """The file's state dict (canonicalised by spandrel), or one FDATFileError saying why not."""
    path = Path(source)
    if not path.exists():
        raise FDATFileError("expected a checkpoint file, found nothing (no such file)", path=path)
    if path.is_dir():
        raise FDATFileError("expected a checkpoint file, found a directory", path=path)
    extension = path.suffix.lower()
    if extension not in CHECKPOINT_EXTENSIONS:
        raise FDATFileError(
            f"expected a {', '.join(CHECKPOINT_EXTENSIONS[:-1])} or {CHECKPOINT_EXTENSIONS[-1]} file, "
            f"found {f'a {extension} file' if extension else 'no extension'}",
            path=path,
        )
    try:
        size = path.stat().st_size
    except OSError as err:
        raise FDATFileError(f"expected a readable file, found {err.strerror or one_line(err)}", path=path) from err
    if size == 0:
        raise FDATFileError(f"expected a {extension} checkpoint, found an empty file (0 bytes)", path=path)
    try:
        return ModelLoader(device=device).load_state_dict_from_file(path)
    except pickle.UnpicklingError as err:
        if "forbidden" not in str(err):  # not spandrel's restricted unpickler at work: a corrupt pickle
            raise FDATFileError(_corrupt(extension, size, err), path=path) from err
        raise FDATFileError(
            f"expected a pickle of tensors only, found code to run ({one_line(err)}): refused, nothing in it was "
            "run; the file is corrupt or malicious",
            path=path,
        ) from err
    except PermissionError as err:
        raise FDATFileError("expected a readable file, found no permission to read it", path=path) from err
    except Exception as err:  # whatever the reader (torch, safetensors, spandrel) raised: one clear error
        raise FDATFileError(_corrupt(extension, size, err), path=path) from err


def _corrupt(extension: str, size: int, err: BaseException) -> str:
    return (
        f"expected a readable {extension} checkpoint (a state dict of tensors), found a truncated, corrupt "
        f"or foreign file of {size} bytes ({type(err).__name__}: {one_line(err)})"
    )


__all__ = [
    "ARCH_ID",
    "CHECKPOINT_EXTENSIONS",
    "REGISTRY",
    "SCALE_ENV",
    "FDATArch",
    "arch_support",
    "install",
    "load_model",
]
