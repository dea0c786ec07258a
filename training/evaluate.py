"""Measure the bundled default model on the held-out photographs against bicubic upscaling.

    python -m training.evaluate [--model PATH] [--train-log LOG] [--out training/results.md]

For each held-out photograph (`data.HELD_OUT`, never used in training): the LR image made by
the training degradation (`imageops.degrade`), upscaled x2 by the model and by bicubic
interpolation, both compared with the original. PSNR and SSIM on the BT.601 Y channel
([16, 235] range), `scale` border pixels shaved. Prints a markdown table and writes it, with
the training details, to `--out`.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity

import spandrel_fdat
from spandrel_fdat.convert import read_stored_config
from spandrel_fdat.models import default_model_path

from .data import HELD_OUT, TRAIN_COLOUR, TRAIN_GREY, Pair, held_out_pairs
from .imageops import SCALE, bicubic_upscale, from_tensor_layout, psnr_y, rgb_to_y, shave, to_tensor_layout

TRAIN_COMMAND = (
    "time OMP_WAIT_POLICY=PASSIVE python -m training.train --iterations 1200 --seed 0 "
    "--out spandrel_fdat/models/fdat_x2_skimage.safetensors > train.log 2>&1"
)
EVALUATE_COMMAND = "python -m training.evaluate --train-log train.log"


@dataclass(frozen=True)
class Scores:
    psnr: float
    ssim: float


def ssim_y(result: np.ndarray, reference: np.ndarray, border: int = SCALE) -> float:
    """SSIM on the Y channel (Wang et al.'s Gaussian window), data_range 255 as for PSNR."""
    a, b = shave(rgb_to_y(result), border), shave(rgb_to_y(reference), border)
    return float(
        structural_similarity(a, b, data_range=255.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    )


def score(result: np.ndarray, reference: np.ndarray) -> Scores:
    return Scores(psnr_y(result, reference), ssim_y(result, reference))


def upscale(model: torch.nn.Module, lr: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out = model(torch.from_numpy(to_tensor_layout(lr)))
    return from_tensor_layout(out.numpy())


@dataclass(frozen=True)
class Row:
    name: str
    size: str
    fdat: Scores
    bicubic: Scores


def evaluate(model: torch.nn.Module, pairs: list[Pair]) -> list[Row]:
    """FDAT and bicubic scores per held-out image."""
    return [
        Row(
            p.name,
            f"{p.hr.shape[1]}x{p.hr.shape[0]}",
            score(upscale(model, p.lr), p.hr),
            score(bicubic_upscale(p.lr), p.hr),
        )
        for p in pairs
    ]


def mean_row(rows: list[Row]) -> Row:
    fdat = Scores(*np.mean([[r.fdat.psnr, r.fdat.ssim] for r in rows], axis=0))
    bicubic = Scores(*np.mean([[r.bicubic.psnr, r.bicubic.ssim] for r in rows], axis=0))
    return Row("**mean**", "", fdat, bicubic)


def results_table(rows: list[Row]) -> str:
    lines = [
        "| image | HR size | bicubic PSNR-Y (dB) | FDAT PSNR-Y (dB) | gain (dB) | bicubic SSIM-Y | FDAT SSIM-Y |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in [*rows, mean_row(rows)]:
        lines.append(
            f"| {r.name} | {r.size} | {r.bicubic.psnr:.2f} | {r.fdat.psnr:.2f} | {r.fdat.psnr - r.bicubic.psnr:+.2f} "
            f"| {r.bicubic.ssim:.4f} | {r.fdat.ssim:.4f} |"
        )
    return "\n".join(lines)


def training_summary(log: Path | None) -> str:
    """The parameter count, the 'trained ... in ... s' line and `time`'s wall clock from a training log."""
    if log is None:
        return "(no training log given)"
    wanted = re.compile(r"^(.* parameters, .*|trained .*|real\s.*|wrote .*)$")
    return "\n".join(line for line in log.read_text().splitlines() if wanted.match(line))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        cpu = names[0] if names else cpu
    return f"{cpu}, {os.cpu_count()} cores (shared with other jobs), torch {torch.__version__}, Python {platform.python_version()}"


def report(model_path: Path, table: str, log: Path | None) -> str:
    config = read_stored_config(model_path)
    params = sum(p.numel() for p in spandrel_fdat.load_model(model_path).model.parameters())
    return f"""# The bundled default model: results

`{model_path.name}`: FDAT x2, {params:,} parameters, {model_path.stat().st_size / 1e6:.2f} MB (fp32 safetensors).
Held-out photographs (never used in training): {", ".join(HELD_OUT)} (scikit-image samples).
LR = antialiased bicubic x0.5 (Pillow), 8-bit; PSNR and SSIM on the BT.601 Y channel ([16, 235]),
{SCALE} border pixels shaved; SSIM with a Gaussian window (sigma 1.5), data_range = 255.

{table}

## Training

Photographs: {", ".join(TRAIN_COLOUR)} (colour) and {", ".join(TRAIN_GREY)} (grey, replicated
to RGB), degraded once as above; batches of 8 random 48x48 LR patches (with the matching HR patches),
random flips and 90-degree rotations, L1 loss, Adam (peak learning rate 7e-4, 50 warm-up iterations,
cosine decay to 0), seed 0, on the CPU (`training/train.py`'s defaults).

```
{TRAIN_COMMAND}
{training_summary(log)}
```

Machine: {machine()}.

## Evaluation

```
{EVALUATE_COMMAND}
```

## Configuration

```json
{config.to_json() if config else "(none stored)"}
```
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=default_model_path())
    parser.add_argument("--train-log", type=Path, help="the training run's output, for the report")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.md"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(2)
    model = spandrel_fdat.load_model(args.model).model.eval()
    table = results_table(evaluate(model, held_out_pairs()))
    print(table)
    args.out.write_text(report(args.model, table, args.train_log))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
