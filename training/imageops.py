"""Image operations shared by training, evaluation, the demo and the tests.

Only numpy and Pillow: the demo and the tests must not need scikit-image.
Images are (height, width, 3) uint8 RGB arrays.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SCALE = 2


def crop_to_multiple(image: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """Drop the last rows/columns so that both sides divide by `scale`."""
    h, w = image.shape[:2]
    return image[: h - h % scale, : w - w % scale]


def bicubic_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pillow's bicubic resize to (width, height); antialiased when shrinking."""
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))


def degrade(image: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """The degradation the model learns to undo: HR -> LR by antialiased bicubic x`scale`, 8-bit."""
    hr = crop_to_multiple(image, scale)
    h, w = hr.shape[:2]
    return bicubic_resize(hr, (w // scale, h // scale))


def bicubic_upscale(image: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """The baseline: plain bicubic interpolation x`scale`."""
    h, w = image.shape[:2]
    return bicubic_resize(image, (w * scale, h * scale))


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """BT.601 luma of an 8-bit RGB image, in the [16, 235] range (float64)."""
    rgb = image.astype(np.float64) / 255.0
    return 16.0 + rgb @ np.array([65.481, 128.553, 24.966])


def shave(image: np.ndarray, border: int) -> np.ndarray:
    return image[border:-border, border:-border] if border else image


def psnr_y(result: np.ndarray, reference: np.ndarray, border: int = SCALE) -> float:
    """PSNR in dB on the Y channel, `border` pixels shaved off each side, peak 255."""
    diff = shave(rgb_to_y(result), border) - shave(rgb_to_y(reference), border)
    mse = float(np.mean(diff**2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def to_tensor_layout(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1]."""
    return (image.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()


def from_tensor_layout(array: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounded."""
    return (np.clip(array[0].transpose(1, 2, 0), 0.0, 1.0) * 255.0).round().astype(np.uint8)
