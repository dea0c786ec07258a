"""Errors and warnings a user of spandrel_fdat can see.

Every error is a `ValueError`, with a one-line message in the style
`FDAT checkpoint: <key>: expected <what>, found <what>` (or `FDAT file: <path>: ...`):
hosts such as chaiNNer show nothing but the message, so it names what is wrong.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal

Interface = Literal["python", "cli", "host"]
"""Where a user meets a message: Python (`load_model`), the command line, or a host (spandrel's loader)."""

_interface: ContextVar[Interface | None] = ContextVar("spandrel_fdat_interface", default=None)

SCALE_ENV = "SPANDREL_FDAT_SCALE"
"""Environment variable: the scale to use for checkpoints that do not store it."""

_SCALE_REMEDIES: dict[Interface, str] = {
    "cli": "--scale N",
    "python": "spandrel_fdat.load_model(path, scale=N)",
    # a host loads through spandrel's loader (chaiNNer, ComfyUI's stock node) or, in ComfyUI, our node
    "host": f"the environment variable {SCALE_ENV}=N, set before the host starts "
    '(in ComfyUI, also the scale of the "Load Upscale Model (FDAT)" node)',
}


@contextlib.contextmanager
def interface(name: Interface) -> Iterator[None]:
    """Within this block, messages name the remedies of `name` (the command line sets "cli")."""
    token = _interface.set(name)
    try:
        yield
    finally:
        _interface.reset(token)


def current_interface(default: Interface) -> Interface:
    """The interface set by `interface()`, else `default` (the entry point's own)."""
    return _interface.get() or default


def scale_remedy(where: Interface) -> str:
    """How a user of `where` chooses the scale of a checkpoint that does not record it."""
    return _SCALE_REMEDIES[where]


def scale_warning_text(scale: int, where: Interface) -> str:
    """The FDATScaleWarning message, naming the remedy of the interface in use."""
    return f"this FDAT checkpoint does not record its scale; loaded as x{scale}. Choose with {scale_remedy(where)}."


class FDATCheckpointError(ValueError):
    """A state dict that is FDAT but cannot be loaded: the message names the key.

    `key` is the offending state-dict key (None where the problem is not one key).
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(f"FDAT checkpoint: {key}: {message}" if key else f"FDAT checkpoint: {message}")
        self.key = key


class FDATFileError(ValueError):
    """A checkpoint file `load_model` cannot read: missing, a directory, empty, an unknown
    extension, truncated or corrupt, or a pickle that would run code (refused, nothing run).

    `path` is the file; the original exception, if any, is chained as `__cause__`.
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str]) -> None:
        super().__init__(f"FDAT file: {os.fspath(path)}: {message}")
        self.path = os.fspath(path)


class FDATScaleWarning(UserWarning):
    """The checkpoint does not record its scale; a default or hint was used."""


class FDATNonFiniteWarning(UserWarning):
    """The checkpoint loaded, but holds NaN or infinite weights: the model's outputs will be too.

    The message names the first such key.
    """


class FDATHalfOverflowWarning(UserWarning):
    """An fp16 forward overflowed and was recomputed in bf16 or fp32 (once per model)."""


def one_line(err: BaseException) -> str:
    """An exception's message on one line, at most 200 characters: for messages that quote it."""
    text = " ".join(str(err).split())
    return text if len(text) <= 200 else text[:197] + "..."
