"""Pipelined `upscale` against one image at a time: images per second, and where the time goes.

    python bench/pipeline.py                                  # 200 crops, OMP_WAIT_POLICY=PASSIVE
    python bench/pipeline.py --count 200 --omp-wait-policy default   # the OpenMP runtime's own spin-wait

Crops of mixed sizes (64-256 px sides, seeded) of examples/sample.png are written as PNG into a
temporary folder. Each run upscales the folder with the bundled x2 model (`--tile auto`, fp32,
CPU) through `upscale.upscale_files`, the CLI's path. One untimed pass over the same images first
(so no run pays for first-seen image sizes), then `--rounds` rounds that alternate one at a time
(`--workers 0`) and pipelined (`--workers N`) in this process, so load on the machine hits both.
Outputs are checked byte-identical.

Per run: wall seconds; decode / infer / encode seconds summed over images (with threads they
overlap, so they can add up to more than the wall time); idle = wall - infer, the time the model
thread did not run the model; CPU = this process's user + system seconds (more CPU than the work
needs is OpenMP threads spinning while they wait).

`--omp-wait-policy` sets OMP_WAIT_POLICY before torch loads (`default`: leave it unset). With
libgomp's default spin-wait, torch's 2 OpenMP threads spin at every barrier; when another process
holds a core, the thread that does the work is descheduled while its partner spins, and one image
at a time became 3-6x slower than pipelined. Pipelining hid that only by accident: the encoder
threads' torch ops make libgomp count more threads than CPUs, which cuts its spinning.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="images (default 200)")
    parser.add_argument("--workers", type=int, default=2, help="threads of the pipelined runs (default 2)")
    parser.add_argument("--rounds", type=int, default=1, help="one-at-a-time + pipelined pairs (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--omp-wait-policy", choices=["passive", "active", "default"], default="passive", help="(default passive)"
    )
    return parser.parse_args()


def make_inputs(folder: Path, count: int, seed: int) -> None:
    import numpy as np
    from PIL import Image

    sample = Image.open(ROOT / "examples" / "sample.png").convert("RGB")
    rng = np.random.default_rng(seed)
    for i in range(count):
        w, h = (int(v) for v in rng.integers(64, 257, 2))
        w, h = min(w, sample.width), min(h, sample.height)
        x, y = int(rng.integers(0, sample.width - w + 1)), int(rng.integers(0, sample.height - h + 1))
        sample.crop((x, y, x + w, y + h)).save(folder / f"crop{i:04d}.png")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    args = parse()
    if args.omp_wait_policy != "default":
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()  # read once, when torch loads libgomp
    import torch

    from spandrel_fdat.upscale import upscale_files

    print(
        f"`python {' '.join(['bench/pipeline.py', *sys.argv[1:]])}`; {platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, load {os.getloadavg()[0]:.1f}\n"
    )
    print("| workers | images | wall s | images/s | decode s | infer s | encode s | idle s | CPU s |")
    print("|---|---|---|---|---|---|---|---|---|")
    rates: dict[int, list[float]] = {0: [], args.workers: []}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "in"
        inputs.mkdir()
        make_inputs(inputs, args.count, args.seed)
        quiet = {"device": "cpu", "progress": False, "report": lambda _: None}
        reference = Path(tmp) / "warm"
        upscale_files([inputs], reference, workers=0, **quiet)  # type: ignore[arg-type]  # every size seen once
        expected = {p.name: p.read_bytes() for p in reference.iterdir()}
        for run in range(args.rounds):
            for workers in (0, args.workers):
                out = Path(tmp) / f"out{run}_{workers}"
                cpu, begin = cpu_seconds(), time.perf_counter()
                summary = upscale_files([inputs], out, workers=workers, **quiet)  # type: ignore[arg-type]
                wall, cpu = time.perf_counter() - begin, cpu_seconds() - cpu
                assert summary.failed == 0, summary.line()
                rates[workers].append(summary.done / wall)
                t = summary.timings
                print(
                    f"| {workers} | {summary.done} | {wall:.1f} | {summary.done / wall:.2f} | {t['decode']:.1f} | "
                    f"{t['infer']:.1f} | {t['encode']:.1f} | {wall - t['infer']:.1f} | {cpu:.1f} |"
                )
                assert {p.name: p.read_bytes() for p in out.iterdir()} == expected, (
                    f"--workers {workers}: outputs differ"
                )
    ratios = [p / s for p, s in zip(rates[args.workers], rates[0], strict=True)]
    print(
        f"\npipelined / one at a time, images/s, per round: {', '.join(f'{r:.2f}' for r in ratios)}; "
        f"load {os.getloadavg()[0]:.1f}. Outputs of every run byte-identical."
    )


if __name__ == "__main__":
    main()
