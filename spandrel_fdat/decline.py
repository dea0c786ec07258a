"""Why a state dict is not FDAT: one phrase naming the keys that disqualify it.

Used by every entry point that declines a checkpoint (`load_model`, `inspect`,
`upscale -m`, `convert`), so the same file gets the same words everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .inference import _FDAT_KEY, _FDAT_SIGNATURE, _is_dense

__all__ = ["decline_reason", "not_fdat_message"]

_TOP_LEVEL = ("conv_first", "conv_after", "groups", "upsampler")
"""FDAT's top-level modules: a foreign key under one of them is shown whole, others as `prefix.*`."""

_FAMILIES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("flow_net.", "temporal_fuse.", "shallow_stem", "field_prefill"), "a TFDAT video checkpoint, not FDAT"),
    ((".attn.dictionary", ".attn.r_q.", ".attn.e_q.", ".attn.rel_pos_bias"), "an FDAT-RD checkpoint, not FDAT"),
    (
        (".norm1.", ".norm2.", ".relative_position_bias_table", ".interaction.", ".conv_after_group."),
        "a FastDAT prototype checkpoint, not FDAT",
    ),
)
_SHOWN = 3


def _group(key: str) -> str:
    top = key.split(".", 1)[0]
    return key if top in _TOP_LEVEL or "." not in key else f"{top}.*"


def _family(keys: list[str]) -> str | None:
    for markers, what in _FAMILIES:
        if any(marker in key for key in keys for marker in markers):
            return what
    return None


def decline_reason(state_dict: Mapping[Any, Any]) -> str:
    """One phrase: the keys that make `state_dict` not FDAT and, where known, what the file is."""
    if not isinstance(state_dict, Mapping):
        return f"found {type(state_dict).__name__}, not a state dict"
    if not state_dict:
        return "the state dict is empty"
    if not all(isinstance(k, str) for k in state_dict):
        return "it has keys that are not strings"
    keys = list(state_dict)
    foreign = [k for k in keys if not _FDAT_KEY.fullmatch(k)]
    if foreign:
        groups = list(dict.fromkeys(_group(k) for k in foreign))
        shown = ", ".join(groups[:_SHOWN]) + (f" and {len(groups) - _SHOWN} more" if len(groups) > _SHOWN else "")
        what = _family(foreign) or "keys outside the FDAT layout"
        return f"it has {shown} ({what})"
    for key in keys:
        value = state_dict[key]
        if not (key.endswith(".attn.bias") and _is_dense(value) and value.ndim == 3):
            continue
        if math.isqrt(value.shape[1]) ** 2 != value.shape[1]:  # (heads, window², window²)
            return f"{key} has a non-square window ({tuple(value.shape)}; an FDAT-RD checkpoint, not FDAT)"
    missing = [
        name
        for name, present in (
            ("conv_first.weight", "conv_first.weight" in state_dict or "conv_first.1.weight" in state_dict),
            ("conv_after.weight", "conv_after.weight" in state_dict),
            ("groups.N.blocks.N.ffn/inter", any(_FDAT_SIGNATURE.match(k) for k in keys)),
            ("upsampler.*", any(k.startswith("upsampler.") for k in keys)),
        )
        if not present
    ]
    if not missing:
        return "its keys do not form an FDAT network"
    return f"it has no {', '.join(missing)} (FDAT's keys are conv_first, groups.N.blocks.N, conv_after, upsampler)"


def not_fdat_message(label: str, state_dict: Mapping[Any, Any]) -> str:
    """`<label>: not an FDAT checkpoint: <reason>`, the one line every entry point gives."""
    return f"{label}: not an FDAT checkpoint: {decline_reason(state_dict)}"
