"""Writing FDAT checkpoints as clean safetensors files, with their configuration in the metadata.

`save_safetensors` writes the canonical state dict of a network (the keys the
built model has), floating tensors optionally cast, integer buffers such as
`upsampler.MetaUpsample` untouched, and stores `FDATConfig.to_json()` and the
package version under the metadata keys `spandrel_fdat.config` and
`spandrel_fdat.version`. `read_stored_config` reads that configuration back.

The stored configuration is informative: loaders (spandrel's, `load_model`)
infer the network from the tensor shapes, which are the truth.
`save_safetensors` refuses a configuration the shapes would not give back, so
every file it writes loads with exactly the stored configuration.
`convert_checkpoint` is the `spandrel-fdat convert` command without click.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from spandrel import ImageModelDescriptor

from .config import FDATConfig
from .errors import FDATFileError
from .inference import infer_config, is_fdat_state_dict
from .network import FDAT

CONFIG_KEY = "spandrel_fdat.config"
"""safetensors metadata key: the network's `FDATConfig.to_json()`."""
VERSION_KEY = "spandrel_fdat.version"
"""safetensors metadata key: the spandrel-fdat version that wrote the file."""

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
"""The `--dtype` names of `spandrel-fdat convert`."""

ONNX_INSTALL_HINT = "pip install 'spandrel-fdat[onnx]'"


def _package_version() -> str:
    from . import __version__  # late: the package imports its modules before defining it

    return __version__


