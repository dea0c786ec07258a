"""`spandrel-fdat upscale`: collect input images, name their outputs, upscale them, report.

Inputs are image files (by extension: .png, .jpg, .jpeg, .webp, .tif, .tiff, any case) and
folders (their image files, not their subfolders). The output is one file (exactly one input
image; its extension picks the format) or a folder, created if missing, where each output keeps
its input's file name. Every image goes through one path, tiled or not: read (`images`), fit to
the model's channels (`channels`), run tile by tile (`tiling`; `tile=0` is one tile), write.

An image that cannot be read, upscaled or written, or whose output exists (without `force`), is
reported on one line and counted as failed; the others go on. `UpscaleError` is for what stops
the whole command before any image (the model, the device, the options).
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from spandrel import ImageModelDescriptor
from torch import Tensor

from .arch import load_model
from .channels import MODEL_CHANNELS, ChannelFit
from .convert import DTYPES
from .images import EXTENSIONS, FloatImage, image_format, read_image, write_image
from .models import default_model_path
from .tiling import count_tiles, upscale_tiled

__all__ = [
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE",
    "Job",
    "Summary",
    "UpscaleError",
    "Upscaler",
    "collect_inputs",
    "plan_jobs",
    "resolve_device",
    "upscale_files",
]

DEFAULT_TILE = 512
"""Tile side in input pixels (see bench/results/tiling.md for the PSNR, time and memory trade-off)."""
DEFAULT_OVERLAP = 32
"""Overlap between neighbouring tiles, in input pixels."""

DEVICES = ("cpu", "cuda", "mps")


class UpscaleError(ValueError):
    """Stops the whole command before any image is upscaled; the message is one line naming the flag or file."""


# --- inputs and outputs -------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


def collect_inputs(paths: Iterable[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The image files among `paths` (folders: their image files, sorted), and the rejected paths with why."""
    images: list[Path] = []
    rejected: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            images.extend(sorted(p for p in path.iterdir() if p.is_file() and image_format(p) is not None))
        elif not path.exists():
            rejected.append((path, "no such file or folder"))
        elif image_format(path) is None:
            rejected.append((path, f"not an image file (expected {', '.join(EXTENSIONS)})"))
        else:
            images.append(path)
    return images, rejected


def plan_jobs(images: Sequence[Path], output: Path) -> tuple[list[Job], bool]:
    """Each image's output path, and whether `output` is a single file (else a folder, created here)."""
    as_file = image_format(output) is not None and not output.is_dir()
    if as_file:
        if len(images) != 1:
            raise UpscaleError(
                f"-o {output}: names one image file, but there are {len(images)} input images; give a folder"
            )
        output.parent.mkdir(parents=True, exist_ok=True)
        return [Job(images[0], output)], True
    if output.exists() and not output.is_dir():
        raise UpscaleError(f"-o {output}: exists and is not a folder (a file output needs an image extension)")
    output.mkdir(parents=True, exist_ok=True)
    return [Job(image, output / image.name) for image in images], False


# --- the model ----------------------------------------------------------------------------------


def resolve_device(name: str | None) -> torch.device:
    """`cpu`, `cuda` or `mps`, checked; None picks the first available of cuda, mps, cpu."""
    mps = getattr(torch.backends, "mps", None)
    mps_ok = mps is not None and mps.is_available()
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        build = (
            "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}, no GPU found"
        )
        raise UpscaleError(f"--device cuda: CUDA is not available (torch {torch.__version__}, {build})")
    if name == "mps" and not mps_ok:
        raise UpscaleError("--device mps: Apple's MPS backend is not available (it needs macOS on Apple silicon)")
    if name not in DEVICES:
        raise UpscaleError(f"--device {name}: expected one of {', '.join(DEVICES)}")
    return torch.device(name)


def check_dtype(name: str, descriptor: ImageModelDescriptor, device: torch.device) -> list[str]:
    """Refuse a dtype the model does not support; returns notes worth a line on stderr."""
    if name == "fp16" and not descriptor.supports_half:
        raise UpscaleError("--dtype fp16: this model does not support half precision; use fp32")
    if name == "bf16" and not descriptor.supports_bfloat16:
        raise UpscaleError("--dtype bf16: this model does not support bfloat16; use fp32")
    if name == "fp16" and device.type == "cpu":
        return ["note: --dtype fp16 on CPU works but is about 2x slower than fp32 (few CPUs compute in fp16)"]
    return []


