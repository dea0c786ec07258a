"""What an FDAT checkpoint file holds: the report behind `spandrel-fdat inspect`.

`build_report(path)` reads the file exactly as `load_model` does (spandrel's
loader, its restricted unpickler for pickles), infers the configuration, builds
the descriptor and returns a JSON-ready dict with the keys of `REPORT_KEYS`.
`format_report` renders it as aligned text. No click here: the command in
`cli.py` only calls these.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from spandrel import ImageModelDescriptor, UnsupportedModelError

from .arch import ARCH_ID, FDATArch, _read_checkpoint, stored_scale
from .config import FDATConfig
from .convert import CONFIG_KEY, VERSION_KEY, parse_stored_config, read_metadata
from .decline import not_fdat_message
from .errors import FDATCheckpointError, FDATFileError
from .inference import Inference, infer_config, is_fdat_state_dict
from .network import FDAT

REPORT_SCHEMA = 1
"""Bumped when a key of the report changes meaning or disappears (keys may be added)."""

REPORT_KEYS = (
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
)
"""The keys of `build_report`'s dict, in order (documented in the README)."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint file read like `load_model` reads it, with what loading it said."""

    path: Path
    state_dict: Mapping[str, Any]
    """As stored (after spandrel's unwrapping of params_ema/state_dict/module. prefixes): original dtypes."""
    inference: Inference
    descriptor: ImageModelDescriptor[FDAT]
    warnings: tuple[str, ...]
    """The messages of the warnings loading raised (scale guessed, NaN/inf weights)."""


def load_checkpoint(path: str | os.PathLike[str], *, scale: int | None = None) -> LoadedCheckpoint:
    """Read, detect, infer and build an FDAT checkpoint file; every failure is one ValueError naming the file.

    FDATFileError: missing, unreadable, truncated, or a pickle that would run code (refused,
    nothing run). UnsupportedModelError-derived `NotFDATError`: the file holds no FDAT
    network. `FDATFileError` wrapping the `FDATCheckpointError`: FDAT, but not loadable.
    """
    path = Path(path)
    state_dict = _read_checkpoint(path, "cpu")
    if not is_fdat_state_dict(state_dict):
        raise NotFDATError(path, state_dict)
    scale = scale if scale is not None else stored_scale(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            inference = infer_config(state_dict, scale=scale)
            descriptor = FDATArch().load_inferred(state_dict, inference)
    except FDATCheckpointError as err:
        raise FDATFileError(f"expected a loadable FDAT checkpoint, found a broken one ({err})", path=path) from err
    messages = tuple(dict.fromkeys(" ".join(str(w.message).split()) for w in caught))
    return LoadedCheckpoint(path, state_dict, inference, descriptor, messages)


class NotFDATError(UnsupportedModelError, ValueError):
    """A readable checkpoint file that is not an FDAT network (spandrel's UnsupportedModelError)."""

    def __init__(self, path: Path, state_dict: Mapping[str, Any]) -> None:
        super().__init__(not_fdat_message(f"FDAT file: {path}", state_dict))
        self.path = str(path)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def config_differences(stored: FDATConfig, inferred: FDATConfig) -> dict[str, dict[str, Any]]:
    """{field: {"stored": value, "inferred": value}} for each field where the two differ."""
    stored_kw, inferred_kw = stored.to_kwargs(), inferred.to_kwargs()
    return {
        f.name: {"stored": stored_kw[f.name], "inferred": inferred_kw[f.name]}
        for f in dataclasses.fields(FDATConfig)
        if stored_kw[f.name] != inferred_kw[f.name]
    }


def build_report(path: str | os.PathLike[str], *, scale: int | None = None) -> dict[str, Any]:
    """The inspect report of an FDAT checkpoint file (keys: `REPORT_KEYS`, values JSON-ready).

    `scale` is used only where the checkpoint does not record its scale, as in `load_model`.
    """
    loaded = load_checkpoint(path, scale=scale)
    config, inference, descriptor = loaded.inference.config, loaded.inference, loaded.descriptor
    dtypes = Counter(_dtype_name(v.dtype) for v in loaded.state_dict.values() if isinstance(v, torch.Tensor))

    stored_config: dict[str, Any] | None = None
    stored_matches: bool | None = None
    differences: dict[str, dict[str, Any]] = {}
    report_warnings = list(loaded.warnings)
    metadata = read_metadata(loaded.path)
    stored_version = metadata.get(VERSION_KEY)
    try:
        stored = parse_stored_config(metadata, loaded.path)
    except FDATFileError as err:
        report_warnings.append(f"metadata {CONFIG_KEY!r} is not a valid FDAT configuration ({err.__cause__}); ignored")
    else:
        if stored is not None:
            stored_config = stored.to_kwargs()
            differences = config_differences(stored, config)
            stored_matches = not differences
            if differences:
                report_warnings.append(
                    f"metadata {CONFIG_KEY!r} disagrees with the tensor shapes in {', '.join(differences)}; "
                    "loaders use the shapes"
                )

    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "file": str(loaded.path),
        "format": loaded.path.suffix.lower().removeprefix("."),
        "file_bytes": loaded.path.stat().st_size,
        "architecture": ARCH_ID,
        "layout": config.layout,
        "upsampler": config.upsampler_type,
        "scale": config.scale,
        "scale_guessed": inference.scale_guessed,
        "input_channels": descriptor.input_channels,
        "output_channels": descriptor.output_channels,
        "parameters": sum(p.numel() for p in descriptor.model.parameters()),
        "preset": config.preset_name(),
        "tags": list(descriptor.tags),
        "purpose": descriptor.purpose,
        "config": config.to_kwargs(),
        "tensors": len(loaded.state_dict),
        "dtypes": dict(sorted(dtypes.items())),
        "meta_upsample": list(inference.stored_meta) if inference.stored_meta is not None else None,
        "meta_upsample_expected": config.meta_upsample() if config.layout == "uniupsample" else None,
        "meta_agrees": inference.meta_agrees,
        "stored_config": stored_config,
        "stored_version": stored_version,
        "stored_config_matches": stored_matches,
        "stored_config_differences": differences,
        "warnings": report_warnings,
    }
    assert tuple(report) == REPORT_KEYS
    return report


