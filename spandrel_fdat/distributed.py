"""`upscale --ray`: the same per-image steps as the CLI, scheduled by Ray Data over a cluster.

Needs the optional extra: `pip install 'spandrel-fdat[ray]'`. Inputs and output are local paths or
URIs of any pyarrow filesystem (s3://, gs://, ...; `pyarrow.fs.FileSystem.from_uri`, credentials and
endpoint from the environment). The inputs are planned here with the CLI's naming rules (`--resume` drops existing outputs before the dataset is built); a Ray Dataset of
(source, target) rows goes through a class-based `map_batches` UDF that loads the model once per
actor, reads each file's exact bytes, upscales with `pipeline.upscale_bytes` and writes atomically
(temporary name, then rename), so a retried task rewrites the same name and never duplicates an
output. Each row comes back with its error ("" when written): a bad image is named in the summary
and does not stop the job. A dead actor is restarted and its tasks retried by Ray.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .images import EXTENSIONS, image_format, write_atomic
from .paths import is_uri
from .upscale import (
    DEFAULT_TILE,
    Summary,
    UpscaleError,
    _reason,
    gather_inputs,
    plan_jobs,
    refusal,
    select_jobs,
)

__all__ = ["RAY_MISSING", "TEST_EXIT_ENV", "upscale_ray"]

RAY_MISSING = "--ray needs Ray: pip install 'spandrel-fdat[ray]'"
TEST_EXIT_ENV = "SPANDREL_FDAT_RAY_TEST_EXIT"
"""Tests only: "NAME:MARKER" makes the actor that first meets input NAME die (os._exit) once, after creating MARKER."""


class _Upscale:
    """The map_batches UDF: one model per actor; a batch of (source, target) rows in, their errors out.

    torch runs on `threads` threads (the CPUs Ray gives the actor): the CLI's bytes when it is the
    CLI's thread count, since float sums split over another number of threads can round differently.
    """

    def __init__(self, options: dict[str, Any], threads: int) -> None:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI: no spinning on a shared node
        import torch

        from .pipeline import load_for_upscale

        torch.set_num_threads(threads)
        self.upscaler = load_for_upscale(**options)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        from .pipeline import decode, encode, upscale_image

        errors: list[str] = []
        megapixels: list[float] = []
        for source, target in zip(map(str, batch["source"]), map(str, batch["target"]), strict=True):
            _die_once_for_tests(source)
            try:
                image = decode(_read(source), source)
                _write(encode(upscale_image(self.upscaler, image), target), target)
            except Exception as err:  # an image's failure is its row's, not the job's
                errors.append(" ".join(_reason(source, err).split()))
                megapixels.append(0.0)
            else:
                errors.append("")
                megapixels.append(image.width * image.height / 1e6)
        return {"source": [str(s) for s in batch["source"]], "error": errors, "megapixels": megapixels}


def _die_once_for_tests(source: str) -> None:
    spec = os.environ.get(TEST_EXIT_ENV)
    if not spec:
        return
    name, marker = spec.split(":", 1)
    if source.rpartition("/")[2] == name and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)  # a real process death: Ray restarts the actor and retries the task


def _read(uri: str) -> bytes:
    """A file's bytes from a local path or a pyarrow filesystem URI (s3://, gs://, hdfs://)."""
    if not is_uri(uri):
        return Path(uri).read_bytes()
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(uri)
    with fs.open_input_stream(path) as f:
        return bytes(f.read())


def _write(data: bytes, uri: str) -> None:
    """Write whole or not at all: local files via write_atomic; other filesystems via a temporary name + move."""
    if not is_uri(uri):
        write_atomic(data, uri)
        return
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(uri)
    head, _, name = path.rpartition("/")
    temporary = f"{head}/.{name}.{os.getpid()}.partial"
    with fs.open_output_stream(temporary) as f:
        f.write(data)
    fs.move(temporary, path)  # object stores copy then delete: atomic for readers of `path`


def _init_ray(address: str | None) -> Any:
    try:
        import ray
        import ray.data  # `ray` without the [data] extra lacks pandas/pyarrow
    except ImportError:
        raise UpscaleError(RAY_MISSING) from None
    if not ray.is_initialized():
        ray.init(address=address or None, log_to_driver=False, logging_level=logging.WARNING)
    return ray


