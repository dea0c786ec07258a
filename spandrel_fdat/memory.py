"""How much memory an untiled upscale needs, and how much there is: the basis of `--tile auto`.

FDAT's channel attention sees the whole image, so only an untiled run gives the exact result;
`--tile auto` runs untiled when the image fits and takes the largest tile that fits otherwise.

The model of the need is linear in the input pixels: `FEATURE_MAPS` float32 maps of
`embed_dim` channels per input pixel, plus `OVERHEAD`. Measured on CPU (fp32, untiled, peak RSS
minus RSS before the image) with `python bench/memory.py --sizes 128 256 384`:
bundled x2 (embed_dim 48) 1843 B/pixel = 9.6 maps, preset tiny (96) 2096 = 5.5, light (108)
2442 = 5.7; the bundled model at 1024x1024 (bench/tiling.py, PNG read and write included)
2049 B/pixel = 10.7 maps. `FEATURE_MAPS = 11` covers them all (it overstates larger models,
which keeps the choice safe). On CUDA the same coefficient is used; it is not measured there.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = [
    "BUDGET_FRACTION",
    "FEATURE_MAPS",
    "OVERHEAD",
    "available_memory",
    "bytes_per_pixel",
    "fits",
    "largest_tile",
]

FEATURE_MAPS = 11
"""float32 feature maps of embed_dim channels alive per input pixel at the peak (see above)."""
OVERHEAD = 64 * 2**20
"""Bytes on top of the per-pixel need (small images: 41 MB measured at 128x128, bundled model)."""
BUDGET_FRACTION = 0.75
"""Share of the available memory an upscale may plan to use (the rest: the process, the OS, readers)."""
DEFAULT_EMBED_DIM = 64
"""For a model without an FDAT config (not expected from `load_model`)."""


def bytes_per_pixel(config: Any) -> int:
    """Peak bytes per input pixel of an untiled run for this `FDATConfig` (or None: a default)."""
    embed_dim = getattr(config, "embed_dim", DEFAULT_EMBED_DIM)
    return FEATURE_MAPS * embed_dim * 4


def available_memory(device: Any = None) -> int | None:
    """Free bytes for `device` (a torch.device or None for the CPU): CUDA's free memory, else
    psutil's available memory, else /proc/meminfo's MemAvailable; None when none can be read."""
    if device is not None and getattr(device, "type", None) == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        import psutil
    except ImportError:
        pass
    else:
        return int(psutil.virtual_memory().available)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


def fits(pixels: int, per_pixel: int, available: int | None) -> bool:
    """Whether an untiled run over `pixels` input pixels fits the budget (unknown memory: yes)."""
    if available is None:
        return True
    return pixels * per_pixel + OVERHEAD <= available * BUDGET_FRACTION


def largest_tile(per_pixel: int, available: int | None, align: int) -> int:
    """The largest square tile side (a multiple of `align`, at least `align`) that fits; 0: unknown memory."""
    if available is None:
        return 0
    room = max(available * BUDGET_FRACTION - OVERHEAD, 0)
    side = math.isqrt(int(room // per_pixel))
    return max(align, side // align * align)
