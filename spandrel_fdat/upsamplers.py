"""Upsampler layouts: UniUpsample V2/V3, LHAN's own, and the standalone file's.

Module names and indices reproduce each layout's state-dict keys exactly;
`config.upsampler_shapes` lists the same keys without building anything.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import DYSAMPLE_GROUPS, LDA_GROUPS, LDA_KERNEL, LDA_REDUCTION, FDATConfig
from .onnx_shapes import fp32_island
from .sampling import grid_sample


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1)


def _lrelu(slope: float = 0.01) -> nn.LeakyReLU:
    return nn.LeakyReLU(slope, inplace=True)


class DySample(nn.Module):
    """Learned point sampling (Liu et al., 2023), `groups` offset groups.

    Unlike spandrel 0.4.2's copy it allocates nothing in pinned memory, so it
    runs on a machine with a CUDA build of torch and no GPU.
    """

    def __init__(self, channels: int, out_ch: int, scale: int, groups: int = DYSAMPLE_GROUPS) -> None:
        super().__init__()
        self.scale, self.groups = scale, groups
        n = 2 * groups * scale * scale
        self.end_conv = nn.Conv2d(channels, out_ch, 1)
        self.offset = nn.Conv2d(channels, n, 1)
        self.scope = nn.Conv2d(channels, n, 1, bias=False)
        self.register_buffer("init_pos", self._init_pos())

    def _init_pos(self) -> Tensor:
        s = self.scale
        h = (torch.arange(s) - (s - 1) / 2) / s
        grid = torch.stack(torch.meshgrid(h, h, indexing="ij"))  # (2, s, s), (y, x)
        return grid.transpose(1, 2).repeat(1, self.groups, 1).reshape(1, -1, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        s, g = self.scale, self.groups
        # Sampling positions and the sampling itself in at least fp32: in fp16/bf16 a
        # position in a 512-pixel image would be off by up to a pixel or more.
        dtype = x.dtype
        work = torch.promote_types(dtype, torch.float32)
        offset = self.offset(x).to(work) * self.scope(x).to(work).sigmoid() * 0.5 + self.init_pos.to(work)
        offset = offset.view(b, 2, g * s * s, h, w)  # (B, xy, G*s*s, H, W)
        ys = torch.arange(h, device=x.device, dtype=work) + 0.5
        xs = torch.arange(w, device=x.device, dtype=work) + 0.5
        base = torch.stack(torch.meshgrid(xs, ys, indexing="ij")).transpose(1, 2)  # (2, H, W)
        norm = torch.cat([xs[-1:], ys[-1:]]).add(0.5).view(1, 2, 1, 1, 1)  # (W, H), traceable
        coords = 2 * (base.view(1, 2, 1, h, w) + offset) / norm - 1
        # (B, 2*G*s*s, H, W) -> (B, 2*G, sH, sW) -> (B*G, sH, sW, xy)
        coords = F.pixel_shuffle(coords.reshape(b, -1, h, w), s)
        coords = coords.view(b, 2, g, s * h, s * w).permute(0, 2, 3, 4, 1).reshape(b * g, s * h, s * w, 2)
        out = grid_sample(
            x.to(work).reshape(b * g, c // g, h, w),
            coords,
            padding_mode="border",
            align_corners=False,
            gather=torch.onnx.is_in_onnx_export(),
        )
        return self.end_conv(out.view(b, c, s * h, s * w).to(dtype))


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over dim 1 of a (B, C, H, W) tensor, eps 1e-6 as in LDA_AQU.

    In an exported fp16 (or bf16) graph it is an fp32 island, as the body's LayerNorm: the
    upsampler's input is the residual stream, whose squares can pass fp16's range.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        if fp32_island(x):
            x = x.float()
        u = x.mean(1, keepdim=True)
        var = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(var + self.eps)
        return (self.weight[:, None, None] * x + self.bias[:, None, None]).to(dtype)


class LDAUpsample(nn.Module):
    """Local deformable attention upsampler (LDA_AQU: one head, two offset groups, 3x3 kernel)."""

    def __init__(self, channels: int, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.hidden = channels // LDA_REDUCTION
        gc = channels // (LDA_REDUCTION * LDA_GROUPS)
        k2 = LDA_KERNEL * LDA_KERNEL
        self.proj_q = nn.Conv2d(channels, self.hidden, 1, bias=False)
        self.proj_k = nn.Conv2d(channels, self.hidden, 1, bias=False)
        self.conv_offset = nn.Sequential(
            nn.Conv2d(gc, gc, 3, 1, 1, groups=gc, bias=False),
            ChannelsFirstLayerNorm(gc),
            nn.SiLU(),
            nn.Conv2d(gc, 2 * k2, 3, 1, 1),
        )
        self.layer_norm = ChannelsFirstLayerNorm(channels)
        r = torch.arange(LDA_KERNEL, dtype=torch.float32) - (LDA_KERNEL - 1) // 2
        dy, dx = torch.meshgrid(r, r, indexing="ij")
        base = torch.stack([dy.flatten(), dx.flatten()], dim=1)  # (k*k, yx)
        self.register_buffer("base_offset", base.reshape(1, -1, 1, 1), persistent=False)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(1, 1, 1, k2, self.hidden))

    def _sample(self, x: Tensor, grid: Tensor, oh: int, ow: int) -> Tensor:
        """(B*G, c, H, W) sampled at the k*k points of each output pixel -> (B*G, k*k, c, oH, oW)."""
        k = LDA_KERNEL
        out = grid_sample(x, grid, padding_mode="zeros", align_corners=True, gather=torch.onnx.is_in_onnx_export())
        bg, c = out.shape[:2]
        return out.view(bg, c, k, oh, k, ow).permute(0, 2, 4, 1, 3, 5).reshape(bg, k * k, c, oh, ow)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        oh, ow, g, k = h * self.scale, w * self.scale, LDA_GROUPS, LDA_KERNEL
        xn = self.layer_norm(x)
        q = F.interpolate(self.proj_q(xn), (oh, ow), mode="bilinear", align_corners=True)
        key = self.proj_k(xn)

        offset = self.conv_offset(q.reshape(b * g, -1, oh, ow))  # q may be channels-last
        # Positions, sampling and this small attention run in at least fp32 whatever the
        # model's dtype: in fp16/bf16 a position in a large image is off by a pixel or more.
        dtype = x.dtype
        work = torch.promote_types(dtype, torch.float32)
        offset = offset.to(work).tanh() * 11 + self.base_offset.to(work)
        # (B*G, (ky kx yx), oH, oW) -> sampling grid (B*G, k*oH, k*oW, xy), normalised to [-1, 1]
        offset = offset.view(b * g, k, k, 2, oh, ow).permute(0, 1, 4, 2, 5, 3)
        rows = torch.arange(oh, device=x.device, dtype=work).view(oh, 1, 1)
        cols = torch.arange(ow, device=x.device, dtype=work).view(1, ow, 1)
        pos = torch.cat([rows.expand(oh, ow, 1), cols.expand(oh, ow, 1)], dim=-1)  # (oH, oW, yx)
        offset = offset + pos.view(1, 1, oh, 1, ow, 2)
        denom = torch.cat([rows.view(-1)[-1:], cols.view(-1)[-1:]])  # (oH - 1, oW - 1), traceable
        grid = (2 * offset / denom - 1).reshape(b * g, k * oh, k * ow, 2).flip(-1)

        k_s = self._sample(key.to(work).reshape(b * g, -1, h, w), grid, oh, ow)  # (B*G, k*k, hid/G, oH, oW)
        v_s = self._sample(x.to(work).reshape(b * g, -1, h, w), grid, oh, ow)  # (B*G, k*k, C/G, oH, oW)

        def tokens(t: Tensor) -> Tensor:  # (B*G, k*k, c, oH, oW) -> (B, oH*oW, k*k, G*c)
            t = t.view(b, g, k * k, -1, oh * ow).permute(0, 4, 2, 1, 3)
            return t.reshape(b, oh * ow, k * k, -1)

        keys = tokens(k_s) + self.relative_position_bias_table[0, 0].to(work)
        values = tokens(v_s)
        queries = q.to(work).flatten(2).transpose(1, 2).unsqueeze(2) * self.hidden**-0.5  # (B, L, 1, hid)
        attn = (queries @ keys.transpose(-1, -2)).softmax(dim=-1)  # (B, L, 1, k*k)
        out = (attn @ values).squeeze(2)  # (B, L, C)
        return out.transpose(1, 2).reshape(b, c, oh, ow).to(dtype)


class PixelAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.conv(x)


def _phase_folds(factor: int, like: Tensor) -> list[tuple[int, Tensor]]:
    """Along one axis, per output phase p (output row factor * i + p): the first input row it
    reads, relative to i (-1 or 0), and the (taps, 3) matrix that sums the 3 kernel rows landing
    on the same input row."""
    folds = []
    for p in range(factor):
        rows = [(p + d) // factor for d in (-1, 0, 1)]  # input row, relative to i, of each kernel row
        fold = like.new_zeros(rows[2] - rows[0] + 1, 3)
        for d, r in enumerate(rows):
            fold[r - rows[0], d] = 1
        folds.append((rows[0], fold))
    return folds


class Phase(NamedTuple):
    """One phase of an upsampled image: its (B, h, w, C) pixels are `full[:, top : top + h, left : left + w]`,
    inside a larger (B, H', W', C) tensor that a convolution wrote whole."""

    full: Tensor
    top: int
    left: int


# phases[py][px] holds pixels (factor * i + py, factor * j + px) of a (factor * h, factor * w) image
Phases = list[list[Phase]]


def _pixels(phase: Phase, h: int, w: int) -> Tensor:
    return phase.full[:, phase.top : phase.top + h, phase.left : phase.left + w]


def nearest_conv_phases(x: Tensor, factor: int, conv: nn.Conv2d) -> Phases:
    """conv(nearest upsampling of x by factor), for a 3x3 conv with padding 1, as its output phases.

    Each output phase is x convolved with a smaller kernel, the sum of the 3x3 taps that fall on
    the same input pixel: at x2, 4 taps per output pixel instead of 9. Each runs on x itself with
    padding 1, a border row or column more than the phase needs, so x is never sliced or copied.
    """
    weight = conv.weight.to(torch.promote_types(x.dtype, torch.float32))  # fold in at least fp32
    folds = _phase_folds(factor, weight)
    phases = []
    for first_row, fold_y in folds:
        row = []
        for first_col, fold_x in folds:
            # (C_out, C_in, taps_y, taps_x): fold_y @ weight @ fold_x^T, as one product
            taps = (fold_y[:, None, :, None] * fold_x[None, :, None, :]).flatten(2).flatten(0, 1)  # (ty * tx, 9)
            kernel = (
                (weight.reshape(-1, 9) @ taps.t()).view(*weight.shape[:2], fold_y.shape[0], fold_x.shape[0]).to(x.dtype)
            )
            # output row u reads input rows u - 1, ...: phase row i is u = i + first_row + 1
            full = F.conv2d(x, kernel, conv.bias, padding=1).permute(0, 2, 3, 1)  # (B, H', W', C_out)
            row.append(Phase(full, first_row + 1, first_col + 1))
        phases.append(row)
    return phases


def _taps(conv: nn.Conv2d) -> Tensor:
    """A 3x3 conv's weight as (9 * C_out, C_in) rows ordered (ky, kx, C_out)."""
    return conv.weight.permute(2, 3, 0, 1).reshape(9 * conv.out_channels, -1)


