"""Where each upscaled image goes: the `-o` naming rules, shared by the CLI, the pipeline and Ray.

`-o OUTPUT` is one file when it has an image extension (.png, .jpg, .jpeg, .webp, .tif, .tiff)
and is not an existing folder; then there must be exactly one input image. It is a folder
(created if missing; each output keeps its input's file name) when it already is a folder,
ends with a path separator, or has no extension and there are several inputs (more than one
image, or any input folder). Anything else is refused before any work: an unknown extension
(`-o x.bmp`) names the supported ones, and one input with an extension-less `-o noext` asks for
an extension (a file) or a trailing `/` (a folder), instead of guessing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .images import EXTENSIONS, image_format

__all__ = ["Job", "OutputPathError", "collect_inputs", "is_uri", "output_is_file", "plan_outputs"]


def is_uri(name: str | os.PathLike[str]) -> bool:
    """True for a URI of a pyarrow filesystem (s3://bucket/x), which only `--ray` reads and writes."""
    return "://" in os.fspath(name)


class OutputPathError(ValueError):
    """`-o` cannot be used for these inputs; the message is one line naming the flag and the fix."""


@dataclass(frozen=True)
class Job:
    """One image to upscale: `source` is read, the result is written to `target`."""

    source: Path
    target: Path


def collect_inputs(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The image files among `paths` (folders: their image files, sorted), and the rejected paths with why."""
    images: list[Path] = []
    rejected: list[tuple[Path, str]] = []
    for path in map(Path, paths):
        if path.is_dir():
            images.extend(sorted(p for p in path.iterdir() if p.is_file() and image_format(p) is not None))
        elif not path.exists():
            rejected.append((path, "no such file or folder"))
        elif image_format(path) is None:
            rejected.append((path, f"not an image file (expected {', '.join(EXTENSIONS)})"))
        else:
            images.append(path)
    return images, rejected


def output_is_file(output: str | os.PathLike[str], *, several: bool) -> bool:
    """Whether `-o output` names one file (else a folder), by the rules above; raises OutputPathError.

    `several`: there is more than one input image, or an input folder.
    """
    text = os.fspath(output)
    path = Path(text)
    if path.is_dir() or text.endswith(("/", os.sep)):
        return False
    if path.exists():
        if image_format(path) is None:
            raise OutputPathError(f"-o {text}: exists and is not a folder or an image file ({', '.join(EXTENSIONS)})")
        return True
    if path.suffix and image_format(path) is None:
        raise OutputPathError(
            f"-o {text}: {path.suffix} is not a supported image extension; use one of {', '.join(EXTENSIONS)}, "
            f"or end it with {os.sep} for a folder"
        )
    if image_format(path) is not None:
        return True
    if several:
        return False
    raise OutputPathError(
        f"-o {text}: has no extension; for one output file add one of {', '.join(EXTENSIONS)}, "
        f"for a folder end it with {os.sep}"
    )


def plan_outputs(
    images: Sequence[Path], output: str | os.PathLike[str], *, several: bool | None = None, create: bool = True
) -> tuple[list[Job], bool]:
    """Each image's output path, and whether `output` is a single file (else a folder).

    `several`: whether the inputs count as several (default: more than one image). `create`:
    make the output folder (or the file's parent folder). Raises OutputPathError.
    """
    as_file = output_is_file(output, several=len(images) > 1 if several is None else several)
    path = Path(output)
    if as_file:
        if len(images) != 1:
            raise OutputPathError(
                f"-o {os.fspath(output)}: names one image file, but there are {len(images)} input images; give a folder"
            )
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        return [Job(images[0], path)], True
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return [Job(image, path / image.name) for image in images], False