def _tensors(model_or_state_dict: FDAT | ImageModelDescriptor[FDAT] | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    if isinstance(model_or_state_dict, ImageModelDescriptor):
        model_or_state_dict = model_or_state_dict.model
    items: Iterable[tuple[Any, Any]]
    if isinstance(model_or_state_dict, torch.nn.Module):
        items = model_or_state_dict.state_dict().items()
    elif isinstance(model_or_state_dict, Mapping):
        items = model_or_state_dict.items()
    else:
        raise TypeError(
            f"save_safetensors takes an FDAT model, its descriptor or a state dict, not {type(model_or_state_dict).__name__}"
        )
    tensors = {}
    for key, value in items:
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ValueError(
                f"state dict entry {key!r}: expected a string key and a tensor, found {type(value).__name__}"
            )
        tensors[key] = value
    return tensors


def _non_inferable_differences(config: FDATConfig, inferred: FDATConfig) -> list[str]:
    return [
        f"{f.name}={getattr(config, f.name)!r} (the shapes give {getattr(inferred, f.name)!r})"
        for f in dataclasses.fields(FDATConfig)
        if getattr(config, f.name) != getattr(inferred, f.name)
    ]


def save_safetensors(
    model_or_state_dict: FDAT | ImageModelDescriptor[FDAT] | Mapping[str, Any],
    path: str | os.PathLike[str],
    config: FDATConfig,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write an FDAT network's state dict to `path` (.safetensors) with `config` in the metadata.

    `model_or_state_dict` is an `FDAT` module (on any device, training or not), its spandrel
    descriptor, or a state dict with the keys of `FDAT.from_config(config).state_dict()`.
    Floating tensors are cast to `dtype` (None: kept as they are); integer buffers
    (MetaUpsample) are written unchanged. Raises ValueError, before anything is written, when
    the state dict is not the one `config` implies, or when `config` holds something the
    shapes cannot carry (an `img_range` or `norm_eps` other than the layout's, a scale the
    shapes contradict): loaders infer from the shapes, so the file would not load as `config`.
    The file is written to a temporary name and renamed, so an existing file is replaced whole.
    """
    if not isinstance(config, FDATConfig):
        raise TypeError(f"config must be an FDATConfig, not {type(config).__name__}")
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    tensors = _tensors(model_or_state_dict)
    if not is_fdat_state_dict(tensors):
        raise ValueError("save_safetensors: the state dict is not an FDAT network's (its keys do not match)")
    inferred = infer_config(tensors, scale=config.scale).config  # FDATCheckpointError names a bad key
    if inferred != config:
        raise ValueError(
            "save_safetensors: the configuration does not match the state dict, so the file would not load as it: "
            + "; ".join(_non_inferable_differences(config, inferred))
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        out[key] = value.contiguous().clone()  # own storage: safetensors refuses shared or strided tensors
    metadata = {"format": "pt", CONFIG_KEY: config.to_json(), VERSION_KEY: _package_version()}
    path = Path(path)
    from safetensors.torch import save_file

    with _atomic(path) as tmp:
        save_file(out, str(tmp), metadata=metadata)
    return path


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary path next to `path`, renamed to it when the block succeeds (removed when not).

    The file gets the permissions `open()` would give it (safetensors writes owner-only files).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """A safetensors file's metadata ({} for other files, and for none); FDATFileError if unreadable."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as err:
        raise FDATFileError(
            f"expected a readable .safetensors file, found one whose header cannot be read ({type(err).__name__})",
            path=path,
        ) from err


def read_stored_config(path: str | os.PathLike[str]) -> FDATConfig | None:
    """The `FDATConfig` stored in a safetensors file's metadata (`spandrel_fdat.config`), or None.

    None for files without it (other writers, .pth files). A stored value that is not a
    valid configuration raises FDATFileError naming the key.
    """
    return parse_stored_config(read_metadata(path), path)


def parse_stored_config(metadata: Mapping[str, str], path: str | os.PathLike[str]) -> FDATConfig | None:
    """`read_stored_config` of metadata already read from `path`."""
    text = metadata.get(CONFIG_KEY)
    if text is None:
        return None
    try:
        return FDATConfig.from_json(text)
    except (ValueError, TypeError) as err:
        raise FDATFileError(
            f"metadata {CONFIG_KEY!r}: expected an FDAT configuration as JSON, found an invalid one ({err})",
            path=path,
        ) from err


# --- the convert command ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvertResult:
    safetensors: Path
    onnx: Path | None
    config: FDATConfig
    scale_guessed: bool
    dtype: torch.dtype
    warnings: tuple[str, ...] = ()


def check_outputs(output: Path, onnx: Path | None, *, force: bool) -> None:
    """Refuse a wrong extension or an existing output (unless `force`), naming the argument and file."""
    if output.suffix.lower() != ".safetensors":
        raise ValueError(f"OUT.safetensors: expected a path ending in .safetensors, found {str(output)!r}")
    if onnx is not None:
        if onnx.suffix.lower() != ".onnx":
            raise ValueError(f"--onnx: expected a path ending in .onnx, found {str(onnx)!r}")
        if onnx.resolve() == output.resolve():
            raise ValueError(f"--onnx: {onnx} is also the safetensors output")
    for path in (output, onnx):
        if path is None:
            continue
        if path.is_dir():
            raise ValueError(f"{path}: is a directory, expected a file path to write")
        if path.exists() and not force:
            raise ValueError(f"{path}: already exists; pass --force to overwrite it")
        if not path.parent.is_dir():
            raise ValueError(f"{path}: its folder {path.parent} does not exist")


def onnx_graph_dtype(dtype: str, onnx_dtype: str | None, onnx_io: str) -> str:
    """The ONNX graph's precision for `convert --dtype D [--onnx-dtype G] --onnx-io I`: G if
    given, else D; refused where the graph cannot have input/output I (bf16 goes only with bf16)."""
    graph = dtype if onnx_dtype is None else onnx_dtype
    if "bf16" in (graph, onnx_io) and onnx_io not in ("fp32", graph):
        raise ValueError(
            f"--onnx-io {onnx_io}: the ONNX graph is {graph}; its input/output can be fp32 or "
            f"{graph if graph != 'fp32' else 'fp16'} (bf16 input/output only with a bf16 graph)"
        )
    return graph


def check_onnx_available() -> None:
    """The install hint when the onnx package is missing or cannot be imported."""
    try:
        import onnx  # noqa: F401
    except ImportError as err:
        raise ValueError(f"--onnx needs the onnx package, which is not installed: {ONNX_INSTALL_HINT}") from err


def convert_checkpoint(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float32,
    onnx: str | os.PathLike[str] | None = None,
    force: bool = False,
    scale: int | None = None,
    onnx_options: Mapping[str, Any] | None = None,
) -> ConvertResult:
    """Read an FDAT checkpoint (spandrel's restricted unpickler for .pth) and write it as safetensors.

    Everything is checked before anything is written: the output paths (extension,
    existing files unless `force`), the onnx package when `onnx` is given, and the
    checkpoint itself. The ONNX graph is exported from the checkpoint's weights with
    `onnx_options` (export_onnx's dtype, io_dtype, static, opset; default fp32, dynamic).
    """
    from .report import load_checkpoint

    output_path, onnx_path = Path(output), Path(onnx) if onnx is not None else None
    check_outputs(output_path, onnx_path, force=force)
    if onnx_path is not None:
        check_onnx_available()
    loaded = load_checkpoint(source, scale=scale)
    config = loaded.inference.config
    if onnx_path is not None:  # first: an export failure leaves nothing written
        export_onnx_file(loaded.descriptor, onnx_path, onnx_options or {})
    try:
        save_safetensors(loaded.descriptor.model, output_path, config, dtype)
    except BaseException:
        if onnx_path is not None:
            onnx_path.unlink(missing_ok=True)  # all or nothing
        raise
    return ConvertResult(output_path, onnx_path, config, loaded.inference.scale_guessed, dtype, loaded.warnings)


def export_onnx_file(descriptor: ImageModelDescriptor[FDAT], path: Path, options: Mapping[str, Any]) -> None:
    """`export_onnx` into a temporary file renamed to `path`; one-line errors naming --onnx."""
    from .export import export_onnx

    config = descriptor.model.config
    with _atomic(path) as tmp:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export_onnx(descriptor, tmp, **options)
        except ImportError as err:
            raise ValueError(f"--onnx needs the onnx package: {ONNX_INSTALL_HINT} ({err})") from err
        except Exception as err:
            raise ValueError(
                f"--onnx {path}: the {config.layout} {config.upsampler_type} x{config.scale} model could not be "
                f"exported to ONNX ({type(err).__name__}: {' '.join(str(err).split())[:200]})"
            ) from err


__all__ = [
    "CONFIG_KEY",
    "DTYPES",
    "VERSION_KEY",
    "ConvertResult",
    "convert_checkpoint",
    "onnx_graph_dtype",
    "parse_stored_config",
    "read_metadata",
    "read_stored_config",
    "save_safetensors",
]