def conv_phases(phases: Phases, h: int, w: int, conv: nn.Conv2d) -> Tensor:
    """A 3x3 conv with padding 1 of the image given by its h x w phases, as a (B, C_out, fh, fw)
    image; the full-resolution input is never formed. For few output channels (the last conv).

    Each input phase is multiplied by all 9 taps at once (`_sum_taps` adds up the products).
    """
    first = phases[0][0].full
    taps = _taps(conv)

    def products(phase: Phase) -> Tensor:
        """(B, 9 C_out, h, w): the phase's pixels times every tap. No reshape, so an exported
        graph takes every size (a traced reshape would bake the traced one in)."""
        planes = torch.matmul(phase.full, taps.t()).permute(0, 3, 1, 2)  # (B, 9 C_out, H', W')
        return planes[:, :, phase.top : phase.top + h, phase.left : phase.left + w]

    return _sum_taps([[products(p) for p in row] for row in phases], conv.bias, first.dtype)


def _sum_taps(products: list[list[Tensor]], bias: Tensor | None, dtype: torch.dtype) -> Tensor:
    """A 3x3 conv with padding 1 of a factor x factor-phased image, given each phase's pixels
    times every tap, (B, 9 C_out, h, w) with rows (ky, kx, C_out): the (B, C_out, fh, fw) image.
    Each output pixel sums 9 products, each from the phase and neighbour (offset -1, 0 or 1) its
    tap falls on; outside the image the products are zero, the conv's padding."""
    factor, first = len(products), products[0][0]
    c_out, h, w = first.shape[1] // 9, first.shape[2], first.shape[3]
    work = torch.promote_types(first.dtype, torch.float32)  # 9 terms summed in at least fp32
    # tap (ky, kx) of a phase: channels (3 ky + kx) C_out onwards of its (B, 9 C_out, h + 2, w + 2)
    # padding; sliced, not reshaped, so that an exported graph takes every size
    padded = [[F.pad(p.to(work), (1, 1, 1, 1)) for p in row] for row in products]
    acc0 = (bias if bias is not None else first.new_zeros(c_out)).to(work).view(1, c_out, 1, 1)
    out = []  # out[py][px]: (B, C_out, h, w)
    for py in range(factor):
        row = []
        for px in range(factor):
            acc = acc0
            for ky in range(3):
                qy, oy = (py + ky - 1) % factor, (py + ky - 1) // factor  # source phase and offset
                for kx in range(3):
                    qx, ox = (px + kx - 1) % factor, (px + kx - 1) // factor
                    t = (3 * ky + kx) * c_out
                    acc = acc + padded[qy][qx][:, t : t + c_out, 1 + oy : 1 + oy + h, 1 + ox : 1 + ox + w]
            row.append(acc)
        out.append(row)
    # (B, C_out, h, py, w, px): the output image, NCHW
    image = torch.stack([torch.stack(row, dim=-1) for row in out], dim=3)
    return image.flatten(4, 5).flatten(2, 3).to(dtype)


