"""The FDAT network: shallow conv, residual groups of attention blocks, upsampler.

The body keeps features as (B, H, W, C) between blocks: LayerNorm and Linear
work on the last dim, and the depthwise convs see a channels-last view of the
same memory, so no layout copies are made around them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.init import trunc_normal_

from .config import PRESETS, BlockType, FDATConfig, Layout, UpsamplerType
from .upsamplers import build_upsampler


def _tracing() -> bool:
    """True while torch.jit tracing or torch.export runs: sizes are symbolic, so pad and crop always."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting()


def _nchw(x: Tensor) -> Tensor:
    """(B, H, W, C) -> a (B, C, H, W) view in channels-last memory."""
    return x.permute(0, 3, 1, 2)


def _nhwc(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1)


class SpatialWindowAttention(nn.Module):
    """Multi-head self-attention in non-overlapping ws x ws windows, with a learned bias per head."""

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.ws, self.num_heads = window_size, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        n = window_size * window_size
        self.bias = nn.Parameter(torch.zeros(num_heads, n, n))

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        ws, nh = self.ws, self.num_heads
        pad_b, pad_r = -h % ws, -w % ws
        padded = bool(pad_b or pad_r) or _tracing()
        if padded:  # zero padding at the bottom/right
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hw, ww = (h + pad_b) // ws, (w + pad_r) // ws
        # Each intermediate is as large as the image's features: each is dropped once used.
        # (B, H, W, C) -> windows (B*hw*ww, ws*ws, C)
        win = x.view(b, hw, ws, ww, ws, c).transpose(2, 3).reshape(-1, ws * ws, c)
        # q, k, v: strided (windows, heads, ws*ws, C/heads) views of one qkv tensor
        q, k, v = self.qkv(win).view(-1, ws * ws, 3, nh, c // nh).permute(2, 0, 3, 1, 4).unbind(0)
        del win
        # A mask that needs no grad, expanded to (windows, heads, N, N), takes SDPA's fused CPU
        # kernel; one that requires grad falls back to the slower math path.
        bias = self.bias if torch.is_grad_enabled() else self.bias.detach()
        mask = bias.to(q.dtype).expand(q.shape[0], -1, -1, -1)
        heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        del q, k, v
        merged = heads.transpose(1, 2).reshape(-1, ws * ws, c)  # (windows, ws*ws, C)
        del heads
        out = self.proj(merged)
        del merged
        out = out.view(b, hw, ww, ws, ws, c).transpose(2, 3).reshape(b, hw * ws, ww * ws, c)
        return out[:, :h, :w] if padded else out


class ChannelAttention(nn.Module):
    """Attention across channels (per head): L2-normalised q, k over pixels, scaled by `temp`."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temp = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        nh, hd = self.num_heads, c // self.num_heads
        pixels = x.reshape(b, h * w, c)
        w_qk, w_v = self.qkv.weight.split(2 * c)  # v is never formed: see `mixed` below
        qk = F.linear(pixels, w_qk)  # (B, HW, 2C)
        q, k = qk.split(c, dim=-1)  # strided (B, HW, C) views
        # normalize(q)^T normalize(k) per head = the Gram matrix over the norms' outer product
        norms = torch.linalg.vector_norm(qk, dim=1, keepdim=True).clamp_min(1e-12)  # F.normalize's eps
        if q.dtype == torch.float16:  # an unnormalised Gram matrix over many pixels overflows fp16
            q, k = q / norms[..., :c], k / norms[..., c:]
        qt = q.view(b, h * w, nh, hd).permute(0, 2, 3, 1)  # (B, heads, hd, HW)
        gram = qt @ k.view(b, h * w, nh, hd).transpose(1, 2)  # (B, heads, hd, hd)
        del qk, q, k, qt
        if gram.dtype != torch.float16:
            gram = gram / (norms[..., :c].view(b, nh, hd, 1) * norms[..., c:].view(b, nh, 1, hd))
        attn = (gram * self.temp).softmax(dim=-1)
        # proj(attn @ v) = v @ M + b with M = A @ Wp^T, A block-diagonal with A[h][j, i] = attn[h, i, j]:
        # M's rows of head h are attn[h]^T @ (Wp^T rows of head h). With v = x @ Wv^T,
        # that is x @ (Wv^T @ M) + b: one (HW, C) x (C, C) GEMM, and no v.
        mixed = w_v.t() @ (attn.transpose(-1, -2) @ self.proj.weight.t().view(nh, hd, c)).reshape(b, c, c)
        if b == 1 and not _tracing():  # the batch is symbolic in exported graphs
            out = torch.addmm(self.proj.bias, pixels[0], mixed[0]).unsqueeze(0)
        else:
            out = torch.baddbmm(self.proj.bias, pixels, mixed)
        return out.view(b, h, w, c)


class AIM(nn.Module):
    """Adaptive interaction: gates the attention and conv branches by each other."""

    def __init__(self, dim: int, reduced_dim: int) -> None:
        super().__init__()
        self.sg = nn.Sequential(nn.Conv2d(dim, 1, 1, bias=False), nn.Sigmoid())
        self.cg = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(dim, reduced_dim, 1, bias=False),
            nn.GELU(),
            nn.Conv2d(reduced_dim, dim, 1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, attn: Tensor, conv: Tensor, block_type: BlockType) -> Tensor:
        if block_type == "spatial":  # the conv branch gates the channels of the attention
            return torch.addcmul(conv, attn, _nhwc(self.cg(_nchw(conv))))
        return torch.addcmul(attn, conv, _nhwc(self.sg(_nchw(attn))))  # the attention gates the conv pixels


class FFN(nn.Module):
    """Linear -> GELU -> depthwise 3x3 mixing -> Linear, no biases."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=False)
        self.smix = nn.Conv2d(hidden_dim, hidden_dim, 3, 1, 1, groups=hidden_dim, bias=False)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: Tensor, norm: nn.Module) -> Tensor:
        """x + FFN(norm(x)), the addition done inside the fc2 GEMM.

        Taking `norm` rather than its output lets the normalised copy go as soon as fc1 has read it.
        """
        hidden = F.gelu(self.fc1(norm(x)))
        hidden = _nhwc(self.smix(_nchw(hidden)))
        flat = torch.addmm(x.reshape(-1, x.shape[-1]), hidden.reshape(-1, hidden.shape[-1]), self.fc2.weight.t())
        return flat.view(x.shape)


