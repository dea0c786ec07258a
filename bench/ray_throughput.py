"""Images/second of `upscale --ray` on a local Ray against the plain CLI, on the same images, in one run.

    .venv/bin/python bench/ray_throughput.py --images 60 --size 48

The inputs are crops of examples/sample.png; the model is the bundled x2 (CPU, fp32). Ray's time
includes its scheduling but not `ray.init` (started once before, and reported on its own).
OMP_WAIT_POLICY=PASSIVE, as `upscale` sets it (bench/pipeline.py says why). Each Ray actor gets
`--num-cpus / actors` CPUs and as many torch threads: 1 actor gives the CLI's bytes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads

import ray
import torch
from PIL import Image

from spandrel_fdat import distributed, upscale

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--size", type=int, default=48, help="side of each crop in pixels")
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ray_bench_"))
    inputs = work / "in"
    inputs.mkdir()
    sample = Image.open(ROOT / "examples" / "sample.png").convert("RGB")
    step = max(1, (sample.width - args.size) // args.images)
    for i in range(args.images):
        left = (i * step) % (sample.width - args.size)
        sample.crop((left, 0, left + args.size, args.size)).save(inputs / f"{i:03d}.png")
    print(
        f"{args.images} images of {args.size}x{args.size}, bundled x2 model, CPU fp32, torch threads {torch.get_num_threads()}"
    )

    begin = time.perf_counter()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    print(f"ray.init(num_cpus={args.num_cpus}): {time.perf_counter() - begin:.1f} s (not counted below)")

    rates: dict[str, float] = {}

    def record(name: str, run: upscale.Summary, seconds: float) -> None:
        assert run.done == args.images, run.line()
        rates[name] = args.images / seconds
        print(f"{name:34s} {seconds:6.1f} s  {rates[name]:6.1f} images/s")

    quiet = {"device": "cpu", "progress": False, "report": lambda _: None}
    upscale.upscale_files([inputs], f"{work / 'warmup'}/", workers=0, **quiet)  # type: ignore[arg-type]  # not timed
    for name, workers in (("CLI sequential (--workers 0)", 0), ("CLI pipelined (--workers 2)", 2)):
        begin = time.perf_counter()
        run = upscale.upscale_files([inputs], f"{work / name.split()[1]}/", workers=workers, **quiet)  # type: ignore[arg-type]
        record(name, run, time.perf_counter() - begin)
    for concurrency in (1, 2):
        out = work / f"ray{concurrency}"
        begin = time.perf_counter()
        cpus = args.num_cpus // concurrency
        run = distributed.upscale_ray(
            [inputs], f"{out}/", device="cpu", concurrency=concurrency, num_cpus=cpus, batch_size=8
        )
        record(f"Ray ({concurrency} actors x {cpus} CPUs, batch 8)", run, time.perf_counter() - begin)
        same = all((out / p.name).read_bytes() == (work / "pipelined" / p.name).read_bytes() for p in inputs.iterdir())
        print(f"  outputs byte-identical to the CLI's ({torch.get_num_threads()} threads): {same}")
    best_cli = max(rates["CLI sequential (--workers 0)"], rates["CLI pipelined (--workers 2)"])
    for name, rate in rates.items():
        if name.startswith("Ray"):
            print(
                f"{name}: {rate / best_cli:.2f}x the best CLI rate (overhead {100 * (best_cli / rate - 1):.0f}% time)"
            )
    ray.shutdown()


if __name__ == "__main__":
    main()