@dataclass(frozen=True)
class Upscaler:
    """A loaded model with its device, dtype and tiling: FloatImage in, FloatImage out."""

    descriptor: ImageModelDescriptor
    device: torch.device
    dtype: torch.dtype
    tile: int  # 0: no tiling; else a multiple of `align`
    overlap: int

    @classmethod
    def load(
        cls,
        model: Path,
        *,
        device: torch.device,
        dtype: str,
        tile: int,
        overlap: int | None,
        notes: list[str],
        scale: int | None = None,
    ) -> Upscaler:
        """Load and check the model and the options; warnings and notes are appended to `notes`."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            descriptor = load_model(model, scale=scale)
        notes.extend("warning: " + " ".join(str(w.message).split()) for w in caught)
        for name, count in (("input", descriptor.input_channels), ("output", descriptor.output_channels)):
            if count not in MODEL_CHANNELS:
                raise UpscaleError(f"-m {model}: the model has {count} {name} channels; upscale handles 1 to 4")
        notes.extend(check_dtype(dtype, descriptor, device))
        return cls.from_descriptor(descriptor, device=device, dtype=DTYPES[dtype], tile=tile, overlap=overlap)

    @classmethod
    def from_descriptor(
        cls,
        descriptor: ImageModelDescriptor,
        *,
        device: torch.device,
        dtype: torch.dtype,
        tile: int,
        overlap: int | None,
    ) -> Upscaler:
        """Move the model to `device` and `dtype`; round `tile` up to whole windows; check `overlap`.

        `overlap=None`: the default, or a quarter of a smaller tile.
        """
        descriptor.model.to(device=device, dtype=dtype).eval()
        align = window_multiple(descriptor)
        tile = 0 if tile == 0 else math.ceil(tile / align) * align
        if overlap is None:
            overlap = min(DEFAULT_OVERLAP, tile // 4)
        elif tile and 2 * overlap > tile:
            raise UpscaleError(f"--overlap {overlap}: must be at most half the tile ({tile})")
        return cls(descriptor, device, dtype, tile, overlap)

    @property
    def align(self) -> int:
        return window_multiple(self.descriptor)

    def fit(self, image: FloatImage) -> ChannelFit:
        return ChannelFit(
            image.channels, image.alpha is not None, self.descriptor.input_channels, self.descriptor.output_channels
        )

    def tiles(self, image: FloatImage) -> int:
        """Model calls for one image: tiles times passes (alpha on an RGB model is a second pass)."""
        passes = len(self.fit(image).inputs(image.colour, image.alpha))
        return passes * count_tiles(image.height, image.width, self.tile, self.overlap, self.align)

    def _run(self, tile: Tensor) -> Tensor:
        with torch.inference_mode():
            return self.descriptor.model(tile.to(device=self.device, dtype=self.dtype)).float()

    def run_batch(self, batch: Tensor, on_tile: Callable[[], None] | None = None) -> Tensor:
        """The model over a (B, model_in, H, W) batch, tile by tile: (B, model_out, H*s, W*s) float32, unclamped."""
        return upscale_tiled(
            self._run,
            batch,
            scale=self.descriptor.scale,
            tile=self.tile,
            overlap=self.overlap,
            align=self.align,
            on_tile=on_tile,
        )

    def upscale(self, image: FloatImage, on_tile: Callable[[], None] | None = None) -> FloatImage:
        """The upscaled image; its values are not clamped to [0, 1] (`write_image` does that, without a copy)."""
        fit = self.fit(image)
        results = [self.run_batch(batch, on_tile) for batch in fit.inputs(image.colour, image.alpha)]
        colour, alpha = fit.outputs(results)
        return FloatImage(colour, alpha, image.bit_depth, image.icc_profile)


def window_multiple(descriptor: ImageModelDescriptor) -> int:
    """Tiles start on multiples of this (in input pixels): the model's attention window.

    FDAT takes any size (it pads to whole windows), but a tile that starts on the image's
    window grid sees the same windows as the whole image does. With pixel unshuffle the
    windows are in the unshuffled image, `unshuffle_factor` times larger.
    """
    config = getattr(descriptor.model, "config", None)
    if config is None:
        return 1
    return int(config.window_size * config.unshuffle_factor)


def default_model() -> Path:
    path = default_model_path()
    if not path.is_file():
        raise UpscaleError(
            f"no -m/--model given and the bundled default model is not installed ({path}); pass -m MODEL"
        )
    return path


# --- the run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    done: int
    failed: int
    seconds: float
    megapixels: float  # of the input images upscaled
    destination: Path
    single_file: bool

    def line(self) -> str:
        rate = self.megapixels / self.seconds if self.seconds > 0 else 0.0
        where = f"output: {self.destination}" if self.single_file else f"outputs in {self.destination}{os.sep}"
        return (
            f"upscaled {self.done} of {self.done + self.failed} images ({self.failed} failed) in {self.seconds:.1f} s, "
            f"{rate:.3g} MP/s ({self.megapixels:.3g} input megapixels); {where}"
        )


def upscale_files(
    inputs: Sequence[Path],
    output: Path,
    *,
    model: Path | None = None,
    tile: int = DEFAULT_TILE,
    overlap: int | None = None,
    dtype: str = "fp32",
    device: str | None = None,
    force: bool = False,
    scale: int | None = None,
    progress: bool | None = None,
    report: Callable[[str], None] | None = None,
) -> Summary:
    """Upscale every input image into `output`; returns the summary (`failed` > 0: some images failed).

    `progress`: tqdm bars on stderr (None: only when stderr is a terminal). `report` gets each
    one-line failure, warning and note (default: stderr, above the bars).
    """
    from tqdm import tqdm

    say = report or _to_stderr
    images, rejected = collect_inputs(inputs)
    if not images and not rejected:
        raise UpscaleError(f"no input images in {', '.join(map(str, inputs))} (expected {', '.join(EXTENSIONS)})")
    notes: list[str] = []
    upscaler = Upscaler.load(
        model or default_model(),
        device=resolve_device(device),
        dtype=dtype,
        tile=tile,
        overlap=overlap,
        notes=notes,
        scale=scale,
    )
    jobs, single_file = plan_jobs(images, output) if images else ([], False)
    for note in notes:
        say(note)
    failures: list[str] = []

    def fail(path: Path, reason: str) -> None:
        failures.append(" ".join(f"{path}: {reason}".split()))  # one line, whatever the reason held
        say(failures[-1])

    for path, why in rejected:
        fail(path, why)
    start, done, megapixels = time.perf_counter(), 0, 0.0
    claimed: dict[Path, Path] = {}  # output -> the input writing it
    disable = None if progress is None else not progress
    with tqdm(total=len(jobs), unit="image", desc="images", file=sys.stderr, disable=disable) as bar:
        for job in jobs:
            reason = _refusal(job, claimed, force)
            if reason is None:
                try:
                    megapixels += _upscale_one(upscaler, job, say, disable)
                    done += 1
                except (ValueError, OSError) as err:  # the image's own problem: one line, go on
                    reason = str(err).removeprefix(f"{job.source}: ")
                except RuntimeError as err:  # from torch, e.g. out of memory: a smaller image may still fit
                    reason = f"upscaling failed ({type(err).__name__}: {err})"
            if reason is not None:
                fail(job.source, reason)
            bar.update()
    destination = jobs[0].target if single_file else output
    return Summary(done, len(failures), time.perf_counter() - start, megapixels, destination, single_file)


def _upscale_one(upscaler: Upscaler, job: Job, say: Callable[[str], None], disable: bool | None) -> float:
    """Read, upscale (with a progress bar over its tiles) and write one image; returns its input megapixels."""
    from tqdm import tqdm

    with warnings.catch_warnings(record=True) as caught:  # e.g. Pillow's decompression-bomb warning
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", ResourceWarning)  # a reader's unclosed file is not the user's business
        image = read_image(job.source)
    for warning in caught:
        say(" ".join(f"{job.source}: warning: {warning.message}".split()))
    tiles = tqdm(
        total=upscaler.tiles(image), unit="tile", desc=job.source.name, leave=False, file=sys.stderr, disable=disable
    )
    with tiles:
        result = upscaler.upscale(image, on_tile=tiles.update)
    write_image(result, job.target)
    return image.width * image.height / 1e6


def _to_stderr(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)  # above the progress bars


def _refusal(job: Job, claimed: dict[Path, Path], force: bool) -> str | None:
    """Why this image must not be written to its target (None: go ahead); claims the target."""
    target = job.target.resolve()
    if target == job.source.resolve():
        return f"its output {job.target} is the input itself; choose another -o"
    if target in claimed:
        return f"its output {job.target} is already written from {claimed[target]}; inputs share a file name"
    claimed[target] = job.source
    if job.target.exists() and not force:
        return f"output {job.target} exists; skipped (--force overwrites)"
    return None
