"""Errors and warnings a user of spandrel_fdat can see."""

from __future__ import annotations


class FDATCheckpointError(ValueError):
    """A state dict that is FDAT but cannot be loaded: the message names the key.

    `key` is the offending state-dict key (None where the problem is not one key).
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(f"FDAT checkpoint: {key}: {message}" if key else f"FDAT checkpoint: {message}")
        self.key = key


class FDATScaleWarning(UserWarning):
    """The checkpoint does not record its scale; a default or hint was used."""
