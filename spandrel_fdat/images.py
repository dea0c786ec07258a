"""Image files as float tensors and back: PNG, JPEG, WebP and TIFF, 8 and 16 bits, grey or RGB, with alpha.

`read_image(path)` gives a `FloatImage`: colour planes (1 grey or 3 RGB) and an optional alpha
plane as float32 tensors in [0, 1], with the file's bit depth (8 or 16) and ICC profile.
`write_image(image, path)` writes it back at that bit depth, in the format of `path`'s extension.

Libraries: Pillow reads and writes every 8-bit image; it has no 16-bit colour mode (a 16-bit
RGB PNG or TIFF comes out of it cut to 8 bits, and it cannot write one), so 16-bit PNGs go
through pypng (pure Python, every PNG colour type at 16 bits) and 16-bit TIFFs through
tifffile (pure Python; zlib and uncompressed TIFFs, and LZW and others once the optional
`imagecodecs` package is installed). Which reader a file gets is decided by its content (the
PNG or TIFF signature and the bit depth in its header), not by its extension.

Every error is an `ImageFileError` (a ValueError) with a one-line message naming the file.
"""

from __future__ import annotations

import io
import os
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import UnidentifiedImageError
from torch import Tensor

from .errors import one_line

__all__ = [
    "EXTENSIONS",
    "FloatImage",
    "ImageFileError",
    "decode_image",
    "encode_image",
    "image_format",
    "read_image",
    "write_atomic",
    "write_image",
]

EXTENSIONS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}
"""File extensions (lower case) and the format each is written in."""

SIXTEEN_BIT_FORMATS = ("PNG", "TIFF")
JPEG_QUALITY = 95
WEBP_QUALITY = 95

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_TIFF_ICC_TAG = 34675  # InterColorProfile


class ImageFileError(ValueError):
    """An image file that cannot be read or written; the message names the file. `path` holds it."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        super().__init__(f"{os.fspath(path)}: {message}")
        self.path = os.fspath(path)


@dataclass(frozen=True)
class FloatImage:
    """An image as float32 tensors in [0, 1] (values outside are clamped when written)."""

    colour: Tensor  # (C, H, W), C = 1 (grey) or 3 (RGB)
    alpha: Tensor | None  # (1, H, W), or None for an opaque image
    bit_depth: int  # 8 or 16: read from the file, and written back
    icc_profile: bytes | None = None

    def __post_init__(self) -> None:
        if self.colour.ndim != 3 or self.colour.shape[0] not in (1, 3):
            raise ValueError(f"expected (1 or 3, H, W) colour planes, got shape {list(self.colour.shape)}")
        if self.alpha is not None and self.alpha.shape != (1, *self.colour.shape[1:]):
            raise ValueError(f"expected a (1, H, W) alpha plane, got shape {list(self.alpha.shape)}")
        if self.bit_depth not in (8, 16):
            raise ValueError(f"expected a bit depth of 8 or 16, got {self.bit_depth}")

    @property
    def height(self) -> int:
        return int(self.colour.shape[1])

    @property
    def width(self) -> int:
        return int(self.colour.shape[2])

    @property
    def channels(self) -> int:
        return int(self.colour.shape[0])

    def describe(self) -> str:
        """e.g. `640x480 RGBA 16-bit`."""
        kind = ("grey" if self.channels == 1 else "RGB") + ("A" if self.alpha is not None else "")
        return f"{self.width}x{self.height} {kind} {self.bit_depth}-bit"


def image_format(path: str | os.PathLike[str]) -> str | None:
    """The format a path's extension stands for (`PNG`, `JPEG`, `WEBP`, `TIFF`), or None."""
    return EXTENSIONS.get(Path(path).suffix.lower())


# --- reading ------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike[str]) -> FloatImage:
    """Read an image file; raises ImageFileError naming the file if it cannot."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageFileError(path, f"cannot read: {err.strerror or one_line(err)}") from err
    return decode_image(data, path)


def decode_image(data: bytes, name: str | os.PathLike[str]) -> FloatImage:
    """Decode an image file's bytes; `name` (its path or URI) is only for the error message."""
    path = name  # kept as given: Path() would turn s3://b/x into s3:/b/x
    head = data[:32]
    try:
        if head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR" and len(head) > 24 and head[24] == 16:
            return _read_png16(data)
        if head.startswith(_TIFF_SIGNATURES):
            image = _read_tiff16(data, path)
            if image is not None:
                return image
        return _read_pillow(data, path)
    except ImageFileError:
        raise
    except UnidentifiedImageError as err:
        raise ImageFileError(path, "not a PNG, JPEG, WebP or TIFF image, or a damaged one") from err
    except Exception as err:  # whatever the reader raised: one line naming the file
        raise ImageFileError(path, f"cannot read this image ({type(err).__name__}: {one_line(err)})") from err


