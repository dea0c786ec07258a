"""Train the bundled default model: a small FDAT x2 on scikit-image's sample photographs.

    OMP_WAIT_POLICY=PASSIVE python -m training.train --iterations 1200 --seed 0 --out spandrel_fdat/models/fdat_x2_skimage.safetensors

Run from the repository root (needs scikit-image: `pip install -e '.[train]'`). Reproducible:
fixed seeds, deterministic algorithms, 2 CPU threads and a fixed number of iterations.
OMP_WAIT_POLICY=PASSIVE only stops idle OpenMP threads from spinning: on a busy shared machine
it made iterations 2-6x faster; the results do not depend on it.
The held-out photographs (`data.HELD_OUT`: astronaut, chelsea) are never seen here;
`python -m training.evaluate` measures the result on them.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spandrel_fdat import FDAT, FDATConfig
from spandrel_fdat.convert import save_safetensors
from spandrel_fdat.models import default_model_path

from .data import random_batch, training_pairs
from .imageops import SCALE

# Small enough to ship (284k parameters, 1.1 MB in fp32) and to train on a CPU in minutes. UniUpsample V3
# (layout "uniupsample", meta_version 3) so that spandrel 0.4.2's built-in FDAT loads it too.
CONFIG = FDATConfig(
    scale=SCALE,
    embed_dim=48,
    num_groups=2,
    depth_per_group=1,  # one spatial + one channel block per group
    num_heads=4,
    window_size=8,
    ffn_expansion_ratio=2.0,
    upsampler_type="pixelshuffle",
    mid_dim=48,
    layout="uniupsample",
    meta_version=3,
)
WARMUP = 50  # iterations of linear learning-rate warm-up before the cosine decay


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=1200)
    parser.add_argument("--out", type=Path, default=default_model_path())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch", type=int, default=48, help="LR patch side in pixels (a multiple of 8)")
    parser.add_argument("--lr", type=float, default=7e-4, help="peak learning rate")
    parser.add_argument("--log-every", type=int, default=50)
    return parser.parse_args()


def make_reproducible(seed: int) -> np.random.Generator:
    """Seed every generator in play and pin the CPU threads; returns the data sampler's generator."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    return np.random.default_rng(seed)


def learning_rate_factor(step: int, total: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < WARMUP:
        return (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, total - WARMUP)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def train(args: argparse.Namespace) -> FDAT:
    rng = make_reproducible(args.seed)
    pairs = training_pairs()
    model = FDAT.from_config(CONFIG).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.99))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(s, args.iterations))
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters, {len(pairs)} training images", flush=True)
    start, running = time.perf_counter(), 0.0
    for step in range(1, args.iterations + 1):
        lr_batch, hr_batch = (torch.from_numpy(a) for a in random_batch(pairs, args.batch_size, args.patch, rng))
        loss = F.l1_loss(model(lr_batch), hr_batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running += loss.item()
        if step % args.log_every == 0 or step == args.iterations:
            count = args.log_every if step % args.log_every == 0 else step % args.log_every
            elapsed = time.perf_counter() - start
            print(
                f"step {step:5d}  L1 {running / count:.5f}  lr {schedule.get_last_lr()[0]:.2e}  {elapsed:7.0f} s",
                flush=True,
            )
            running = 0.0
    print(f"trained {args.iterations} iterations in {time.perf_counter() - start:.0f} s", flush=True)
    return model.eval()


def main() -> None:
    args = parse_args()
    model = train(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(model, args.out, CONFIG)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
