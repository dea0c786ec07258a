"""Upscale a photograph x2 with the bundled FDAT model and compare it with bicubic interpolation.

    python examples/demo.py

`examples/sample.png` is a 256x256 crop of scikit-image's astronaut photograph, which the
bundled model never saw in training. The demo shrinks it x2 with the training degradation
(antialiased bicubic, 8-bit) into out/sample_lr.png, upscales that with
`spandrel-fdat upscale` (the bundled model: no -m) and with bicubic interpolation, prints
PSNR-Y of both against the original and writes out/comparison.png: bicubic | FDAT | original.
Needs only what spandrel-fdat installs (torch, Pillow, numpy).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the degradation and the metric are shared with training/

from training.imageops import bicubic_upscale, degrade, psnr_y  # noqa: E402

SAMPLE = Path(__file__).with_name("sample.png")
OUT = Path("out")
LABEL_HEIGHT, GAP = 20, 4


def load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def cli_upscale(source: Path, target: Path) -> None:
    """`spandrel-fdat upscale` from the environment this Python belongs to."""
    scripts = Path(sys.executable).parent
    cli = shutil.which("spandrel-fdat", path=str(scripts)) or str(scripts / "spandrel-fdat")
    subprocess.run([cli, "upscale", str(source), "-o", str(target), "--force"], check=True)


def labelled(image: np.ndarray, label: str) -> Image.Image:
    """The image under a white strip carrying `label`."""
    h, w = image.shape[:2]
    panel = Image.new("RGB", (w, h + LABEL_HEIGHT), "white")
    panel.paste(Image.fromarray(image), (0, LABEL_HEIGHT))
    ImageDraw.Draw(panel).text((4, 4), label, fill="black")
    return panel


def side_by_side(panels: list[Image.Image]) -> Image.Image:
    width = sum(p.width for p in panels) + GAP * (len(panels) - 1)
    canvas = Image.new("RGB", (width, max(p.height for p in panels)), "white")
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width + GAP
    return canvas


def main() -> None:
    OUT.mkdir(exist_ok=True)
    original = load_rgb(SAMPLE)
    lr_path, fdat_path, comparison_path = OUT / "sample_lr.png", OUT / "sample_fdat.png", OUT / "comparison.png"
    Image.fromarray(degrade(original)).save(lr_path)
    cli_upscale(lr_path, fdat_path)
    lr, fdat = load_rgb(lr_path), load_rgb(fdat_path)
    bicubic = bicubic_upscale(lr)
    psnr_bicubic, psnr_fdat = psnr_y(bicubic, original), psnr_y(fdat, original)
    panels = [
        labelled(bicubic, f"bicubic x2: {psnr_bicubic:.2f} dB"),
        labelled(fdat, f"FDAT x2: {psnr_fdat:.2f} dB"),
        labelled(original, "original"),
    ]
    side_by_side(panels).save(comparison_path, optimize=True)
    print(f"PSNR-Y against the original: bicubic {psnr_bicubic:.2f} dB, FDAT {psnr_fdat:.2f} dB")
    print(f"wrote {lr_path} (input, {lr.shape[1]}x{lr.shape[0]}), {fdat_path}, {comparison_path}")


if __name__ == "__main__":
    main()