def from_array(array: np.ndarray, max_value: float, icc: bytes | None, bit_depth: int) -> FloatImage:
    """(H, W) or (H, W, planes) integers: planes 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA."""
    if array.ndim == 2:
        array = array[:, :, None]
    planes = array.shape[2]
    if planes not in (1, 2, 3, 4):
        raise ValueError(f"expected 1 to 4 samples per pixel, found {planes}")
    floats = np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32)  # (H, W, planes) -> (planes, H, W)
    floats /= max_value
    tensor = torch.from_numpy(floats)
    if planes in (2, 4):  # alpha last
        return FloatImage(tensor[:-1], tensor[-1:], bit_depth, icc or None)
    return FloatImage(tensor, None, bit_depth, icc or None)


def _read_pillow(data: bytes, path: str | os.PathLike[str]) -> FloatImage:
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as opened:
        image = ImageOps.exif_transpose(opened)  # a copy, turned upright
        icc = image.info.get("icc_profile")
        mode = image.mode
        if mode.startswith("I;16"):  # 16-bit grey (Pillow's only 16-bit mode)
            return from_array(np.asarray(image).astype(np.uint16), 65535.0, icc, 16)
        if mode in ("I", "F") or mode.startswith(("I;", "F;")):
            raise ImageFileError(path, f"expected an 8- or 16-bit image, found 32-bit samples (Pillow mode {mode})")
        transparent = "transparency" in image.info or mode in ("RGBA", "LA", "PA", "RGBa", "La")
        grey = mode in ("1", "L", "LA", "La")
        target = ("LA" if transparent else "L") if grey else ("RGBA" if transparent else "RGB")
        return from_array(np.asarray(image.convert(target)), 255.0, icc, 8)


def _read_png16(data: bytes) -> FloatImage:
    import png

    with io.BytesIO(data) as f:
        width, height, rows, info = png.Reader(file=f).asDirect()
        # rows: one array of width * planes samples each
        array = np.stack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, info["planes"])
        f.seek(0)
        icc = _png_icc_profile(png.Reader(file=f))
    max_value = float(2 ** info["bitdepth"] - 1)  # asDirect gives the sBIT depth where the file has one
    return from_array(array, max_value, icc, 16)


def _png_icc_profile(reader: Any) -> bytes | None:
    for kind, data in reader.chunks():
        if kind == b"iCCP":  # name, 0, compression method (0: zlib), compressed profile
            return zlib.decompress(data[data.index(b"\x00") + 2 :])
        if kind == b"IDAT":  # iCCP comes before the image data
            return None
    return None


def _read_tiff16(data: bytes, path: str | os.PathLike[str]) -> FloatImage | None:
    """A 16-bit TIFF's first page through tifffile; None for other bit depths (read by Pillow)."""
    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page: Any = tif.pages[0]
        if page.bitspersample != 16:
            return None
        if page.sampleformat != tifffile.SAMPLEFORMAT.UINT:
            raise ImageFileError(path, f"expected unsigned 16-bit samples, found {page.sampleformat.name.lower()}")
        photometric, kinds = page.photometric, tifffile.PHOTOMETRIC
        if photometric not in (kinds.MINISBLACK, kinds.MINISWHITE, kinds.RGB):
            raise ImageFileError(path, f"expected a grey or RGB 16-bit TIFF, found photometric {photometric.name}")
        array = page.asarray()
        axes = page.axes  # e.g. "YX", "YXS" (samples interleaved) or "SYX" (planar)
        if sorted(axes) not in (["X", "Y"], ["S", "X", "Y"]):
            raise ImageFileError(path, f"expected a 2-D image, found a TIFF page with axes {axes}")
        array = np.moveaxis(array, [axes.index("Y"), axes.index("X")], [0, 1])  # (H, W) or (H, W, S)
        if array.ndim == 3:
            colour = 3 if photometric == kinds.RGB else 1
            array = array[:, :, : colour + 1] if array.shape[2] > colour else array  # extra samples beyond alpha
            extras = tuple(page.extrasamples)
            if array.shape[2] > colour and extras and extras[0] == tifffile.EXTRASAMPLE.ASSOCALPHA:
                alpha = array[:, :, -1:].astype(np.float64)  # premultiplied: un-premultiply the colour
                safe = np.where(alpha > 0, alpha, 1.0)
                straight = np.where(alpha > 0, array[:, :, :-1] * 65535.0 / safe, 0.0)
                array = np.concatenate([np.clip(np.rint(straight), 0, 65535), alpha], axis=2).astype(np.uint16)
        if photometric == kinds.MINISWHITE:  # 0 is white: invert the grey plane (not an alpha plane)
            array = 65535 - array if array.ndim == 2 else np.concatenate([65535 - array[..., :1], array[..., 1:]], 2)
        icc_tag = page.tags.get(_TIFF_ICC_TAG)
        icc = bytes(icc_tag.value) if icc_tag is not None else None
        return from_array(array, 65535.0, icc, 16)


