"""Per-image steps of `upscale`, for callers that schedule images themselves (e.g. Ray Data).

    jobs, _ = plan_outputs(images, "out/")            # the CLI's naming rules (`paths`)
    upscaler = load_for_upscale(model_path, device="cpu", dtype="fp32")
    for job in jobs:
        data = job.source.read_bytes()
        write_atomic(upscale_bytes(upscaler, data, job.source, job.target), job.target)

`upscale_bytes` is `decode` -> `upscale_image` -> `encode`; each step is here on its own too.
The bytes are those the `upscale` command writes for the same options.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .images import FloatImage, decode_image, encode_image, from_array, to_array, write_atomic
from .paths import Job, collect_inputs, plan_outputs
from .upscale import DEFAULT_TILE, Upscaler, default_model, resolve_device

__all__ = [
    "Job",
    "Upscaler",
    "collect_inputs",
    "decode",
    "encode",
    "load_for_upscale",
    "plan_outputs",
    "upscale_array",
    "upscale_bytes",
    "upscale_image",
    "write_atomic",
]


def load_for_upscale(
    model_path: str | os.PathLike[str] | None = None,
    *,
    device: str | None = None,
    dtype: str = "fp32",
    tile: int | str = DEFAULT_TILE,
    overlap: int | None = None,
    scale: int | None = None,
    notes: list[str] | None = None,
) -> Upscaler:
    """The model ready to upscale, with the CLI's options (None model: the bundled x2).

    Raises UpscaleError for a bad option; warnings and notes are appended to `notes`.
    """
    path = Path(model_path) if model_path is not None else default_model()
    return Upscaler.load(
        path,
        device=resolve_device(device),
        dtype=dtype,
        tile=tile,
        overlap=overlap,
        notes=[] if notes is None else notes,
        scale=scale,
    )


def decode(source: str | os.PathLike[str] | bytes, name: str | os.PathLike[str] | None = None) -> FloatImage:
    """An image from a file path or from a file's bytes (`name`, e.g. its URI, is for error messages)."""
    if isinstance(source, bytes):
        return decode_image(source, name if name is not None else "<bytes>")
    return decode_image(Path(source).read_bytes(), name if name is not None else source)


def upscale_image(upscaler: Upscaler, image: FloatImage) -> FloatImage:
    """The upscaled image (values not clamped; `encode` clamps)."""
    return upscaler.upscale(image)


def encode(image: FloatImage, dst_name: str | os.PathLike[str]) -> bytes:
    """The file bytes of `image` in the format of `dst_name`'s extension (as `upscale` writes them)."""
    return encode_image(image, dst_name)


def upscale_bytes(
    upscaler: Upscaler, data: bytes, src_name: str | os.PathLike[str], dst_name: str | os.PathLike[str]
) -> bytes:
    """An input file's bytes in, the output file's bytes out; errors are ValueErrors naming a file."""
    return encode(upscale_image(upscaler, decode(data, src_name)), dst_name)


def upscale_array(upscaler: Upscaler, array: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, planes) uint8 or uint16 (planes 1-4, alpha last) in, the same kind out, upscaled."""
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected a uint8 or uint16 array, found {array.dtype}")
    bits = 8 if array.dtype == np.uint8 else 16
    result = upscale_image(upscaler, from_array(array, 2**bits - 1, None, bits))
    values = to_array(result)  # (H, W, planes)
    return values[:, :, 0] if array.ndim == 2 else values
