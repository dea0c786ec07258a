"""Peak memory per pixel of an untiled upscale, per model configuration: the coefficients of `--tile auto`.

    python bench/memory.py                      # bundled model, tiny and light presets, fp32, CPU
    python bench/memory.py --configs medium --sizes 128 256 384

Each (config, size) runs in a fresh child process: build the model, a 32x32 warm-up (oneDNN's
code and buffers), then read VmRSS, upscale one size x size image untiled through
`Upscaler.upscale` (the CLI's path) and read VmHWM. The slope of (peak - before) against pixels
is the memory per input pixel; divided by embed_dim * 4 bytes it is the number of float32
feature maps alive at the peak, the `FEATURE_MAPS` of `spandrel_fdat/memory.py`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from spandrel_fdat.arch import load_model
from spandrel_fdat.config import PRESETS, FDATConfig
from spandrel_fdat.images import FloatImage
from spandrel_fdat.models import default_model_path
from spandrel_fdat.network import FDAT
from spandrel_fdat.upscale import Upscaler


def rss_mb(field: str) -> float:
    """VmRSS or VmHWM of this process in MB (/proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no /proc/self/status")


def descriptor(name: str) -> Any:
    if name == "bundled":
        return load_model(default_model_path())
    network = FDAT.from_config(FDATConfig(scale=2, **PRESETS[name]))
    return load_model(network.state_dict())


def child(name: str, size: int, dtype: str) -> None:
    torch.manual_seed(0)
    d = descriptor(name)
    up = Upscaler.from_descriptor(d, device=torch.device("cpu"), dtype=getattr(torch, dtype), tile=0, overlap=None)
    up.upscale(FloatImage(torch.rand(3, 32, 32), None, 8))
    before = rss_mb("VmRSS")
    up.upscale(FloatImage(torch.rand(3, size, size), None, 8))
    peak = rss_mb("VmHWM")
    print(json.dumps({"embed_dim": d.model.config.embed_dim, "before": before, "peak": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["bundled", "tiny", "light"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return
    print("| config | embed_dim | dtype | size | peak - before MB | bytes/pixel (slope) | feature maps |")
    print("|---|---|---|---|---|---|---|")
    for name in args.configs:
        points = []
        for size in args.sizes:
            out = subprocess.run(
                [sys.executable, __file__, "--child", name, str(size), args.dtype],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            r = json.loads(out.strip().splitlines()[-1])
            points.append((size * size, (r["peak"] - r["before"]) * 2**20, r["embed_dim"]))
        (p0, m0, dim), (p1, m1, _) = points[0], points[-1]
        slope = (m1 - m0) / (p1 - p0)
        for pixels, used, _ in points:
            print(
                f"| {name} | {dim} | {args.dtype} | {int(pixels**0.5)} | {used / 2**20:.0f} | "
                f"{slope:.0f} | {slope / (dim * 4):.1f} |"
            )


if __name__ == "__main__":
    main()
