"""The attention blocks' shortcuts against the plain formulas they replace.

network._windows partitions without padding the image first. ChannelAttention.statistics
gets q^T k and the squared norms of q and k either from one product per head (GPUs, graphs)
or, on the CPU, from the pixels' second moments in fp64, q and k never formed: both are pinned
here. The oracle tests compare whole networks with spandrel's class; these pin each part over
sizes and shapes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from spandrel_fdat.network import ChannelAttention, _windows
from tests.test_properties import PROPERTY_SETTINGS

STATISTICS = ("_statistics_from_products", "_statistics_from_moments")


@settings(max_examples=150, **PROPERTY_SETTINGS)  # type: ignore[arg-type]
@given(
    batch=st.integers(1, 2),
    height=st.integers(1, 30),
    width=st.integers(1, 30),
    window=st.integers(1, 9),
    channels=st.integers(1, 5),
)
def test_windows_are_pad_then_partition(batch: int, height: int, width: int, window: int, channels: int) -> None:
    x = torch.randn(batch, height, width, channels)
    hw, ww = -(-height // window), -(-width // window)
    padded = F.pad(x, (0, 0, 0, ww * window - width, 0, hw * window - height))
    expected = padded.view(batch, hw, window, ww, window, channels).transpose(2, 3)  # (B, hw, ww, ws, ws, C)
    assert torch.equal(_windows(x, window), expected)


def test_windows_pass_gradients() -> None:
    x = torch.randn(1, 5, 7, 3, requires_grad=True)
    weights = torch.randn(4, 16, 3)
    (_windows(x, 4) * weights.view(1, 2, 2, 4, 4, 3)).sum().backward()
    assert x.grad is not None
    # each pixel's gradient is the weight at its place in its window
    expected = weights.view(2, 2, 4, 4, 3).transpose(1, 2).reshape(8, 8, 3)[:5, :7]
    torch.testing.assert_close(x.grad[0], expected)


@settings(max_examples=60, **PROPERTY_SETTINGS)  # type: ignore[arg-type]
@given(
    batch=st.integers(1, 2),
    heads=st.integers(1, 4),
    head_dim=st.integers(1, 6),
    pixels=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    method=st.sampled_from(STATISTICS),
)
def test_channel_statistics_are_gram_and_norms(
    batch: int, heads: int, head_dim: int, pixels: int, seed: int, method: str
) -> None:
    torch.manual_seed(seed)
    c = heads * head_dim
    attention = ChannelAttention(c, heads).double()
    torch.nn.init.normal_(attention.qkv.weight)
    y = torch.randn(batch, 1, pixels, c, dtype=torch.float64) + torch.randn(c, dtype=torch.float64)
    with torch.no_grad():
        gram, squares = getattr(attention, method)(y)
        q, k, _ = F.linear(y.view(batch, pixels, c), attention.qkv.weight).chunk(3, dim=-1)
    q_heads = q.view(batch, pixels, heads, head_dim).permute(0, 2, 3, 1)  # (B, heads, hd, N)
    k_heads = k.view(batch, pixels, heads, head_dim).permute(0, 2, 3, 1)
    torch.testing.assert_close(gram, q_heads @ k_heads.transpose(-1, -2), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(squares, torch.cat([q, k], dim=-1).square().sum(1), rtol=1e-12, atol=1e-12)


def _cosines(gram: torch.Tensor, squares: torch.Tensor) -> torch.Tensor:
    """normalize(q)^T normalize(k) per head from statistics' output."""
    b, heads, hd, _ = gram.shape
    norms = squares.sqrt().view(b, 2, heads, hd)
    return gram / (norms[:, 0, :, :, None] * norms[:, 1, :, None, :])


def test_statistics_take_the_moments_path_on_cpu() -> None:
    attention = ChannelAttention(8, 2)
    with torch.no_grad():
        gram, squares = attention.statistics(torch.randn(1, 4, 4, 8))
    assert gram.dtype == squares.dtype == torch.float64  # products would give fp32


@pytest.mark.parametrize("method", STATISTICS)
def test_channel_statistics_keep_fp32_accuracy_under_a_large_offset(method: str) -> None:
    # Features far from zero on every channel, and q's rows blind to that offset: second moments
    # of the features with the offset's terms in fp32 were 4e-5 off here; q and k themselves 5e-7.
    torch.manual_seed(0)
    c, heads, pixels = 32, 4, 4096
    offset = torch.randn(c)
    attention = ChannelAttention(c, heads)
    with torch.no_grad():
        w = torch.randn(3 * c, c) / c**0.5
        w[:c] -= (w[:c] @ offset)[:, None] * offset / offset.square().sum()
        attention.qkv.weight.copy_(w)
    y = 0.1 * torch.randn(1, 64, pixels // 64, c) + 30 * offset
    with torch.no_grad():
        fp32 = _cosines(*getattr(attention, method)(y))
        fp64 = _cosines(*getattr(attention.double(), method)(y.double()))
    torch.testing.assert_close(fp32.double(), fp64, rtol=0, atol=1e-5)


def test_moments_keep_a_q_row_along_layer_norms_null_direction() -> None:
    # LayerNorm's output with zero bias has sum(y / gamma) = 0 at every pixel, so a q row close
    # to 1 / gamma gives |q| = 1.7e-4 |y| |w|. Measured against fp64 here: moments in fp32 put
    # the cosines 4e-3 off, q itself in fp32 (the reference) 1e-6, the fp64 moments 1.5e-10.
    torch.manual_seed(0)
    c, heads, pixels = 32, 4, 4096
    gamma = 1 + 0.2 * torch.randn(c)
    y = F.layer_norm(torch.randn(1, 64, pixels // 64, c), (c,), weight=gamma)
    attention = ChannelAttention(c, heads)
    with torch.no_grad():
        w = torch.randn(3 * c, c) / c**0.5
        w[0] = 1 / gamma + 1e-3 * torch.randn(c)
        attention.qkv.weight.copy_(w)
        ours = _cosines(*attention._statistics_from_moments(y))
        exact = _cosines(*attention.double()._statistics_from_products(y.double()))
    torch.testing.assert_close(ours, exact, rtol=0, atol=1e-9)