# --- writing ------------------------------------------------------------------------------------


def write_image(image: FloatImage, path: str | os.PathLike[str]) -> None:
    """Write `image` in the format of `path`'s extension, at the image's bit depth.

    The file appears whole or not at all (`write_atomic`). Raises ImageFileError naming the
    file for an unknown extension, a format that cannot hold the image (16 bits in JPEG or
    WebP, alpha in JPEG), or a write error.
    """
    write_atomic(encode_image(image, path), path)


def encode_image(image: FloatImage, name: str | os.PathLike[str]) -> bytes:
    """The bytes of `image` as a file in the format of `name`'s extension (clamped to [0, 1])."""
    path = Path(name)
    fmt = image_format(path)
    if fmt is None:
        raise ImageFileError(
            path, f"expected one of the extensions {', '.join(EXTENSIONS)}, found {path.suffix or 'none'}"
        )
    if image.bit_depth == 16 and fmt not in SIXTEEN_BIT_FORMATS:
        raise ImageFileError(path, f"{fmt} holds 8-bit images only, this one is 16-bit: write a .png or .tif")
    if image.alpha is not None and fmt == "JPEG":
        raise ImageFileError(path, "JPEG has no alpha channel, this image has one: write a .png, .webp or .tif")
    array = to_array(image)
    try:
        if image.bit_depth == 16 and fmt == "PNG":
            return _png16_bytes(array, image.icc_profile)
        f = io.BytesIO()
        if image.bit_depth == 16:
            _write_tiff16(f, array, image.icc_profile)
        else:
            _write_pillow(f, array, fmt, image.icc_profile)
        return f.getvalue()
    except Exception as err:
        raise ImageFileError(path, f"cannot write this image ({type(err).__name__}: {one_line(err)})") from err


PARTIAL_SUFFIX = ".partial"
"""Temporary files are `.NAME.PID.partial` next to the output: hidden, and never an image extension."""


def write_atomic(data: bytes, path: str | os.PathLike[str]) -> None:
    """Write `data` to `path` whole or not at all: into a temporary file in the same folder, then renamed."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{PARTIAL_SUFFIX}")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as err:
        raise ImageFileError(path, f"cannot write: {err.strerror or one_line(err)}") from err
    finally:
        temporary.unlink(missing_ok=True)


def to_array(image: FloatImage) -> np.ndarray:
    """(H, W, planes) unsigned integers of the image's bit depth, alpha last."""
    planes = image.colour if image.alpha is None else torch.cat([image.colour, image.alpha])
    max_value = 2**image.bit_depth - 1
    values = planes.detach().float().cpu().clamp(0, 1).mul_(max_value).round_()  # one full-size copy
    dtype = np.uint8 if image.bit_depth == 8 else np.uint16
    return np.ascontiguousarray(values.numpy().transpose(1, 2, 0), dtype=dtype)  # (planes, H, W) -> (H, W, planes)


def _write_pillow(f: Any, array: np.ndarray, fmt: str, icc: bytes | None) -> None:
    from PIL import Image

    picture = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)  # L, LA, RGB or RGBA
    options: dict[str, Any] = {"icc_profile": icc} if icc else {}
    if fmt == "JPEG":
        options["quality"] = JPEG_QUALITY
    elif fmt == "WEBP":
        options["quality"] = WEBP_QUALITY
    elif fmt == "TIFF":
        options["compression"] = "tiff_adobe_deflate"
    picture.save(f, format=fmt, **options)


def _png16_bytes(array: np.ndarray, icc: bytes | None) -> bytes:
    import png

    height, width, planes = array.shape
    writer = png.Writer(width, height, greyscale=planes < 3, alpha=planes in (2, 4), bitdepth=16)
    buffer = io.BytesIO()
    writer.write(buffer, array.reshape(height, width * planes))  # one row of interleaved samples per line
    if not icc:
        return buffer.getvalue()
    chunks = list(png.Reader(bytes=buffer.getvalue()).chunks())
    iccp = b"ICC profile\x00\x00" + zlib.compress(icc)  # name, 0, compression method 0 (zlib), profile
    chunks.insert(1, (b"iCCP", iccp))  # right after IHDR, before the image data
    out = io.BytesIO()
    png.write_chunks(out, chunks)
    return out.getvalue()


def _write_tiff16(f: Any, array: np.ndarray, icc: bytes | None) -> None:
    import tifffile

    planes = array.shape[2]
    tifffile.imwrite(
        f,
        array if planes > 1 else array[:, :, 0],
        photometric="rgb" if planes >= 3 else "minisblack",
        extrasamples=["unassalpha"] if planes in (2, 4) else None,
        compression="zlib",
        # InterColorProfile as an extra tag (type 7, UNDEFINED): older tifffile releases lack `iccprofile=`
        extratags=[(_TIFF_ICC_TAG, 7, len(icc), icc, True)] if icc else None,
    )