def interleave(phases: Phases, h: int, w: int) -> Tensor:
    """factor x factor phases of h x w pixels -> the (B, C, factor * h, factor * w) image, channels-last."""
    factor, first = len(phases), phases[0][0].full
    b, c = first.shape[0], first.shape[-1]
    # The output in channels-last memory, (B, h, py, w, px, C): each phase writes its pixels.
    out = first.new_empty(b, h, factor, w, factor, c)
    for py, row in enumerate(phases):
        for px, phase in enumerate(row):
            out[:, :, py, :, px].copy_(_pixels(phase, h, w))
    return out.view(b, h * factor, w * factor, c).permute(0, 3, 1, 2)


def nearest_conv(x: Tensor, factor: int, conv: nn.Conv2d) -> Tensor:
    """conv(nearest upsampling of x by factor) for a 3x3 conv with padding 1, computed on x
    phase by phase (`nearest_conv_phases`). Returns a channels-last (B, C_out, fH, fW) tensor."""
    return interleave(nearest_conv_phases(x, factor, conv), x.shape[-2], x.shape[-1])


def _stages(scale: int) -> list[int]:
    """Per-stage factors of the staged upsamplers: x3 in one stage, 2^n in n stages of x2."""
    return [3] if scale == 3 else [2] * int(math.log2(scale))