class FDATBlock(nn.Module):
    def __init__(self, config: FDATConfig, block_type: BlockType) -> None:
        super().__init__()
        e = config.embed_dim
        self.block_type = block_type
        eps = config.layer_norm_eps
        self.n1 = nn.LayerNorm(e, eps=eps)
        self.n2 = nn.LayerNorm(e, eps=eps)
        self.attn: nn.Module = (
            SpatialWindowAttention(e, config.window_size, config.num_heads)
            if block_type == "spatial"
            else ChannelAttention(e, config.num_heads)
        )
        self.conv = nn.Sequential(nn.Conv2d(e, e, 3, 1, 1, groups=e, bias=False), nn.GELU())
        self.inter = AIM(e, config.aim_dim)
        self.ffn = FFN(e, config.ffn_hidden_dim)

    def forward(self, x: Tensor) -> Tensor:  # (B, H, W, C)
        y = self.n1(x)
        x = x + self.inter(self.attn(y), _nhwc(self.conv(_nchw(y))), self.block_type)
        del y  # as large as x: gone before the FFN's peak
        return self.ffn(x, norm=self.n2)


class ResidualGroup(nn.Module):
    def __init__(self, config: FDATConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([FDATBlock(config, config.block_type(i)) for i in range(config.blocks_per_group)])
        e = config.embed_dim
        self.conv = nn.Conv2d(e, e, 3, 1, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W), channels-last memory
        t = _nhwc(x)
        for block in self.blocks:
            t = block(t)
        return self.conv(_nchw(t)) + x


def _pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Reflect-pad bottom/right to a multiple; replicate what reflect cannot reach (tiny inputs)."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if _tracing():  # exported graphs: reflect only (inputs of at least `multiple` pixels)
        return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
    if not (pad_h or pad_w):
        return x
    rh, rw = min(pad_h, h - 1), min(pad_w, w - 1)
    if rh or rw:
        x = F.pad(x, (0, rw, 0, rh), mode="reflect")
    if pad_h > rh or pad_w > rw:
        x = F.pad(x, (0, pad_w - rw, 0, pad_h - rh), mode="replicate")
    return x


class FDAT(nn.Module):
    """FDAT ("Fast DAT") image super-resolution network, inference-exact for every known layout.

    Keyword arguments are those of spandrel 0.4.2's FDAT plus `layout`,
    `meta_version` and `norm_eps` (see `FDATConfig`). `drop_path_rate` is
    accepted for compatibility and ignored: this module is for inference.
    """

    def __init__(
        self,
        *,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        embed_dim: int = 120,
        num_groups: int = 4,
        depth_per_group: int = 3,
        num_heads: int = 4,
        window_size: int = 8,
        ffn_expansion_ratio: float = 2.0,
        aim_reduction_ratio: int = 8,
        group_block_pattern: list[str] | tuple[str, ...] | None = None,
        drop_path_rate: float = 0.0,
        mid_dim: int = 64,
        upsampler_type: UpsamplerType = "transpose+conv",
        img_range: float = 1.0,
        unshuffle_mod: bool = False,
        layout: Layout = "uniupsample",
        meta_version: int = 3,
        norm_eps: float | None = None,
    ) -> None:
        super().__init__()
        del drop_path_rate  # training only
        pattern = tuple(group_block_pattern or ("spatial", "channel"))
        config = FDATConfig(
            num_in_ch=num_in_ch,
            num_out_ch=num_out_ch,
            scale=scale,
            embed_dim=embed_dim,
            num_groups=num_groups,
            depth_per_group=depth_per_group,
            num_heads=num_heads,
            window_size=window_size,
            ffn_expansion_ratio=ffn_expansion_ratio,
            aim_reduction_ratio=aim_reduction_ratio,
            group_block_pattern=pattern,  # type: ignore[arg-type]  # checked by FDATConfig
            mid_dim=mid_dim,
            upsampler_type=upsampler_type,
            img_range=img_range,
            unshuffle_mod=unshuffle_mod,
            layout=layout,
            meta_version=meta_version,
            norm_eps=norm_eps,
        )
        self.config = config
        self.hyperparameters: dict[str, Any] = config.to_kwargs()
        e, u = config.embed_dim, config.unshuffle_factor
        if config.unshuffle_mod:
            self.conv_first: nn.Module = nn.Sequential(
                nn.PixelUnshuffle(u), nn.Conv2d(config.num_in_ch * u * u, e, 3, 1, 1)
            )
        else:
            self.conv_first = nn.Conv2d(config.num_in_ch, e, 3, 1, 1)
        self.groups = nn.Sequential(*[ResidualGroup(config) for _ in range(config.num_groups)])
        self.conv_after = nn.Conv2d(e, e, 3, 1, 1, bias=False)
        self.upsampler = build_upsampler(config)
        self.apply(_init_weights)

    @classmethod
    def from_config(cls, config: FDATConfig) -> FDAT:
        return cls(**config.to_kwargs())

    def forward(self, x: Tensor) -> Tensor:
        c = self.config
        if x.ndim != 4 or x.shape[1] != c.num_in_ch or 0 in x.shape:
            raise ValueError(f"FDAT expects a (batch, {c.num_in_ch}, height, width) image tensor, got {list(x.shape)}")
        h, w = x.shape[-2:]
        if c.layout == "lhan":
            x = x * c.img_range
        if c.unshuffle_mod:
            x = _pad_to_multiple(x, c.unshuffle_factor)
        x = x.contiguous(memory_format=torch.channels_last)
        shallow = self.conv_first(x)
        deep = self.conv_after(self.groups(shallow))
        out = self.upsampler(deep + shallow)
        if c.unshuffle_mod:
            out = out[..., : h * c.scale, : w * c.scale]
        if c.layout == "lhan":
            out = out / c.img_range
        return out.contiguous()


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, SpatialWindowAttention):
        trunc_normal_(m.bias, std=0.02)


def _preset(name: str, overrides: dict[str, Any]) -> FDAT:
    return FDAT(**{**PRESETS[name], **overrides})


def fdat_tiny(**overrides: Any) -> FDAT:
    return _preset("tiny", overrides)


def fdat_light(**overrides: Any) -> FDAT:
    return _preset("light", overrides)


def fdat_medium(**overrides: Any) -> FDAT:
    return _preset("medium", overrides)


def fdat_medium_aligned(**overrides: Any) -> FDAT:
    return _preset("medium_aligned", overrides)


def fdat_large(**overrides: Any) -> FDAT:
    return _preset("large", overrides)


def fdat_xl(**overrides: Any) -> FDAT:
    return _preset("xl", overrides)
