"""upsamplers.nearest_conv: a 3x3 conv after nearest upsampling, computed at the low resolution;
upsamplers.conv_phases: the last conv of nearest+conv, on the phases of the upsampled image;
upsamplers.shuffle_conv_to_image: the same after a pixel shuffle, on the shuffle's phases.

nearest+conv, pa_up, pixelshuffle, the standalone file's pixel shuffles and LHAN's
nearest_conv run through them; the oracle tests compare those layouts with spandrel's class.
Here each is compared with upsampling (or shuffling) and convolving, over factors, sizes and
channel counts.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from spandrel_fdat.upsamplers import (
    conv_phases,
    nearest_conv,
    nearest_conv_phases,
    nearest_conv_to_image,
    shuffle_conv_to_image,
)
from tests.test_properties import PROPERTY_SETTINGS


@settings(max_examples=150, **PROPERTY_SETTINGS)  # type: ignore[arg-type]
@given(
    factor=st.integers(1, 5),
    batch=st.integers(1, 2),
    c_in=st.integers(1, 6),
    c_out=st.integers(1, 6),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    bias=st.booleans(),
    channels_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_nearest_conv_is_upsample_then_conv(
    factor: int,
    batch: int,
    c_in: int,
    c_out: int,
    height: int,
    width: int,
    bias: bool,
    channels_last: bool,
    seed: int,
) -> None:
    torch.manual_seed(seed)
    conv = nn.Conv2d(c_in, c_out, 3, 1, 1, bias=bias).double()
    x = torch.randn(batch, c_in, height, width, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = conv(F.interpolate(x, scale_factor=factor, mode="nearest"))
        got = nearest_conv(x, factor, conv)
    assert got.shape == expected.shape
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_nearest_conv_low_precision(dtype: torch.dtype) -> None:
    """In fp16/bf16 the fold is as close to the fp32 result as upsampling then convolving in that dtype."""
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, 1, 1)
    x = torch.randn(1, 16, 12, 10)
    with torch.no_grad():
        exact = conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        low, x_low = conv.to(dtype), x.to(dtype)
        plain = low(F.interpolate(x_low, scale_factor=2, mode="nearest")).float()
        folded = nearest_conv(x_low, 2, low).float()
    assert (folded - exact).abs().max() <= 1.5 * (plain - exact).abs().max()


@pytest.mark.parametrize("factor", [2, 3])
def test_nearest_conv_gradients(factor: int) -> None:
    """Training through the fold: the input's and the conv's gradients are those of upsample-then-conv."""
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 4, 3, 1, 1).double()
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 4, 5 * factor, 6 * factor, dtype=torch.float64)

    def grads(out: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad((out * target).sum(), [x, conv.weight, conv.bias])

    expected = grads(conv(F.interpolate(x, scale_factor=factor, mode="nearest")))
    got = grads(nearest_conv(x, factor, conv))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-12)


@settings(max_examples=100, **PROPERTY_SETTINGS)  # type: ignore[arg-type]
@given(
    factor=st.integers(1, 4),
    batch=st.integers(1, 2),
    c_mid=st.integers(1, 5),
    c_out=st.integers(1, 4),
    height=st.integers(1, 7),
    width=st.integers(1, 7),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_conv_phases_is_conv_of_the_image(
    factor: int, batch: int, c_mid: int, c_out: int, height: int, width: int, bias: bool, seed: int
) -> None:
    """nearest_conv_to_image (nearest_conv_phases, a LeakyReLU on each phase, conv_phases): the
    layers in full."""
    torch.manual_seed(seed)
    first = nn.Conv2d(3, c_mid, 3, 1, 1).double()
    last = nn.Conv2d(c_mid, c_out, 3, 1, 1, bias=bias).double()
    x = torch.randn(batch, 3, height, width, dtype=torch.float64)
    with torch.no_grad():
        expected = last(F.leaky_relu(first(F.interpolate(x, scale_factor=factor, mode="nearest")), 0.2))
        got = nearest_conv_to_image(x, factor, first, [nn.LeakyReLU(0.2), last])
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_conv_phases_low_precision(dtype: torch.dtype) -> None:
    """In fp16/bf16 the phase-wise last conv is as close to fp32 as the plain conv in that dtype."""
    torch.manual_seed(0)
    first, last = nn.Conv2d(16, 16, 3, 1, 1), nn.Conv2d(16, 3, 3, 1, 1)
    x = torch.randn(1, 16, 12, 10)
    with torch.no_grad():
        exact = last(first(F.interpolate(x, scale_factor=2, mode="nearest")))
        first, last, x = first.to(dtype), last.to(dtype), x.to(dtype)
        plain = last(first(F.interpolate(x, scale_factor=2, mode="nearest"))).float()
        phased = conv_phases(nearest_conv_phases(x, 2, first), 12, 10, last).float()
    assert phased.dtype == plain.dtype
    assert (phased - exact).abs().max() <= 1.5 * (plain - exact).abs().max()


def test_conv_phases_gradients() -> None:
    """Training through the phases: gradients are those of the layers in full."""
    torch.manual_seed(1)
    first, last = nn.Conv2d(3, 4, 3, 1, 1).double(), nn.Conv2d(4, 2, 3, 1, 1).double()
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 2, 10, 12, dtype=torch.float64)
    params = [x, first.weight, first.bias, last.weight, last.bias]

    def grads(out: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad((out * target).sum(), params)

    expected = grads(last(first(F.interpolate(x, scale_factor=2, mode="nearest"))))
    got = grads(conv_phases(nearest_conv_phases(x, 2, first), 5, 6, last))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-12)


@settings(max_examples=100, **PROPERTY_SETTINGS)  # type: ignore[arg-type]
@given(
    factor=st.integers(1, 4),
    batch=st.integers(1, 2),
    c_mid=st.integers(1, 48),  # the taps fold into the first conv from about 8 per output channel
    c_out=st.integers(1, 4),
    height=st.integers(1, 7),
    width=st.integers(1, 7),
    bias=st.booleans(),
    activation=st.booleans(),
    channels_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_shuffle_conv_to_image_is_the_layers_in_full(
    factor: int,
    batch: int,
    c_mid: int,
    c_out: int,
    height: int,
    width: int,
    bias: bool,
    activation: bool,
    channels_last: bool,
    seed: int,
) -> None:
    """conv, pixel shuffle, [LeakyReLU,] last conv: the same image from the shuffle's phases."""
    torch.manual_seed(seed)
    first = nn.Conv2d(3, c_mid * factor * factor, 3, 1, 1, bias=bias).double()
    layers: list[nn.Module] = [nn.LeakyReLU(0.2, inplace=True)] if activation else []
    layers.append(nn.Conv2d(c_mid, c_out, 3, 1, 1).double())
    x = torch.randn(batch, 3, height, width, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = nn.Sequential(*layers)(F.pixel_shuffle(first(x), factor))
        got = shuffle_conv_to_image(x, factor, first, layers)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_shuffle_conv_to_image_low_precision(dtype: torch.dtype) -> None:
    """In fp16/bf16 the folded taps give an image as close to fp32 as the plain layers in that dtype."""
    torch.manual_seed(3)
    first, last = nn.Conv2d(32, 128, 3, 1, 1), nn.Conv2d(32, 3, 3, 1, 1)  # folded (32 > 8 * 3)
    x = torch.randn(1, 32, 12, 10)
    with torch.no_grad():
        exact = last(F.pixel_shuffle(first(x), 2))
        first, last, x = first.to(dtype), last.to(dtype), x.to(dtype)
        plain = last(F.pixel_shuffle(first(x), 2)).float()
        folded = shuffle_conv_to_image(x, 2, first, [last])
    assert folded.dtype == dtype
    assert (folded.float() - exact).abs().max() <= 1.5 * (plain - exact).abs().max()


def test_shuffle_conv_to_image_gradients() -> None:
    """Training through the shuffle's phases: gradients are those of the layers in full."""
    torch.manual_seed(2)
    first, last = nn.Conv2d(3, 128, 3, 1, 1).double(), nn.Conv2d(32, 2, 3, 1, 1).double()  # folded
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 2, 10, 12, dtype=torch.float64)
    params = [x, first.weight, first.bias, last.weight, last.bias]

    def grads(out: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad((out * target).sum(), params)

    expected = grads(last(F.pixel_shuffle(first(x), 2)))
    got = grads(shuffle_conv_to_image(x, 2, first, [last]))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-12)
