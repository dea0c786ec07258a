"""Tiling trade-off of `spandrel-fdat upscale`: agreement with untiled output, time, peak memory.

    python bench/tiling.py                  # writes bench/results/tiling.md (about 20 min on 2 cores)
    python bench/tiling.py --quick          # a 512x512 image and fewer settings, to try it out
    python bench/tiling.py --model X.pth    # another checkpoint

The model is the bundled default (`spandrel_fdat.models.default_model_path()`). `--medium` adds
an FDAT-medium x2 with trained-like weights for the default tile setting (its attention spans
more blocks, so tiling changes it more).

1. Agreement: one 1024x1024 photograph (scikit-image's astronaut, mirrored into 2x2), upscaled
   untiled and with each tile/overlap setting, through `Upscaler.run_batch` (the CLI's tiled path).
   PSNR is taken on the float outputs before clamping, with the untiled output's range
   (max - min) as the peak: a trained model's range is about 1, the same as PSNR on [0, 1].
2. Memory: each setting in a fresh child process, which reports its peak RSS and
   its RSS before inference (`VmHWM` and `VmRSS` of /proc/self/status): image sizes at a fixed tile, the
   same sizes untiled, and tile sizes at a fixed image size.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchmark import rss_mb, trained_like_weights  # noqa: E402

from spandrel_fdat import FDAT, FDATConfig, load_model  # noqa: E402
from spandrel_fdat.images import FloatImage, read_image, write_image  # noqa: E402
from spandrel_fdat.models import default_model_path  # noqa: E402
from spandrel_fdat.tiling import axis_spans  # noqa: E402
from spandrel_fdat.upscale import DEFAULT_OVERLAP, DEFAULT_TILE, Upscaler  # noqa: E402

MEDIUM = FDATConfig(
    scale=2, embed_dim=120, num_groups=4, depth_per_group=3, num_heads=4, window_size=8, upsampler_type="pixelshuffle"
)


def model_descriptor(name: str) -> tuple[Any, str]:
    """('default' | 'medium' | a path) -> (descriptor, description)."""
    if name == "default":
        return load_model(default_model_path()), f"bundled default model ({default_model_path().name})"
    if name == "medium":
        network = FDAT.from_config(MEDIUM)
        trained_like_weights(network, seed=0)
        return load_model(network.state_dict()), "FDAT-medium x2 pixelshuffle, trained-like weights (seed 0)"
    return load_model(name), name


def photograph(size: int) -> torch.Tensor:
    """(3, size, size) in [0, 1]: the astronaut mirrored into a seamless 2x2 mosaic, repeated or cropped."""
    try:
        from skimage import data

        base = data.astronaut().astype(np.float32) / 255  # (512, 512, 3)
    except ImportError:  # scikit-image is in the `train` extra: a smooth synthetic picture instead
        y, x = np.mgrid[0:512, 0:512] / 512
        base = np.stack([np.sin(9 * x + 3 * y), np.cos(7 * y - 2 * x), np.sin(5 * x * y + 1)], -1) * 0.4 + 0.5
        base = base.astype(np.float32)
    mosaic = np.concatenate(
        [np.concatenate([base, base[:, ::-1]], 1), np.concatenate([base[::-1], base[::-1, ::-1]], 1)]
    )
    reps = math.ceil(size / mosaic.shape[0])
    tiled = np.tile(mosaic, (reps, reps, 1))[:size, :size]
    return torch.from_numpy(np.ascontiguousarray(tiled.transpose(2, 0, 1)))  # (H, W, 3) -> (3, H, W)


def upscaler(descriptor: Any, tile: int, overlap: int) -> Upscaler:
    return Upscaler.from_descriptor(
        descriptor, device=torch.device("cpu"), dtype=torch.float32, tile=tile, overlap=overlap
    )


def run_float(descriptor: Any, image: torch.Tensor, tile: int, overlap: int) -> tuple[torch.Tensor, float]:
    """The unclamped float output of the CLI's path (`Upscaler.run_batch`), and the seconds it took."""
    up = upscaler(descriptor, tile, overlap)
    start = time.perf_counter()
    out = up.run_batch(image[None])  # an RGB image on an RGB model: one (1, 3, H, W) batch
    return out, time.perf_counter() - start


def psnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    peak = float(reference.max() - reference.min())
    mse = float(((reference - other) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


# --- child processes for memory ------------------------------------------------------------------


def child(spec: dict[str, Any]) -> None:
    """One image through the CLI's per-image path (read, upscale, write), in this fresh process."""
    torch.set_num_threads(spec["threads"])
    descriptor, _ = model_descriptor(spec["model"])
    up = upscaler(descriptor, spec["tile"], spec["overlap"])
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "in.png", Path(folder) / "out.png"
        write_image(FloatImage(photograph(spec["size"]), None, 8), source)
        write_image(up.upscale(FloatImage(photograph(32), None, 8)), target)  # warm-up: lazy code and buffers
        before = rss_mb()
        start = time.perf_counter()
        write_image(up.upscale(read_image(source)), target)
        seconds = time.perf_counter() - start
    grid = grid_text(spec["size"], up)
    print(json.dumps({"before_mb": before, "peak_mb": rss_mb("VmHWM"), "seconds": seconds, "grid": grid}))


def grid_text(size: int, up: Upscaler) -> str:
    """e.g. `9 of 368x368`: how many tiles a size x size image takes, and their size."""
    spans = axis_spans(size, up.tile, up.overlap, up.align)
    side = spans[0][1] - spans[0][0]
    return f"{len(spans) ** 2} of {side}x{side}"


def in_child(model: str, size: int, tile: int, overlap: int, threads: int) -> dict[str, Any]:
    spec = {"model": model, "size": size, "tile": tile, "overlap": overlap, "threads": threads}
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the report ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="default", help="'default' or a checkpoint path")
    parser.add_argument("--medium", action="store_true", help="also FDAT-medium at the default tile setting")
    parser.add_argument("--quick", action="store_true", help="a 512x512 image, fewer settings")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "tiling.md")
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    torch.set_num_threads(args.threads)
    size = 512 if args.quick else 1024
    tiles = [128, 256] if args.quick else [128, 256, 512]
    overlaps = [0, 16, 32] if args.quick else [0, 16, 32, 64]
    lines = [
        "# Tiling: tiled against untiled output, time, memory",
        "",
        f"`python {' '.join(['bench/tiling.py', *sys.argv[1:]])}`; {platform.machine()}, {args.threads} thread(s), "
        f"torch {torch.__version__}, CPU, fp32, linear feathering over the overlap, tiles aligned to the "
        f"model's window. Defaults of `spandrel-fdat upscale`: `--tile {DEFAULT_TILE} --overlap {DEFAULT_OVERLAP}`.",
        "",
    ]

    models = [args.model] + (["medium"] if args.medium else [])
    for index, name in enumerate(models):
        descriptor, label = model_descriptor(name)
        image = photograph(size)
        reference, untiled_s = run_float(descriptor, image, 0, 0)
        settings = [(t, o) for t in tiles for o in overlaps if 2 * o <= t] if index == 0 else []
        settings = settings or [(512, DEFAULT_OVERLAP), (256, 32)]
        lines += [
            f"## PSNR, tiled vs untiled: {label}, {size}x{size} photograph, x{descriptor.scale}",
            "",
            f"Untiled: {untiled_s:.1f} s. Output range {float(reference.min()):.2f} to "
            f"{float(reference.max()):.2f} (the PSNR peak is this range).",
            "",
            "| --tile | --overlap | tiles | PSNR dB | max abs diff | s | s vs untiled |",
            "|---|---|---|---|---|---|---|",
        ]
        for tile, overlap in settings:
            out, seconds = run_float(descriptor, image, tile, overlap)
            grid = grid_text(size, upscaler(descriptor, tile, overlap))
            diff = float((out - reference).abs().max())
            lines.append(
                f"| {tile} | {overlap} | {grid} | {psnr(reference, out):.1f} | {diff:.2e} | {seconds:.1f} | "
                f"{seconds / untiled_s:.2f} |"
            )
            print(lines[-1], flush=True)
        lines.append("")

    sizes = [256, 512] if args.quick else [256, 512, 1024, 2048]
    fixed_tile = 256
    lines += [
        f"## Peak memory: image sizes at `--tile {fixed_tile}`, and untiled",
        "",
        "Each row is a fresh process: imports, model, a 32x32 warm-up, then one PNG read, upscaled and written "
        "(the CLI's per-image path, timed). *Before* is its RSS before that image: imports, model and what the "
        "warm-up loaded (about 0.5 GB of oneDNN code and buffers that any first inference brings in).",
        "",
        MEMORY_HEADER,
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = [(s, fixed_tile) for s in sizes] + [(s, 0) for s in sizes if s <= (512 if args.quick else 1024)]
    for image_size, tile in rows:
        result = in_child(args.model, image_size, tile, DEFAULT_OVERLAP if tile else 0, args.threads)
        lines.append(_memory_row(image_size, tile, result))
        print(lines[-1], flush=True)
    lines += [
        "",
        f"## Peak memory: tile sizes at a {size}x{size} image",
        "",
        MEMORY_HEADER,
        "|---|---|---|---|---|---|---|---|",
    ]
    for tile in [128, 256, 512] if not args.quick else [128, 256]:
        result = in_child(args.model, size, tile, min(DEFAULT_OVERLAP, tile // 4), args.threads)
        lines.append(_memory_row(size, tile, result))
        print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


MEMORY_HEADER = "| image | tiling | tiles | RSS before MB | peak RSS MB | peak - before MB | s | MP/s |"


def _memory_row(size: int, tile: int, result: dict[str, Any]) -> str:
    tiling = f"--tile {tile}" if tile else "--tile 0"
    rate = size * size / 1e6 / result["seconds"]
    return (
        f"| {size}x{size} | {tiling} | {result['grid']} | {result['before_mb']:.0f} | {result['peak_mb']:.0f} | "
        f"{result['peak_mb'] - result['before_mb']:.0f} | {result['seconds']:.1f} | {rate:.3f} |"
    )


if __name__ == "__main__":
    main()