def _to_image(layers: list[nn.Module]) -> bool:
    """Elementwise activations, then a last 3x3 conv to a few image channels."""
    if not layers:
        return False
    *acts, last = layers
    return (
        isinstance(last, nn.Conv2d)
        and last.kernel_size == (3, 3)
        and last.padding == (1, 1)
        and last.out_channels <= 4
        and all(isinstance(a, nn.LeakyReLU | nn.GELU) for a in acts)
    )


def _by_phase(conv: nn.Conv2d, factor: int) -> tuple[Tensor, Tensor | None]:
    """The weight (f^2, C, C_in, k, k) and bias (f^2, C) of a conv before pixel_shuffle, by output
    phase p = i * f + j: pixel_shuffle moves channel c * f^2 + p to pixel (f * y + i, f * x + j)."""
    assert conv.groups == 1
    f2 = factor * factor
    weight = conv.weight.unflatten(0, (-1, f2)).transpose(0, 1)
    bias = None if conv.bias is None else conv.bias.view(-1, f2).t()
    return weight, bias


def shuffle_phases(x: Tensor, factor: int, conv: nn.Conv2d) -> Phases:
    """pixel_shuffle(conv(x), factor) as its output phases, none of them copied: with the conv's
    output channels reordered by phase, each phase is a run of adjacent channels."""
    weight, bias = _by_phase(conv, factor)
    c = weight.shape[1]
    out = F.conv2d(
        x, weight.flatten(0, 1), None if bias is None else bias.flatten(), conv.stride, conv.padding, conv.dilation
    )
    cells = out.permute(0, 2, 3, 1).unflatten(-1, (factor, factor, c))  # (B, H, W, i, j, C)
    return [[Phase(cells[:, :, :, i, j], 0, 0) for j in range(factor)] for i in range(factor)]


