"""`spandrel-fdat upscale`: collect input images, name their outputs, upscale them, report.

Inputs are image files (by extension: .png, .jpg, .jpeg, .webp, .tif, .tiff, any case) and
folders (their image files, not their subfolders). Where outputs go is `paths`' rule (one file,
or a folder where each output keeps its input's file name). Every image goes through one path:
read (`images`), fit to the model's channels (`channels`), run whole or tile by tile (`tiling`;
`--tile auto` picks by the memory available, `memory`), write atomically. With several images,
reader and writer threads overlap decoding and encoding with the model (`_pipeline`).

An image that cannot be read, upscaled or written, or whose output exists (without `force`), is
reported on one line and counted as failed; the others go on. `UpscaleError` is for what stops
the whole command before any image (the model, the device, the options).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from spandrel import ImageModelDescriptor
from torch import Tensor

from .arch import load_model
from .channels import MODEL_CHANNELS, ChannelFit
from .convert import DTYPES
from .images import EXTENSIONS, FloatImage, encode_image, read_image, write_atomic
from .memory import OVERHEAD, available_memory, bytes_per_pixel, fits, largest_tile
from .models import default_model_path
from .paths import Job, OutputPathError, collect_inputs, is_uri, plan_outputs
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

DEFAULT_TILE = "auto"
"""Untiled when the image fits in memory (exact), else the largest tile that fits (`memory`)."""
DEFAULT_OVERLAP = 32
"""Overlap between neighbouring tiles, in input pixels."""

DEVICES = ("cpu", "cuda", "mps")


class UpscaleError(ValueError):
    """Stops the whole command before any image is upscaled; the message is one line naming the flag or file."""


# --- inputs and outputs -------------------------------------------------------------------------


def plan_jobs(
    images: Sequence[Path], output: str | os.PathLike[str], several: bool, create: bool = True
) -> tuple[list[Job], bool]:
    """`paths.plan_outputs` with its refusal as an UpscaleError."""
    try:
        return plan_outputs(images, output, several=several, create=create)
    except OutputPathError as err:
        raise UpscaleError(str(err)) from err


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
    tile: int  # 0: no tiling; else a multiple of `align` (auto: the largest tile that fits)
    overlap: int
    auto: bool = False  # --tile auto: untiled when the image fits in `available`, else `tile`
    available: int | None = None  # bytes free for the model when it was loaded (None: unknown)

    @classmethod
    def load(
        cls,
        model: Path,
        *,
        device: torch.device,
        dtype: str,
        tile: int | str,
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
        return cls.from_descriptor(
            descriptor, device=device, dtype=DTYPES[dtype], tile=tile, overlap=overlap, notes=notes
        )

    @classmethod
    def from_descriptor(
        cls,
        descriptor: ImageModelDescriptor,
        *,
        device: torch.device,
        dtype: torch.dtype,
        tile: int | str,
        overlap: int | None,
        notes: list[str] | None = None,
        available: int | str | None = "measure",
    ) -> Upscaler:
        """Move the model to `device` and `dtype`; round `tile` up to whole windows; check `overlap`.

        `tile="auto"`: untiled when an image fits in the memory available (measured now, unless
        `available` gives it in bytes), else the largest tile that fits (`memory`). An explicit
        tile that does not fit gets a warning in `notes`. `overlap=None`: the default, or a
        quarter of a smaller tile.
        """
        descriptor.model.to(device=device, dtype=dtype).eval()
        align = window_multiple(descriptor)
        free = available_memory(device) if available == "measure" else available
        assert not isinstance(free, str)
        per_pixel = bytes_per_pixel(getattr(descriptor.model, "config", None))
        auto = tile == "auto"
        if isinstance(tile, str) and not auto:
            raise UpscaleError(f"--tile {tile}: expected auto or a whole number of pixels")
        if isinstance(tile, str):
            tile = largest_tile(per_pixel, free, align)
        else:
            tile = 0 if tile == 0 else math.ceil(tile / align) * align
            if tile and not fits(tile * tile, per_pixel, free) and notes is not None:
                notes.append(
                    f"warning: --tile {tile} needs about {_gb(tile * tile * per_pixel + OVERHEAD)} per tile, more than "
                    f"the {_gb(free)} available could hold; --tile auto would take "
                    f"{largest_tile(per_pixel, free, align)}"
                )
        if overlap is None:
            overlap = min(DEFAULT_OVERLAP, tile // 4)
        elif tile and 2 * overlap > tile:
            raise UpscaleError(f"--overlap {overlap}: must be at most half the tile ({tile})")
        return cls(descriptor, device, dtype, tile, overlap, auto, free)

    @property
    def per_pixel(self) -> int:
        """Peak bytes per input pixel of an untiled run (`memory.bytes_per_pixel`)."""
        return bytes_per_pixel(getattr(self.descriptor.model, "config", None))

    def tile_for(self, height: int, width: int) -> int:
        """The tile side this image is run with (0: untiled)."""
        if self.auto and fits(height * width, self.per_pixel, self.available):
            return 0
        return self.tile

    def memory_warning(self, image: FloatImage) -> str | None:
        """A warning line when this image is run untiled by request (--tile 0) and will not fit."""
        pixels = image.height * image.width
        if self.auto or self.tile or fits(pixels, self.per_pixel, self.available):
            return None
        return (
            f"warning: --tile 0 needs about {_gb(pixels * self.per_pixel + OVERHEAD)} for this image, more than the "
            f"{_gb(self.available)} available could hold; --tile auto tiles it"
        )

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
        tile = self.tile_for(image.height, image.width)
        return passes * count_tiles(image.height, image.width, tile, self.overlap, self.align)

    def _run(self, tile: Tensor) -> Tensor:
        with torch.inference_mode():
            return self.descriptor.model(tile.to(device=self.device, dtype=self.dtype)).float()

    def run_batch(self, batch: Tensor, on_tile: Callable[[], None] | None = None) -> Tensor:
        """The model over a (B, model_in, H, W) batch, tile by tile: (B, model_out, H*s, W*s) float32, unclamped."""
        return upscale_tiled(
            self._run,
            batch,
            scale=self.descriptor.scale,
            tile=self.tile_for(batch.shape[-2], batch.shape[-1]),
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


def _gb(size: float | None) -> str:
    return "an unknown amount" if size is None else f"{size / 2**30:.1f} GB"


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
    destination: Path | str | None  # the output file or folder (str: a URI); None when nothing was planned
    single_file: bool
    skipped: int = 0  # --resume: outputs that were already there
    failures: tuple[Path | str, ...] = ()  # the inputs that failed, in order (str: a URI)
    timings: dict[str, float] = field(default_factory=dict)  # decode / infer / encode seconds, summed

    def line(self) -> str:
        """One line: counts, time and rate, what was written (and only that), the failures by name."""
        rate = self.megapixels / self.seconds if self.seconds > 0 else 0.0
        if self.done == 0 or self.destination is None:
            where = "nothing written"
        elif self.single_file:
            where = f"output: {self.destination}"
        else:
            sep = "/" if is_uri(self.destination) else os.sep
            where = f"outputs in {str(self.destination).rstrip(sep)}{sep}"
        total = self.done + self.failed + self.skipped
        skipped = f", {self.skipped} already done" if self.skipped else ""
        line = (
            f"upscaled {self.done} of {total} images ({self.failed} failed{skipped}) in {self.seconds:.1f} s, "
            f"{rate:.3g} MP/s ({self.megapixels:.3g} input megapixels); {where}"
        )
        if self.failures:
            names = [str(p) for p in self.failures[:5]]
            more = f" and {len(self.failures) - 5} more" if len(self.failures) > 5 else ""
            line += f"; failed: {', '.join(names)}{more}"
        return line


def upscale_files(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    model: Path | None = None,
    tile: int | str = DEFAULT_TILE,
    overlap: int | None = None,
    dtype: str = "fp32",
    device: str | None = None,
    force: bool = False,
    resume: bool = False,
    scale: int | None = None,
    progress: bool | None = None,
    report: Callable[[str], None] | None = None,
    workers: int | None = None,
) -> Summary:
    """Upscale every input image into `output`; returns the summary (`failed` > 0: some images failed).

    Pipelined: `workers` threads read and decode ahead of the model (at most `2 * workers`
    images waiting), the model runs on this thread one image at a time, and `workers` threads
    encode and write behind it; None picks 2, 0 runs everything one at a time on this thread.
    The outputs are the same bytes either way. `resume`: an output that exists is taken as done
    (writes are atomic, so an existing output is complete) and skipped, not failed.
    `progress`: tqdm bars on stderr (None: only when stderr is a terminal). `report` gets each
    one-line failure, warning and note (default: stderr, above the bars).
    """
    from tqdm import tqdm

    say = report or _to_stderr
    images, rejected, several = gather_inputs(inputs)
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
    jobs, single_file = plan_jobs(images, output, several) if images else ([], False)
    for note in notes:
        say(note)
    failures: list[Path] = []

    def fail(path: Path, reason: str) -> None:
        failures.append(path)
        say(" ".join(f"{path}: {reason}".split()))  # one line, whatever the reason held

    for path, why in rejected:
        fail(path, why)
    start = time.perf_counter()
    runnable, refused, skipped = select_jobs(jobs, force=force, resume=resume)
    for path, why in refused:
        fail(path, why)
    disable = None if progress is None else not progress
    timings = {"decode": 0.0, "infer": 0.0, "encode": 0.0}
    done, megapixels = 0, 0.0
    with tqdm(total=len(runnable), unit="image", desc="images", file=sys.stderr, disable=disable) as bar:
        for job, outcome in _pipeline(upscaler, runnable, say, disable, timings, 2 if workers is None else workers):
            if isinstance(outcome, float):
                megapixels += outcome
                done += 1
            else:
                fail(job.source, outcome)
            bar.update()
    destination = (jobs[0].target if single_file else Path(output)) if jobs else None
    return Summary(
        done,
        len(failures),
        time.perf_counter() - start,
        megapixels,
        destination,
        single_file,
        skipped,
        tuple(failures),
        timings,
    )


def _reason(source: str | os.PathLike[str], err: Exception) -> str:
    """The one-line reason the image `source` (a path or URI) failed."""
    if isinstance(err, (ValueError, OSError)):  # the image's own problem
        return str(err).removeprefix(f"{os.fspath(source)}: ")
    return f"upscaling failed ({type(err).__name__}: {err})"  # from torch, e.g. out of memory


_TIMINGS_LOCK = threading.Lock()


def _decode(job: Job, timings: dict[str, float]) -> tuple[FloatImage, list[str]]:
    """Read one image; its warnings (e.g. Pillow's decompression-bomb warning) as lines."""
    begin = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", ResourceWarning)  # a reader's unclosed file is not the user's business
        image = read_image(job.source)
    with _TIMINGS_LOCK:
        timings["decode"] += time.perf_counter() - begin
    return image, [" ".join(f"{job.source}: warning: {w.message}".split()) for w in caught]


def _encode(result: FloatImage, job: Job, timings: dict[str, float]) -> None:
    begin = time.perf_counter()
    write_atomic(encode_image(result, job.target), job.target)
    with _TIMINGS_LOCK:
        timings["encode"] += time.perf_counter() - begin


def _pipeline(
    upscaler: Upscaler,
    jobs: Sequence[Job],
    say: Callable[[str], None],
    disable: bool | None,
    timings: dict[str, float],
    workers: int,
) -> Iterator[tuple[Job, float | str]]:
    """Each job with its input megapixels (written) or why it failed, in order.

    Readers decode up to `2 * workers` images ahead; the model runs here; writers encode and
    write behind. `workers=0`: all on this thread, one image at a time.
    """
    from tqdm import tqdm

    def infer(image: FloatImage, job: Job) -> FloatImage:
        warning = upscaler.memory_warning(image)
        if warning is not None:
            say(f"{job.source}: {warning}")
        begin = time.perf_counter()
        tiles = tqdm(
            total=upscaler.tiles(image),
            unit="tile",
            desc=job.source.name,
            leave=False,
            file=sys.stderr,
            disable=disable,
        )
        with tiles:
            result = upscaler.upscale(image, on_tile=tiles.update)
        timings["infer"] += time.perf_counter() - begin
        return result

    if workers == 0:
        for job in jobs:
            try:
                image, lines = _decode(job, timings)
                for line in lines:
                    say(line)
                _encode(infer(image, job), job, timings)
                yield job, image.width * image.height / 1e6
            except Exception as err:
                yield job, _reason(job.source, err)
        return
    with ThreadPoolExecutor(workers, "decode") as readers, ThreadPoolExecutor(workers, "encode") as writers:
        pending = iter(jobs)
        reads: deque[tuple[Job, Future[tuple[FloatImage, list[str]]]]] = deque()
        writes: deque[tuple[Job, float, Future[None]]] = deque()

        def read_ahead() -> None:
            while len(reads) < 2 * workers:
                job = next(pending, None)
                if job is None:
                    return
                reads.append((job, readers.submit(_decode, job, timings)))

        def finished(block: bool) -> Iterator[tuple[Job, float | str]]:
            while writes and (block or writes[0][2].done() or len(writes) > 2 * workers):
                job, megapixels, future = writes.popleft()
                try:
                    future.result()
                    yield job, megapixels
                except Exception as err:
                    yield job, _reason(job.source, err)

        read_ahead()
        while reads:
            job, read = reads.popleft()
            read_ahead()
            try:
                image, lines = read.result()
                for line in lines:
                    say(line)
                result = infer(image, job)
            except Exception as err:
                yield from finished(True)  # keep the order of the report
                yield job, _reason(job.source, err)
                continue
            writes.append((job, image.width * image.height / 1e6, writers.submit(_encode, result, job, timings)))
            yield from finished(False)
        yield from finished(True)


def _to_stderr(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)  # above the progress bars


def gather_inputs(inputs: Sequence[str | os.PathLike[str]]) -> tuple[list[Path], list[tuple[Path, str]], bool]:
    """The input images, the inputs refused with their reasons, and whether there are several (`-o` a folder)."""
    images, rejected = collect_inputs(inputs)
    if not images and not rejected:
        raise UpscaleError(f"no input images in {', '.join(map(str, inputs))} (expected {', '.join(EXTENSIONS)})")
    return images, rejected, len(images) > 1 or any(Path(p).is_dir() for p in inputs)


def select_jobs(jobs: Sequence[Job], *, force: bool, resume: bool) -> tuple[list[Job], list[tuple[Path, str]], int]:
    """The jobs to run, the jobs refused with their reasons, and how many `resume` skipped as already done."""
    claimed: dict[Path, Path] = {}  # output -> the input writing it
    runnable: list[Job] = []
    refused: list[tuple[Path, str]] = []
    skipped = 0
    for job in jobs:
        if resume and job.target.is_file() and job.target.resolve() != job.source.resolve():
            skipped += 1
            claimed[job.target.resolve()] = job.source
            continue
        reason = _refusal(job, claimed, force)
        if reason is None:
            runnable.append(job)
        else:
            refused.append((job.source, reason))
    return runnable, refused, skipped


def _refusal(job: Job, claimed: dict[Path, Path], force: bool) -> str | None:
    """Why this image must not be written to its target (None: go ahead); claims the target."""
    target = job.target.resolve()
    same, by = target == job.source.resolve(), claimed.get(target)
    if not same and by is None:
        claimed[target] = job.source
    return refusal(job.target, same=same, claimed_by=by, exists=job.target.exists(), force=force)


def refusal(target: str | os.PathLike[str], *, same: bool, claimed_by: object, exists: bool, force: bool) -> str | None:
    """Why an image must not be written to `target` (None: go ahead), in the same words for paths and URIs.

    `same`: the target is the input itself; `claimed_by`: the input already writing it (None: none).
    """
    if same:
        return f"its output {os.fspath(target)} is the input itself; choose another -o"
    if claimed_by is not None:
        return f"its output {os.fspath(target)} is already written from {claimed_by}; inputs share a file name"
    if exists and not force:
        return f"output {os.fspath(target)} exists; skipped (--force overwrites)"
    return None
