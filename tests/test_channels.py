"""Fitting an image's planes to a model's channels and back (`spandrel_fdat.channels.ChannelFit`).

The "model" here passes its input through, fitted to its output channels (grey -> RGB
replicates, RGB -> grey averages, alpha goes to alpha), so every combination can be checked
for shapes and values: an image comes back unchanged whenever the model can carry it.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from spandrel_fdat.channels import ChannelFit


def passthrough(model_in: int, model_out: int) -> object:
    """A (B, model_in, H, W) -> (B, model_out, H, W) model that keeps what it can."""
    k_in, k_out = (c - 1 if c in (2, 4) else c for c in (model_in, model_out))

    def model(x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == model_in
        colour = x[:, :k_in]
        if k_out != k_in:
            colour = colour.mean(1, keepdim=True).expand(-1, k_out, -1, -1)
        if model_out in (2, 4):
            alpha = x[:, k_in:] if model_in in (2, 4) else torch.ones_like(x[:, :1])
            return torch.cat([colour, alpha], 1)
        return colour

    return model


CASES = list(itertools.product([1, 3], [False, True], [1, 2, 3, 4], [1, 2, 3, 4]))


@pytest.mark.parametrize(("planes", "has_alpha", "model_in", "model_out"), CASES)
def test_every_image_on_every_model(planes: int, has_alpha: bool, model_in: int, model_out: int) -> None:
    gen = torch.Generator().manual_seed(planes * 100 + model_in * 10 + model_out)
    colour, alpha = torch.rand(planes, 5, 4, generator=gen), torch.rand(1, 5, 4, generator=gen) if has_alpha else None
    if has_alpha and model_in in (2, 4) and model_out in (1, 3):
        with pytest.raises(ValueError, match=r"takes alpha \(\d channels\) but gives none back"):
            ChannelFit(planes, has_alpha, model_in, model_out)
        return
    fit = ChannelFit(planes, has_alpha, model_in, model_out)
    batches = fit.inputs(colour, alpha)
    assert all(batch.shape[1:] == (model_in, 5, 4) for batch in batches)
    # alpha takes a pass of its own only on a model without alpha
    assert len(batches) == (2 if has_alpha and model_in in (1, 3) else 1)
    model = passthrough(model_in, model_out)
    out_colour, out_alpha = fit.outputs([model(batch) for batch in batches])  # type: ignore[operator]
    assert out_colour.shape == colour.shape and (out_alpha is None) == (alpha is None)
    k_in, k_out = (c - 1 if c in (2, 4) else c for c in (model_in, model_out))
    if planes == 3 and k_in == 3 and k_out == 1:  # an RGB image through an RGB -> grey model: grey
        torch.testing.assert_close(out_colour, colour.mean(0, keepdim=True).expand(3, -1, -1))
    else:
        torch.testing.assert_close(out_colour, colour)
    if alpha is not None:
        assert out_alpha is not None
        torch.testing.assert_close(out_alpha, alpha)


def test_rgb_on_a_grey_model_is_a_batch_of_three() -> None:
    fit = ChannelFit(3, False, 1, 1)
    (batch,) = fit.inputs(torch.rand(3, 6, 7), None)
    assert fit.split and batch.shape == (3, 1, 6, 7)


def test_an_opaque_alpha_is_added_for_an_rgba_model() -> None:
    (batch,) = ChannelFit(3, False, 4, 4).inputs(torch.rand(3, 2, 2), None)
    assert batch.shape == (1, 4, 2, 2) and bool((batch[:, 3] == 1).all())


def test_bad_channel_counts() -> None:
    with pytest.raises(ValueError, match="grey \\(1\\) or RGB \\(3\\) image"):
        ChannelFit(2, False, 3, 3)
    with pytest.raises(ValueError, match="1 to 4 input channels, got 5"):
        ChannelFit(3, False, 5, 3)
    with pytest.raises(ValueError, match="1 to 4 output channels, got 0"):
        ChannelFit(3, False, 3, 0)