def _check_actor_fits(ray: Any, num_cpus: float, num_gpus: float) -> None:
    """On a Ray without an autoscaler (a local one), refuse an actor no node can hold: it would wait forever."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    for flag, name, key, wanted in (
        ("--ray-cpus", "num_cpus", "CPU", num_cpus),
        ("--ray-gpus", "num_gpus", "GPU", num_gpus),
    ):
        largest = max((node.get(key, 0) for node in nodes), default=0)
        if wanted > largest:
            raise UpscaleError(
                f"{flag} {wanted:g} ({name}): no node of this Ray has {wanted:g} {key}s (the largest has {largest:g}); "
                f"ask for at most {largest:g}"
            )


def upscale_ray(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    address: str | None = None,
    model: Path | None = None,
    tile: int | str = DEFAULT_TILE,
    overlap: int | None = None,
    dtype: str = "fp32",
    device: str | None = None,
    force: bool = False,
    resume: bool = False,
    scale: int | None = None,
    concurrency: int = 1,
    num_cpus: float = 1,
    num_gpus: float = 0,
    batch_size: int = 1,
    max_retries: int = 3,
) -> Summary:
    """Upscale every input image into `output` on Ray (local cluster when `address` is None); the CLI's summary.

    `concurrency`: model actors; `num_cpus`: CPUs per actor, and the threads torch runs on in it
    (at least 1); `num_gpus`: GPUs per actor; `batch_size`: images per UDF call. `max_retries`:
    restarts of a dead actor and retries of its tasks. A local Ray (`address` None, or an
    existing `ray.init()` in this process) refuses an actor larger than its largest node.
    """
    ray = _init_ray(address)
    if not address or address == "local":
        _check_actor_fits(ray, num_cpus, num_gpus)
    if any(is_uri(name) for name in [*inputs, output]):
        rows, failures, skipped, destination, single_file = _plan_uris(inputs, output, force=force, resume=resume)
    else:
        rows, failures, skipped, destination, single_file = _plan_paths(inputs, output, force=force, resume=resume)
    start = time.perf_counter()
    done, megapixels = 0, 0.0
    if rows:
        options = {"model_path": model, "device": device, "dtype": dtype, "tile": tile, "overlap": overlap}
        options["scale"] = scale
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*")  # max_restarts has no named parameter yet
        dataset = ray.data.from_items(rows).map_batches(
            _Upscale,
            fn_constructor_kwargs={"options": options, "threads": max(1, int(num_cpus))},
            compute=ray.data.ActorPoolStrategy(size=concurrency),
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            batch_size=batch_size,
            batch_format="numpy",
            max_restarts=max_retries,
            max_task_retries=max_retries,
        )
        for row in dataset.iter_rows():
            source = str(row["source"])
            if row["error"]:
                failures.append((source if is_uri(source) else Path(source), str(row["error"])))
            else:
                done += 1
                megapixels += float(row["megapixels"])
    for path, why in failures:
        print(" ".join(f"{path}: {why}".split()), file=sys.stderr)
    return Summary(
        done,
        len(failures),
        time.perf_counter() - start,
        megapixels,
        destination,
        single_file,
        skipped,
        tuple(path for path, _ in failures),
    )


Plan = tuple[list[dict[str, str]], list[tuple[Path | str, str]], int, Path | str | None, bool]
"""(source, target) rows to run, (input, reason) failures, outputs already done, destination, one file."""


def _plan_paths(inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], **select: bool) -> Plan:
    """Local inputs and output: the CLI's own steps (`upscale`)."""
    images, rejected, several = gather_inputs(inputs)
    jobs, single_file = plan_jobs(images, output, several) if images else ([], False)
    runnable, refused, skipped = select_jobs(jobs, **select)
    rows = [{"source": str(job.source), "target": str(job.target)} for job in runnable]
    destination = (jobs[0].target if single_file else Path(output)) if jobs else None
    return rows, [*rejected, *refused], skipped, destination, single_file


def _kind(name: str) -> str | None:
    """ "file", "folder" or None (missing), for a local path or a pyarrow filesystem URI (s3://, gs://, ...)."""
    if not is_uri(name):
        path = Path(name)
        return "folder" if path.is_dir() else "file" if path.exists() else None
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(name)
    kind = fs.get_file_info(path).type
    return {pyarrow.fs.FileType.File: "file", pyarrow.fs.FileType.Directory: "folder"}.get(kind)


def _files_in(folder: str) -> list[str]:
    """The files directly in a local folder or under a URI prefix, sorted."""
    if not is_uri(folder):
        return sorted(str(p) for p in Path(folder).iterdir() if p.is_file())
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(folder)
    base = folder.rstrip("/")
    infos = fs.get_file_info(pyarrow.fs.FileSelector(path.rstrip("/")))
    return sorted(f"{base}/{info.base_name}" for info in infos if info.type == pyarrow.fs.FileType.File)


def _plan_uris(inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], **select: bool) -> Plan:
    """Inputs or output on a pyarrow filesystem (a URI): the CLI's rules, names kept as given."""
    images: list[str] = []
    failures: list[tuple[Path | str, str]] = []
    several = False
    for name in (os.fspath(i) for i in inputs):
        kind = _kind(name)
        several = several or kind == "folder"
        if kind == "folder":
            images.extend(f for f in _files_in(name) if image_format(f) is not None)
        elif kind is None:
            failures.append((name, "no such file or folder"))
        elif image_format(name) is None:
            failures.append((name, f"not an image file (expected {', '.join(EXTENSIONS)})"))
        else:
            images.append(name)
    if not images and not failures:
        gather_inputs(inputs)  # raises the CLI's "no input images" error
    out = os.fspath(output)
    if not images:
        return [], failures, 0, None, False
    as_folder = f"{out.rstrip('/')}/" if _kind(out) == "folder" else out  # an existing folder needs no trailing /
    # the CLI's -o rule decides file or folder and refuses; the names are built here (pathlib mangles "s3://")
    names = [Path(i.rpartition("/")[2]) for i in images]
    _, single_file = plan_jobs(names, as_folder, several or len(images) > 1, create=not is_uri(out))
    targets = [out] if single_file else [f"{out.rstrip('/')}/{i.rpartition('/')[2]}" for i in images]
    rows: list[dict[str, str]] = []
    claimed: dict[str, str] = {}
    skipped = 0
    for source, target in zip(images, targets, strict=True):
        key = target if is_uri(target) else str(Path(target).resolve())
        same = key == (source if is_uri(source) else str(Path(source).resolve()))
        exists = _kind(target) == "file"
        if select["resume"] and exists and not same:
            skipped += 1
            claimed[key] = source
            continue
        by = claimed.get(key)
        why = refusal(target, same=same, claimed_by=by, exists=exists, force=select["force"])
        if not same and by is None:
            claimed[key] = source
        if why is None:
            rows.append({"source": source, "target": target})
        else:
            failures.append((source, why))
    return rows, failures, skipped, out.rstrip("/") if not single_file else out, single_file
