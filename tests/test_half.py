"""fp16 that never returns overflow garbage, and the CUDA-only forms of the network, run on the CPU."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from helpers import SMALL, build, image

from spandrel_fdat import FDAT, FDATHalfOverflowWarning
from spandrel_fdat import network as net


def hot(model: FDAT, factor: float = 2.0**15) -> FDAT:
    """The body's residual stream made `factor` times larger (shallow features scaled up, the
    upsampler's first layer down): fp32 stays fine, fp16 overflows inside the body."""
    with torch.no_grad():
        first = model.conv_first
        first.weight.mul_(factor)
        first.bias.mul_(factor)
        convs = [m for m in model.upsampler.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
        convs[0].weight.div_(factor)
    return model


def test_an_overflowing_fp16_forward_is_recomputed_in_fp32_on_the_cpu_with_one_warning() -> None:
    model = hot(build(**SMALL, scale=2, upsampler_type="pixelshuffle")).half()
    x = image(height=19, width=23).half()
    with torch.inference_mode():
        assert not torch.isfinite(model._forward(x)).all()  # the naive fp16 forward overflows
        # what the recompute must give: the same fp16-stored weights and input, run in fp32
        expected = copy.deepcopy(model).float()._forward(x.float()).half()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first, second = model(x), model(x)
    assert torch.isfinite(first).all()
    assert first.dtype == torch.float16
    assert torch.equal(first, expected) and torch.equal(second, expected)
    overflow = [w for w in caught if issubclass(w.category, FDATHalfOverflowWarning)]
    assert len(overflow) == 1, [str(w.message) for w in caught]  # once per model
    assert "recomputed in float32" in str(overflow[0].message)
    assert all(p.dtype == torch.float16 for p in model.parameters())  # the model itself stays fp16


def test_each_model_warns_for_itself() -> None:
    x = image().half()
    for _ in range(2):
        model = hot(build(**SMALL, scale=2, upsampler_type="pixelshuffle")).half()
        with pytest.warns(FDATHalfOverflowWarning), torch.inference_mode():
            model(x)


def test_a_finite_fp16_forward_is_returned_as_it_is() -> None:
    model = build(**SMALL, scale=2, upsampler_type="pixelshuffle").half()
    x = image(height=19, width=23).half()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.inference_mode():
            out = model(x)
            assert torch.equal(out, model._forward(x))


def test_nan_in_gives_nan_out_without_a_recompute() -> None:
    model = hot(build(**SMALL, scale=2, upsampler_type="pixelshuffle")).half()
    x = image().half()
    x[0, 0, 0, 0] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.inference_mode():
            assert not torch.isfinite(model(x)).all()


@pytest.mark.parametrize("size", [(9, 14), (21, 30)])
def test_the_cuda_head_padding_changes_no_output(monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]) -> None:
    """Zero weight rows for q, k, v and zero proj columns (CUDA's fused SDPA needs head dims of 8k)."""
    model = build(**{**SMALL, "embed_dim": 30, "num_heads": 3}, scale=2, upsampler_type="pixelshuffle")  # hd 10
    x = image(height=size[0], width=size[1])
    with torch.inference_mode():
        plain = model(x)
        monkeypatch.setattr(net, "_fused_head_pad", lambda x, head_dim: -head_dim % 8)
        padded = model(x)
    torch.testing.assert_close(padded, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [16, 37, 10_000])
def test_chunked_pixel_sums_give_the_statistics_of_the_whole_image(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    """The products path (GPUs, graphs) in chunks, a remainder included, against the CPU's fp64 moments."""
    model = build(**SMALL, scale=2, upsampler_type="pixelshuffle")
    attention = next(m for m in model.modules() if isinstance(m, net.ChannelAttention))
    y = torch.randn(1, 13, 17, SMALL["embed_dim"], generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(net, "STAT_CHUNK", chunk)
    with torch.inference_mode():
        gram, squares = attention._statistics_from_products(y)
        gram64, squares64 = attention._statistics_from_moments(y)
    torch.testing.assert_close(gram.double(), gram64, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(squares.double(), squares64, rtol=1e-5, atol=1e-4)
