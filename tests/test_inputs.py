"""Inputs to a loaded FDAT model: any size its descriptor admits works, anything else is one clear error.

Every bundled checkpoint (every layout family) is loaded and given images
smaller than a window, 1x1, very wide (1x2000) and very tall, odd sizes, sizes
that are no multiple of the window or of the unshuffle factor: each gives an
image of exactly (h*scale, w*scale). The size-requirement sweep follows
spandrel's own test style (candidates from `size_requirements.minimum` in steps
of `multiple_of`, tested in non-square pairs and as squares). A tensor with the
wrong channel count, rank or an empty dimension raises a ValueError naming the
expected layout before any layer runs.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from spandrel import ImageModelDescriptor, canonicalize_state_dict

from spandrel_fdat import FDATArch
from tests.helpers import SMALL, build

ROOT = Path(__file__).resolve().parent.parent
FIXTURES_DIR = ROOT / "fixtures"
MANIFEST = json.loads((FIXTURES_DIR / "manifest.json").read_text())
NAMES = sorted(MANIFEST["fixtures"])


@functools.cache
def loaded(name: str) -> ImageModelDescriptor[Any]:
    entry = MANIFEST["fixtures"][name]
    sd = canonicalize_state_dict(load_file(str(FIXTURES_DIR / f"{name}.safetensors")))
    return FDATArch().load_with(sd, scale=entry["scale_hint"])


def window(desc: ImageModelDescriptor[Any]) -> int:
    return int(desc.model.config.window_size)


def run(desc: ImageModelDescriptor[Any], height: int, width: int, *, through_descriptor: bool = False) -> None:
    """One forward pass: exactly (h*scale, w*scale), finite."""
    gen = torch.Generator().manual_seed(height * 10007 + width)
    x = torch.rand(1, desc.input_channels, height, width, generator=gen)
    with torch.no_grad():
        out = desc(x) if through_descriptor else desc.model(x)
    expected = (1, desc.output_channels, height * desc.scale, width * desc.scale)
    assert tuple(out.shape) == expected, f"{height}x{width}: expected {expected}, got {tuple(out.shape)}"
    assert torch.isfinite(out).all(), f"{height}x{width}: non-finite output"


# --- awkward sizes, every layout ------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_tiny_and_extreme_sizes(name: str) -> None:
    desc = loaded(name)
    ws = window(desc)
    u = desc.model.config.unshuffle_factor
    sizes = {
        (1, 1),
        (1, 2),
        (2, 1),
        (ws - 1, ws - 1),  # smaller than one window
        (ws - 1, 1),
        (ws + 1, 2 * ws + 1),  # no multiple of the window
        (u + 1, u - 1 or 1),  # no multiple of the unshuffle factor
        (1, 2000),  # very wide
        (2000, 1),  # very tall
    }
    for h, w in sorted(sizes):
        run(desc, h, w)


def test_image_smaller_than_a_large_window() -> None:
    """A window of 16 on images down to 1x1: padded inside the attention, cropped after."""
    for spec in (
        dict(scale=2, upsampler_type="pixelshuffle"),
        dict(scale=2, unshuffle_mod=True),
        dict(scale=3, layout="lhan", upsampler_type="transpose+conv"),
    ):
        model = build(0, **{**SMALL, "window_size": 16, **spec})
        s = model.config.scale
        for h, w in ((1, 1), (3, 5), (15, 15), (16, 17), (1, 40)):
            with torch.no_grad():
                out = model(torch.rand(2, 3, h, w))
            assert out.shape == (2, 3, h * s, w * s)
            assert torch.isfinite(out).all()


# --- spandrel's size-requirement test, in its style -------------------------------------
def size_candidates(desc: ImageModelDescriptor[Any], max_size: int, max_candidates: int) -> list[int]:
    """Sizes the descriptor admits: from `minimum` in steps of `multiple_of` (0 left out)."""
    req = desc.size_requirements
    start = req.minimum // req.multiple_of * req.multiple_of
    sizes = [s for s in range(start, max_size + 1, req.multiple_of) if s > 0 and req.check(s, s)]
    return sizes[:max_candidates]


@pytest.mark.parametrize("name", NAMES)
def test_size_requirements_sweep(name: str) -> None:
    """Every admitted size works: non-square pairs (w, h) = (c[i], c[i+1]) and (c[i+1], c[i]), and squares,
    through the descriptor as a host calls it (`desc(image)`) and the bare module."""
    desc = loaded(name)
    req = desc.size_requirements
    assert req.minimum <= 1 and req.multiple_of == 1 and not req.square  # FDAT pads itself: any size
    candidates = size_candidates(desc, max_size=2 * window(desc) + 3, max_candidates=12)
    assert candidates[:3] == [1, 2, 3]
    if len(candidates) % 2:
        candidates.append(candidates[-1] + 1)
    for i in range(0, len(candidates), 2):
        a, b = candidates[i], candidates[i + 1]
        run(desc, b, a, through_descriptor=True)
        run(desc, a, b)
    for s in candidates[::3]:
        run(desc, s, s, through_descriptor=True)


# --- inputs that are not (batch, in_ch, h, w) images ------------------------------------------
def _forward_calls(desc: ImageModelDescriptor[Any]) -> list[str]:
    """Names of every submodule that ran a forward pass (a pre-hook on each)."""
    calls: list[str] = []
    for module_name, module in desc.model.named_modules():
        if module_name:
            module.register_forward_pre_hook(lambda _m, _a, n=module_name: calls.append(n))
    return calls


def _wrong_channels(c: int) -> list[int]:
    return sorted({c - 1, c + 1, 3 if c != 3 else 4, 1 if c != 1 else 2} - {0, c})


@pytest.mark.parametrize("name", NAMES)
def test_wrong_channel_count_is_refused_before_any_work(name: str) -> None:
    desc = loaded(name)
    c = desc.input_channels
    calls = _forward_calls(desc)
    try:
        for channels in _wrong_channels(c):
            for through_descriptor in (False, True):
                x = torch.rand(1, channels, 9, 7)
                with pytest.raises(ValueError, match=rf"\(batch, {c}, height, width\)") as info:
                    desc(x) if through_descriptor else desc.model(x)
                assert str(channels) in str(info.value)  # what was found
                assert "\n" not in str(info.value)
                assert calls == [], f"{channels} channels: {calls[:3]} ran before the error"
    finally:
        for module in desc.model.modules():
            module._forward_pre_hooks.clear()


@pytest.mark.parametrize(
    "shape",
    [(3, 9, 7), (9, 7), (1, 1, 3, 9, 7), (0, 3, 9, 7), (1, 3, 0, 7), (1, 3, 9, 0), ()],
    ids=["3d", "2d", "5d", "empty-batch", "zero-height", "zero-width", "scalar"],
)
def test_wrong_rank_or_empty_is_refused(shape: tuple[int, ...]) -> None:
    desc = loaded("uni_pixelshuffle_x3")
    calls = _forward_calls(desc)
    try:
        with pytest.raises(ValueError, match=r"\(batch, 3, height, width\)"):
            desc.model(torch.rand(shape))
        assert calls == []
    finally:
        for module in desc.model.modules():
            module._forward_pre_hooks.clear()


@pytest.mark.parametrize("name", ["uni_unshuffle_gray_x1", "uni_pattern_css_rgba_x2", "uni_v2_nearest_conv_gray_x3"])
def test_declared_channel_counts_are_used(name: str) -> None:
    """Gray and RGBA checkpoints take and give their own channel counts."""
    desc = loaded(name)
    config = MANIFEST["fixtures"][name]["config"]
    assert (desc.input_channels, desc.output_channels) == (config["num_in_ch"], config["num_out_ch"])
    run(desc, 5, 6)
    run(desc, 5, 6, through_descriptor=True)


def test_batches_run_per_image() -> None:
    """A batch gives each image the result it gets alone (padding does not leak across images)."""
    desc = loaded("uni_unshuffle_1to3_x2")
    x = torch.rand(3, desc.input_channels, 5, 7)
    with torch.no_grad():
        batch = desc.model(x)
        alone = torch.cat([desc.model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, alone, rtol=1e-4, atol=1e-5)
    assert math.prod(batch.shape[-2:]) == 5 * 7 * desc.scale**2
