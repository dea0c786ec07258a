"""Fitting an image's planes to a model's channels, and the model's output back to the image's.

An image has 1 (grey) or 3 (RGB) colour planes and maybe an alpha plane. A model takes and
gives 1 to 4 channels: 1 and 3 are grey and RGB; 2 and 4 are grey and RGB with alpha. The
image keeps its own planes, whatever the model's channels:

- a grey image on an RGB model: replicated to 3 channels, the output averaged back to 1;
- an RGB image on a grey model: each colour plane is a grey image of its own (a batch of 3);
- alpha, on a model without alpha: upscaled on its own as a grey image, in a second pass,
  and taken back as one channel;
- on a model with alpha (2 or 4 channels): colour and alpha go in together (an opaque alpha
  where the image has none), and the model's alpha channel becomes the image's alpha.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MODEL_CHANNELS", "ChannelFit"]

MODEL_CHANNELS = (1, 2, 3, 4)
"""The model channel counts `ChannelFit` handles."""


def _colour_channels(model_channels: int) -> int:
    return model_channels - 1 if model_channels in (2, 4) else model_channels


@dataclass(frozen=True)
class ChannelFit:
    """How one image's planes go through a model with `model_in` -> `model_out` channels."""

    image_channels: int  # 1 (grey) or 3 (RGB)
    has_alpha: bool
    model_in: int
    model_out: int

    def __post_init__(self) -> None:
        if self.image_channels not in (1, 3):
            raise ValueError(f"expected a grey (1) or RGB (3) image, got {self.image_channels} colour planes")
        for name, count in (("input", self.model_in), ("output", self.model_out)):
            if count not in MODEL_CHANNELS:
                raise ValueError(f"expected a model with 1 to 4 {name} channels, got {count}")
        if self.has_alpha and self.alpha_in_model and self.model_out not in (2, 4):
            raise ValueError(
                f"the model takes alpha ({self.model_in} channels) but gives none back ({self.model_out}): "
                "it cannot upscale an image's alpha"
            )

    @property
    def alpha_in_model(self) -> bool:
        """The model carries alpha itself (2 or 4 input channels): one pass per image."""
        return self.model_in in (2, 4)

    @property
    def split(self) -> bool:
        """RGB planes go through a grey model one by one, as a batch of 3."""
        return self.image_channels == 3 and _colour_channels(self.model_in) == 1

    def inputs(self, colour: Tensor, alpha: Tensor | None) -> list[Tensor]:
        """The model inputs for one image: (B, model_in, H, W) batches, one per pass.

        `colour` is (C, H, W) with C = image_channels; `alpha` is (1, H, W) or None.
        """
        if self.alpha_in_model:
            planes = self._fit(colour, _colour_channels(self.model_in))  # (B, k, H, W)
            opaque = colour.new_ones(1, *colour.shape[1:])
            mask = (alpha if alpha is not None else opaque).expand(planes.shape[0], 1, *colour.shape[1:])
            return [torch.cat([planes, mask], dim=1)]  # (B, k + 1, H, W)
        passes = [self._fit(colour, self.model_in)]
        if alpha is not None:
            passes.append(self._fit(alpha, self.model_in))
        return passes

    def outputs(self, results: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        """The upscaled (C, H', W') colour and (1, H', W') alpha (None without alpha) from the passes' outputs."""
        k = _colour_channels(self.model_out)
        first = results[0]  # (B, model_out, H', W')
        colour = self._unfit(first[:, :k], self.image_channels, self.split)
        if not self.has_alpha:
            return colour, None
        if len(results) > 1:  # alpha's own pass, as a grey image
            return colour, self._unfit(results[1][:, :k], 1, False)
        return colour, first[:, k:].mean(0)  # alpha came out of the model with the colour: (1, H', W')

    @staticmethod
    def _fit(planes: Tensor, channels: int) -> Tensor:
        """(C, H, W) planes as a (B, channels, H, W) batch (channels is 1 or 3)."""
        count = planes.shape[0]
        if count == channels:
            return planes[None]
        if count == 1:  # grey on an RGB model: (1, 3, H, W)
            return planes[None].expand(1, channels, *planes.shape[1:])
        return planes[:, None]  # RGB on a grey model: (3, 1, H, W)

    @staticmethod
    def _unfit(out: Tensor, planes: int, split: bool) -> Tensor:
        """A (B, k, H', W') output back to (planes, H', W')."""
        if split:  # (3, k, H', W'): one grey image per colour plane
            return out.mean(1)
        image = out[0]  # (k, H', W')
        if image.shape[0] == planes:
            return image
        if planes == 1:  # RGB out of a grey image: average back to grey
            return image.mean(0, keepdim=True)
        return image.expand(planes, *image.shape[1:])  # a grey model output for an RGB image
