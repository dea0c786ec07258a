"""The training and held-out photographs (scikit-image's bundled samples) and patch sampling.

Every image used here ships inside the scikit-image wheel: nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage import data as skdata

from .imageops import SCALE, crop_to_multiple, degrade

# Colour photographs kept OUT of training: the held-out test set (and the demo's sample).
HELD_OUT = ("astronaut", "chelsea")
TRAIN_COLOUR = ("coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "stereo_motorcycle")
# Grey photographs, replicated to RGB, for more textures.
TRAIN_GREY = ("camera", "moon", "coins", "grass", "gravel", "brick", "cell")


def load_image(name: str) -> np.ndarray:
    """A bundled scikit-image sample as (H, W, 3) uint8 RGB."""
    image = getattr(skdata, name)()
    if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity); use the left view
        image = image[0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


@dataclass(frozen=True)
class Pair:
    """One photograph: the original (HR) and its degraded version (LR)."""

    name: str
    hr: np.ndarray
    lr: np.ndarray


def make_pair(name: str) -> Pair:
    hr = crop_to_multiple(load_image(name), SCALE)
    return Pair(name, hr, degrade(hr, SCALE))


def training_pairs() -> list[Pair]:
    return [make_pair(name) for name in TRAIN_COLOUR + TRAIN_GREY]


def held_out_pairs() -> list[Pair]:
    return [make_pair(name) for name in HELD_OUT]


def random_patch(pair: Pair, lr_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Aligned LR/HR patches at a random place, randomly flipped and rotated by a multiple of 90 degrees."""
    h, w = pair.lr.shape[:2]
    top, left = rng.integers(0, h - lr_size + 1), rng.integers(0, w - lr_size + 1)
    lr = pair.lr[top : top + lr_size, left : left + lr_size]
    hr = pair.hr[top * SCALE : (top + lr_size) * SCALE, left * SCALE : (left + lr_size) * SCALE]
    turns, flip = int(rng.integers(4)), bool(rng.integers(2))
    lr, hr = np.rot90(lr, turns), np.rot90(hr, turns)
    if flip:
        lr, hr = lr[:, ::-1], hr[:, ::-1]
    return lr, hr


def random_batch(
    pairs: list[Pair], batch_size: int, lr_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(LR, HR) float32 arrays of shape (batch, 3, h, w) in [0, 1]; images drawn uniformly."""
    picks = rng.integers(0, len(pairs), size=batch_size)
    patches = [random_patch(pairs[i], lr_size, rng) for i in picks]
    lr = np.stack([p[0] for p in patches]).astype(np.float32) / 255.0
    hr = np.stack([p[1] for p in patches]).astype(np.float32) / 255.0
    return lr.transpose(0, 3, 1, 2), hr.transpose(0, 3, 1, 2)


# examples/sample.png: a crop of a held-out photograph (NASA's public-domain astronaut portrait).
SAMPLE_NAME, SAMPLE_TOP, SAMPLE_LEFT, SAMPLE_SIZE = "astronaut", 40, 100, 256


def sample_crop() -> np.ndarray:
    """The demo's sample photograph: the face and the suit's neck ring."""
    image = load_image(SAMPLE_NAME)
    return image[SAMPLE_TOP : SAMPLE_TOP + SAMPLE_SIZE, SAMPLE_LEFT : SAMPLE_LEFT + SAMPLE_SIZE]


if __name__ == "__main__":  # python -m training.data: (re)write examples/sample.png
    from pathlib import Path

    from PIL import Image

    out = Path(__file__).resolve().parents[1] / "examples" / "sample.png"
    Image.fromarray(sample_crop()).save(out, optimize=True)
    print(f"wrote {out}")
