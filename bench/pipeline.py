"""Pipelined `upscale` against one image at a time: images per second, and where the time goes.

    python bench/pipeline.py                 # 200 crops of examples/sample.png, 64-256 px sides
    python bench/pipeline.py --count 50 --workers 2 4 0   # a last `0`: one at a time again, for drift

Crops of mixed sizes (seeded) are written as PNG into a temporary folder; each run upscales the
folder with the bundled x2 model (`--tile auto`, fp32, CPU) through `upscale.upscale_files`, the
CLI's path, after a 4-image warm-up, first with `--workers 0` (read, upscale, write in turn), then pipelined. Outputs are
checked byte-identical. decode / infer / encode are the seconds summed over the images (with
threads they overlap, so they can add up to more than the wall time).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from spandrel_fdat.upscale import upscale_files

ROOT = Path(__file__).resolve().parent.parent


def make_inputs(folder: Path, count: int, seed: int) -> None:
    sample = Image.open(ROOT / "examples" / "sample.png").convert("RGB")
    rng = np.random.default_rng(seed)
    for i in range(count):
        w, h = (int(v) for v in rng.integers(64, 257, 2))
        w, h = min(w, sample.width), min(h, sample.height)
        x, y = int(rng.integers(0, sample.width - w + 1)), int(rng.integers(0, sample.height - h + 1))
        sample.crop((x, y, x + w, y + h)).save(folder / f"crop{i:04d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        f"`python {' '.join(['bench/pipeline.py', *sys.argv[1:]])}`; {platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)\n"
    )
    print("| workers | images | s | images/s | vs one at a time | decode s | infer s | encode s |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "in"
        inputs.mkdir()
        make_inputs(inputs, args.count, args.seed)
        warm = Path(tmp) / "warm"
        warm.mkdir()
        make_inputs(warm, 4, args.seed + 1)
        upscale_files([warm], Path(tmp) / "warm_out", workers=0, progress=False, device="cpu")  # lazy code, buffers
        base_rate = None
        reference: dict[str, bytes] = {}
        for run, workers in enumerate([0, *args.workers]):
            out = Path(tmp) / f"out{run}"
            summary = upscale_files([inputs], out, workers=workers, progress=False, device="cpu")
            assert summary.failed == 0, summary.line()
            rate = summary.done / summary.seconds
            base_rate = base_rate or rate
            t = summary.timings
            print(
                f"| {workers} | {summary.done} | {summary.seconds:.1f} | {rate:.2f} | {rate / base_rate:.2f} | "
                f"{t['decode']:.1f} | {t['infer']:.1f} | {t['encode']:.1f} |"
            )
            outputs = {p.name: p.read_bytes() for p in out.iterdir()}
            if not reference:
                reference = outputs
            assert outputs == reference, "pipelined outputs differ from one at a time"
    print("\nOutputs of every run byte-identical to `--workers 0`.")


if __name__ == "__main__":
    main()