def _phases_to_image(phases: Phases, h: int, w: int, layers: list[nn.Module]) -> Tensor:
    """`_to_image` layers on an image given by its h x w phases: the full-resolution image is
    formed only at the last conv's few channels."""
    *acts, last = layers
    for act in acts:  # elementwise: on each phase's whole tensor, border included
        phases = [[p._replace(full=act(p.full)) for p in row] for row in phases]
    assert isinstance(last, nn.Conv2d)
    return conv_phases(phases, h, w, last)


def nearest_conv_to_image(x: Tensor, factor: int, conv: nn.Conv2d, layers: list[nn.Module]) -> Tensor:
    """`_to_image` layers after conv(nearest upsampling of x), all on the output phases."""
    return _phases_to_image(nearest_conv_phases(x, factor, conv), x.shape[-2], x.shape[-1], layers)


def shuffle_conv_to_image(x: Tensor, factor: int, conv: nn.Conv2d, layers: list[nn.Module]) -> Tensor:
    """`_to_image` layers after pixel_shuffle(conv(x)), all on the shuffle's phases: the
    shuffled image is never formed.

    With no activation in between, the last conv's taps can fold into `conv` itself: each
    phase's products with the 9 taps come straight from one conv of x. At x2 with 64 channels
    to RGB that conv has 4 * 9 * 3 = 108 output channels instead of 256, and there is no full-
    resolution conv; it is taken where it needs fewer multiplications (more than 8 channels per
    output channel, about).
    """
    h, w = x.shape[-2:]
    f2, last = factor * factor, layers[-1]
    assert isinstance(last, nn.Conv2d)
    per_pixel = conv.weight[0].numel()  # C_in * k * k: multiplications per output channel
    folded = per_pixel * f2 * 9 * last.out_channels
    unfolded = per_pixel * conv.out_channels + 9 * conv.out_channels * last.out_channels
    if len(layers) > 1 or folded >= unfolded:
        return _phases_to_image(shuffle_phases(x, factor, conv), h, w, layers)
    work = torch.promote_types(x.dtype, torch.float32)  # fold in at least fp32
    taps = _taps(last).to(work)  # (9 C_out, C)
    by_phase, by_phase_bias = _by_phase(conv, factor)
    # rows (phase, ky, kx, C_out): each phase's conv followed by the taps
    weight = torch.einsum("tc,pck->ptk", taps, by_phase.to(work).flatten(2))
    weight = weight.reshape(-1, *conv.weight.shape[1:]).to(x.dtype)
    bias = None if by_phase_bias is None else (by_phase_bias.to(work) @ taps.t()).flatten().to(x.dtype)
    planes = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation)  # (B, f^2 9 C_out, H, W)
    per_phase = planes.chunk(f2, dim=1)
    return _sum_taps([list(per_phase[i * factor : (i + 1) * factor]) for i in range(factor)], last.bias, x.dtype)


