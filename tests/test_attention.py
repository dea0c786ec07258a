"""The attention blocks' shortcuts against the plain formulas they replace.

network._windows partitions without padding the image first; ChannelAttention.statistics
gets q^T k and the squared norms of q and k from one product per head. The oracle tests
compare whole networks with spandrel's class; these pin each part over sizes and shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from spandrel_fdat.network import ChannelAttention, _windows
from tests.test_properties import PROPERTY_SETTINGS


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
)
def test_channel_statistics_are_gram_and_norms(batch: int, heads: int, head_dim: int, pixels: int, seed: int) -> None:
    torch.manual_seed(seed)
    c = heads * head_dim
    attention = ChannelAttention(c, heads).double()
    torch.nn.init.normal_(attention.qkv.weight)
    y = torch.randn(batch, 1, pixels, c, dtype=torch.float64)
    with torch.no_grad():
        gram, squares = attention.statistics(y)
        q, k, _ = F.linear(y.view(batch, pixels, c), attention.qkv.weight).chunk(3, dim=-1)
    q_heads = q.view(batch, pixels, heads, head_dim).permute(0, 2, 3, 1)  # (B, heads, hd, N)
    k_heads = k.view(batch, pixels, heads, head_dim).permute(0, 2, 3, 1)
    torch.testing.assert_close(gram, q_heads @ k_heads.transpose(-1, -2), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(squares, torch.cat([q, k], dim=-1).square().sum(1), rtol=1e-12, atol=1e-12)