def _yes_no(value: bool | None) -> str:
    return "n/a" if value is None else "yes" if value else "no"


def format_report(report: Mapping[str, Any]) -> str:
    """Aligned human-readable lines of a `build_report` dict."""
    r = report
    scale = f"x{r['scale']}" + (
        " (guessed: the checkpoint does not record it; choose with --scale N)" if r["scale_guessed"] else ""
    )
    dtypes = ", ".join(f"{name} x{count}" for name, count in r["dtypes"].items())
    if r["meta_upsample"] is None:
        meta = "absent (not stored by the " + r["layout"] + " layout)"
    elif r["meta_agrees"]:
        meta = f"{r['meta_upsample']} (agrees with the shapes)"
    else:
        meta = f"{r['meta_upsample']} (disagrees with the shapes, which give {r['meta_upsample_expected']}; shapes win)"
    if r["stored_config"] is None:
        stored = "none" if r["format"] == "safetensors" else f"none (a .{r['format']} file has no metadata)"
    elif r["stored_config_matches"]:
        stored = "present, equal to the inferred configuration"
    else:
        diffs = ", ".join(
            f"{k} {v['stored']!r} (shapes: {v['inferred']!r})" for k, v in r["stored_config_differences"].items()
        )
        stored = f"present, differs from the inferred configuration in {diffs}; loaders use the shapes"
    if r["stored_version"] is not None:
        stored += f"; written by spandrel-fdat {r['stored_version']}"
    rows = [
        ("file", f"{r['file']} ({r['format']}, {r['file_bytes']:,} bytes)"),
        ("architecture", f"FDAT ({r['architecture']})"),
        (
            "layout",
            r["layout"] + (f" (MetaUpsample V{r['config']['meta_version']})" if r["layout"] == "uniupsample" else ""),
        ),
        ("upsampler", r["upsampler"]),
        ("scale", scale),
        ("channels", f"{r['input_channels']} in, {r['output_channels']} out"),
        ("parameters", f"{r['parameters']:,}"),
        ("preset", r["preset"] or "none"),
        ("tags", ", ".join(r["tags"])),
        ("purpose", r["purpose"]),
        ("tensors", f"{r['tensors']} ({dtypes})"),
        ("MetaUpsample", meta),
        ("stored config", stored),
    ]
    width = max(len(name) for name, _ in rows) + 2
    lines = [f"{name + ':':<{width}} {value}" for name, value in rows]
    lines.append("configuration:")
    config = r["config"]
    field_width = max(len(k) for k in config) + 2
    lines += [f"  {k:<{field_width}}{_config_value(v)}" for k, v in config.items()]
    lines += [f"warning: {w}" for w in r["warnings"]]
    return "\n".join(lines)


def _config_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


__all__ = [
    "REPORT_KEYS",
    "REPORT_SCHEMA",
    "LoadedCheckpoint",
    "NotFDATError",
    "build_report",
    "format_report",
    "load_checkpoint",
]