def run_layers(layers: list[nn.Module], x: Tensor) -> Tensor:
    """The layers in order, with two folds that give the same image with less work:
    - nearest upsampling commutes with the LeakyReLU after it: that runs first, on fewer
      pixels, and the upsampling folds into the next conv (`nearest_conv`);
    - a last stage that ends in a conv to a few image channels stays in phases: after nearest
      upsampling (`nearest_conv_to_image`) or a pixel shuffle (`shuffle_conv_to_image`).
    """
    i = 0
    while i < len(layers):
        layer, after = layers[i], layers[i + 1 : i + 2]
        if isinstance(layer, nn.Upsample):
            i += 1
            while isinstance(layers[i], nn.LeakyReLU):
                x, i = layers[i](x), i + 1
            conv, rest = layers[i], layers[i + 1 :]
            assert isinstance(conv, nn.Conv2d) and isinstance(layer.scale_factor, float)
            factor = int(layer.scale_factor)
            if _to_image(rest):
                return nearest_conv_to_image(x, factor, conv, rest)
            x = nearest_conv(x, factor, conv)
        elif isinstance(layer, nn.Conv2d) and layer.groups == 1 and after and isinstance(after[0], nn.PixelShuffle):
            shuffle, rest = after[0], layers[i + 2 :]
            if _to_image(rest):
                return shuffle_conv_to_image(x, shuffle.upscale_factor, layer, rest)
            x = layer(x)
        else:
            x = layer(x)
        i += 1
    return x


class UniUpsample(nn.Sequential):
    """UniUpsample V2/V3 as trained by traiNNer-redux, with its MetaUpsample buffer."""

    def __init__(self, config: FDATConfig) -> None:
        c = config
        e, out, mid, s, up = c.embed_dim, c.num_out_ch, c.mid_dim, c.upsample_scale, c.upsampler_type
        m: list[nn.Module] = []
        if s == 1 or up == "conv":
            m.append(_conv3(e, out))
        elif up == "pixelshuffledirect":
            m += [_conv3(e, out * s * s), nn.PixelShuffle(s)]
        elif up == "pixelshuffle":
            m += [_conv3(e, mid), _lrelu()]
            for f in _stages(s):
                m += [_conv3(mid, f * f * mid), nn.PixelShuffle(f)]
            m.append(_conv3(mid, out))
        elif up == "nearest+conv":
            for f in _stages(s):
                m += [_conv3(e, e), nn.Upsample(scale_factor=f), _lrelu(0.2)]
            m += [_conv3(e, e), _lrelu(0.2), _conv3(e, out)]
        elif up in ("dysample", "lda"):
            if mid != e:
                m += [_conv3(e, mid), _lrelu()]
            if up == "dysample":
                m.append(DySample(mid, out, s))
            else:
                m += [LDAUpsample(mid, s), _conv3(mid, out)]
        elif up == "transpose+conv":
            if s == 4:
                m += [nn.ConvTranspose2d(e, e, 4, 2, 1), nn.GELU(), nn.ConvTranspose2d(e, out, 4, 2, 1)]
            else:
                m.append(nn.ConvTranspose2d(e, out, 4, 2, 1) if s == 2 else nn.ConvTranspose2d(e, out, 3, 3, 0))
            m.append(_conv3(out, out))
        else:  # pa_up
            cin = e
            for f in _stages(s):
                m += [nn.Upsample(scale_factor=f), _conv3(cin, mid), PixelAttention(mid), _lrelu(0.2)]
                m += [_conv3(mid, mid), _lrelu(0.2)]
                cin = mid
            m.append(_conv3(mid, out))
        super().__init__(*m)
        self.register_buffer("MetaUpsample", torch.tensor(c.meta_upsample(), dtype=torch.uint8))

    def forward(self, x: Tensor) -> Tensor:
        return run_layers(list(self), x)


class LHANUpsample(nn.Module):
    """LHAN's own upsamplers (June 2025 trainer): pixelshuffle, nearest_conv, transpose_conv."""

    def __init__(self, config: FDATConfig) -> None:
        super().__init__()
        e, out, s, up = config.embed_dim, config.num_out_ch, config.upsample_scale, config.upsampler_type
        self.kind, self.scale = up, s
        if up == "pixelshuffle":
            self.conv_pre = _conv3(e, out * s * s)
            self.shuffle = nn.PixelShuffle(s)
            self.conv_post = _conv3(out, out)
        elif up == "nearest+conv":
            self.conv = nn.Sequential(_conv3(e, e), nn.GELU(), _conv3(e, out))
        else:
            if s == 4:
                self.up: nn.Module = nn.Sequential(
                    nn.ConvTranspose2d(e, e, 4, 2, 1), nn.GELU(), nn.ConvTranspose2d(e, out, 4, 2, 1)
                )
            elif s == 2:
                self.up = nn.ConvTranspose2d(e, out, 4, 2, 1)
            else:
                self.up = nn.ConvTranspose2d(e, out, 3, 3, 0)
            self.refine = _conv3(out, out)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "pixelshuffle":
            return self.conv_post(self.shuffle(self.conv_pre(x)))
        if self.kind == "nearest+conv":
            if self.scale > 1:
                conv = self.conv[0]
                assert isinstance(conv, nn.Conv2d)
                return nearest_conv_to_image(x, self.scale, conv, list(self.conv[1:]))
            return self.conv(x)
        return self.refine(self.up(x))


class StandaloneUpsample(nn.Module):
    """The standalone FDAT file's `Upsampler`: everything lives under `body`."""

    def __init__(self, config: FDATConfig) -> None:
        super().__init__()
        e, out, mid, s = config.embed_dim, config.num_out_ch, config.mid_dim, config.upsample_scale
        self.body: nn.Module
        if config.upsampler_type == "transpose+conv":  # x4 only
            self.body = nn.Sequential(
                nn.ConvTranspose2d(e, mid, 2, 2),
                nn.GELU(),
                nn.ConvTranspose2d(mid, mid, 2, 2),
                nn.GELU(),
                _conv3(mid, out),
            )
        elif s == 1:
            self.body = _conv3(e, out)
        elif s & (s - 1) == 0:  # no activation anywhere
            m: list[nn.Module] = [_conv3(e, mid)]
            for _ in range(int(math.log2(s))):
                m += [_conv3(mid, 4 * mid), nn.PixelShuffle(2)]
            self.body = nn.Sequential(*m, _conv3(mid, out))
        else:
            self.body = nn.Sequential(_conv3(e, out * s * s), nn.PixelShuffle(s))

    def forward(self, x: Tensor) -> Tensor:
        return run_layers(list(self.body) if isinstance(self.body, nn.Sequential) else [self.body], x)


def build_upsampler(config: FDATConfig) -> nn.Module:
    if config.layout == "uniupsample":
        return UniUpsample(config)
    if config.layout == "lhan":
        return LHANUpsample(config)
    return StandaloneUpsample(config)
