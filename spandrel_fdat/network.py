"""The FDAT network: shallow conv, residual groups of attention blocks, upsampler.

The body keeps features as (B, H, W, C) between blocks: LayerNorm and Linear
work on the last dim, and the depthwise convs see a channels-last view of the
same memory, so no layout copies are made around them.

CPU inference works through each block in bands of rows (`Band`): a band's
intermediates stay in cache and the allocator reuses them, so time per pixel does
not grow with the image. The two block parts that see the whole image (channel
attention's Gram matrix, the AIM channel gate's mean) are summed over the bands
first. Small images, graphs (tracing, export, compile), training and GPUs take
the whole image as one band.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.init import trunc_normal_

from .bands import WHOLE, Band, row_bands
from .bands import core as _core
from .bands import halo as _halo
from .bands import into as _into
from .bands import rows as _rows
from .config import PRESETS, BlockType, FDATConfig, Layout, UpsamplerType
from .errors import FDATHalfOverflowWarning
from .onnx_shapes import WindowShapes, exporting, fp32_island, reshape
from .upsamplers import build_upsampler

# Feature pixels per band in CPU inference (`python bench/benchmark.py --bands` measures others).
# Images of less than 1.5 times this many pixels are one band (measured: light x2 at 101x101 is
# faster as one band, medium x2 at 128x128 as two).
BAND_PIXELS = 8192
# Pixels per partial sum of channel attention's statistics outside the CPU (see `_statistics_from_products`).
STAT_CHUNK = 4096
# Exported graphs sum over pixels scaled (`_pixel_mean`, `ChannelAttention._statistics_exported`)
# so that no partial sum can overflow fp16, and keep LayerNorm in fp32 in fp16 graphs. True writes
# plain unscaled sums and the body's LayerNorms in the graph's own dtype instead: only
# bench/onnx_fp16.py and tests/test_export_fp16.py set it, to show the overflow that this prevents.
NAIVE_EXPORT_SUMS = False


def _tracing() -> bool:
    """True while torch.jit tracing or torch.export runs: sizes are symbolic, so pad and crop always."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting()


def _graph() -> bool:
    """True while any graph is built (tracing, export, torch.compile): the plain out-of-place forms,
    which graphs take apart faster than in-place writes through views."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def _eager_inference() -> bool:
    """No autograd and no graph: in-place and band-wise shortcuts are allowed."""
    return not torch.is_grad_enabled() and not _graph()


def _gelu(x: Tensor) -> Tensor:
    """GELU of a fresh tensor nothing else reads: in place in eager inference, which saves a
    feature-sized allocation."""
    return torch.ops.aten.gelu_(x) if _eager_inference() else F.gelu(x)


def _widened(t: Tensor) -> Tensor:
    """t in at least fp32; t itself (no Cast in a graph) if it is."""
    wide = torch.promote_types(t.dtype, torch.float32)
    return t if t.dtype == wide else t.to(wide)


def _pixel_mean(t: Tensor) -> Tensor:
    """(B, H, W, C) -> (B, 1, 1, C): the mean over pixels, written for exported graphs.

    A mean over each row, then over the rows, each of at most 3840 values scaled by 1/64 first:
    a runtime that sums them in fp16 overflows only where a row's mean exceeds 1000 (the conv
    branch of normalised features is far below), at any size up to 3840x2160; the result, a
    mean, never does. No shape arithmetic (a pixel count is no fp16 number). In a native fp16
    graph it is also an fp32 island.
    """
    if NAIVE_EXPORT_SUMS:
        return t.sum((1, 2), keepdim=True) / (t.shape[1] * t.shape[2])
    return (_widened(t) * 2**-6).mean(2, keepdim=True).mul(2**-6).mean(1, keepdim=True) * 2**12


def _nchw(x: Tensor) -> Tensor:
    """(B, H, W, C) -> a (B, C, H, W) view in channels-last memory."""
    return x.permute(0, 3, 1, 2)


def _nhwc(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1)


def _window_pairs(image: Tensor, grid: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
    """Views of the same pixels in an image (B, H, W, C) and in its windows, given in image order
    as (B, hw, ws, ww, ws, C): whole windows, then the partial ones at the bottom and right."""
    b, h, w, c = image.shape
    ws = grid.shape[2]
    fh, fw = h // ws, w // ws  # whole windows
    rh, rw = h - fh * ws, w - fw * ws  # rows/columns of the partial ones
    yield image[:, : fh * ws, : fw * ws].view(b, fh, ws, fw, ws, c), grid[:, :fh, :, :fw]
    if rh:
        yield image[:, fh * ws :, : fw * ws].view(b, rh, fw, ws, c), grid[:, fh, :rh, :fw]
    if rw:
        yield image[:, : fh * ws, fw * ws :].view(b, fh, ws, rw, c), grid[:, :fh, :, fw, :rw]
    if rh and rw:
        yield image[:, fh * ws :, fw * ws :], grid[:, fh, :rh, fw, :rw]


def _windows(x: Tensor, ws: int) -> Tensor:
    """(B, H, W, C) -> (B, hw, ww, ws, ws, C): ws x ws windows, the image zero-padded at the
    bottom/right to whole windows. Eager: one copy, the padding never materialised as an image."""
    b, h, w, c = x.shape
    pad_b, pad_r = -h % ws, -w % ws
    hw, ww = (h + pad_b) // ws, (w + pad_r) // ws
    if _graph():  # pad, then partition
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        return x.view(b, hw, ws, ww, ws, c).transpose(2, 3).contiguous()
    win = x.new_empty(b, hw, ww, ws, ws, c)
    grid = win.transpose(2, 3)  # (B, hw, ws, ww, ws, C): image order, window memory
    for pixels, place in _window_pairs(x, grid):
        place.copy_(pixels)
    if pad_b:
        grid[:, -1, ws - pad_b :].zero_()
    if pad_r:
        grid[:, :, :, -1, ws - pad_r :].zero_()
    return win


def _fused_head_pad(x: Tensor, head_dim: int) -> int:
    """Zero channels to add to each attention head so that CUDA's fused SDPA kernels take it."""
    return -head_dim % 8 if x.is_cuda and not _graph() else 0


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
        """(B, H, W, C) -> (B, H, W, C)."""
        b, h, w, c = x.shape
        grid = self._attend(x)
        return grid.reshape(b, grid.shape[1] * self.ws, grid.shape[3] * self.ws, c)[:, :h, :w]

    def add_gated(self, out: Tensor, x: Tensor, gate: Tensor, shapes: WindowShapes | None = None) -> Tensor:
        """out += self(x) * gate for out like x and a (B, 1, 1, C) gate; in eager mode read from
        the windows where they lie, with no copy back to image order. `shapes`: see `exported`."""
        if exporting():
            shapes = shapes or WindowShapes.of(_nchw(x), self.ws, self.proj.out_features)
            return out + self.exported(x, shapes) * gate
        if _tracing():  # torch's ONNX addcmul promotes an fp16 graph to fp32: written out
            return out.add_(self(x) * gate)
        if _graph():
            return out.addcmul_(self(x), gate)
        b, c = gate.shape[0], gate.shape[-1]
        for pixels, result in _window_pairs(out, self._attend(x)):
            pixels.addcmul_(result, gate.view(b, *(1,) * (result.ndim - 2), c))
        return out

    def exported(self, x: Tensor, shapes: WindowShapes) -> Tensor:
        """(B, H, W, C) -> (B, H, W, C) as ONNX export writes it: windows cut and put back with the
        forward's `shapes` (one node per reshape), attention as MatMul, Add, Softmax, MatMul."""
        ws, nh, c = self.ws, self.num_heads, self.proj.out_features
        win = reshape(shapes.pad(x), shapes.windows).transpose(1, 2)  # (B * hw, ww, ws, ws, C)
        w = self.qkv.weight
        w = torch.cat([w[:c] * self.scale, w[c:]])  # q's rows scaled: the exporter folds this
        qkv = F.linear(win, w)  # (B * hw, ww, ws, ws, 3C)
        qkv = reshape(qkv, [-1, ws * ws, 3 * nh, c // nh]).transpose(1, 2)  # (windows, 3 heads, N, hd)
        q, k, v = qkv.split(nh, dim=1)
        attn = (q @ k.transpose(-1, -2) + self.bias).softmax(-1)  # (windows, heads, N, N)
        heads = reshape((attn @ v).transpose(1, 2), shapes.grid)  # (B * hw, ww, ws, ws, C)
        out = F.linear(heads, self.proj.weight, self.proj.bias).transpose(1, 2)  # (B * hw, ws, ww, ws, C)
        return shapes.crop(reshape(out, shapes.image))

    def _attend(self, x: Tensor) -> Tensor:
        """(B, H, W, C) -> the output windows in image order, (B, hw, ws, ww, ws, C), padding included."""
        b, c = x.shape[0], x.shape[-1]
        ws, nh, hd = self.ws, self.num_heads, c // self.num_heads
        w_qkv, w_proj = self.qkv.weight, self.proj.weight
        # CUDA's fused attention kernels need a head dim that is a multiple of 8 (light's and
        # medium's are 27 and 30); zero weight rows give q, k and v zero channels that change no
        # dot product, and zero columns of proj drop them again.
        pad = _fused_head_pad(x, hd)
        if pad:
            w_qkv = F.pad(w_qkv.view(3, nh, hd, c), (0, 0, 0, pad)).view(-1, c)
            w_proj = F.pad(w_proj.view(c, nh, hd), (0, pad)).view(c, -1)
        # Each intermediate is as large as the image's features: each is dropped once used.
        win = _windows(x, ws)  # (B, hw, ww, ws, ws, C)
        hw = win.shape[1]
        # q, k, v: strided (windows, heads, ws*ws, hd + pad) views of one qkv tensor
        q, k, v = F.linear(win, w_qkv).view(-1, ws * ws, 3, nh, hd + pad).permute(2, 0, 3, 1, 4).unbind(0)
        del win
        # A mask that needs no grad, expanded to (windows, heads, N, N), takes SDPA's fused CPU
        # kernel; one that requires grad falls back to the slower math path.
        bias = self.bias if torch.is_grad_enabled() else self.bias.detach()
        mask = bias.to(q.dtype).expand(q.shape[0], -1, -1, -1)
        heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        del q, k, v
        out = F.linear(heads.transpose(1, 2).reshape(-1, ws * ws, nh * (hd + pad)), w_proj, self.proj.bias)
        del heads
        return out.view(b, hw, -1, ws, ws, c).transpose(2, 3)


class ChannelAttention(nn.Module):
    """Attention across channels (per head): L2-normalised q, k over pixels, scaled by `temp`.

    It needs two sums over all pixels (`statistics`), which band-wise inference adds up
    before it applies the attention (`attend`) band by band.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temp = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def statistics(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Over the pixels of y (B, H, W, C): q^T k per head (B, heads, hd, hd) and the squared
        norms of q's and k's channels (B, 2C), in at least fp32 (fp16 would overflow)."""
        if exporting():
            return self._statistics_exported(y)
        # fp64 runs at half the fp32 rate on CPUs, at a small fraction on consumer GPUs
        if y.device.type == "cpu" and not _tracing():  # exported graphs may run anywhere
            return self._statistics_from_moments(y)
        return self._statistics_from_products(y)

    def _statistics_exported(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """`_statistics_from_products` as ONNX export writes it: one chunk, and every reshape a
        constant (onnx_shapes.reshape; 0 keeps the batch), so no shape arithmetic.

        q and k are scaled by 2^-11 before their products, so every partial sum is at most
        N / 2^22 max|q| max|k|, under 2 max|q| max|k| for the N <= 8.3M pixels of 3840x2160 (q and
        k project normalised features: tens at most), in any precision: a graph converted to fp16
        whole (onnxconverter-common) or summed by an fp16 runtime. `mixing` divides by the norms,
        so the factor cancels. In a native fp16 graph the products are also an fp32 island.
        """
        c, nh = self.qkv.in_features, self.num_heads
        hd = c // nh
        w_qk = self.qkv.weight[: 2 * c].view(2, nh, hd, c).transpose(0, 1).reshape(2 * c, c)  # as below
        qk = F.linear(y, w_qk)  # (B, H, W, 2C)
        heads = reshape(qk, [0, -1, nh, 2 * hd]).transpose(1, 2)  # (B, heads, N, 2hd)
        if not NAIVE_EXPORT_SUMS:
            heads = _widened(heads) * 2**-11
        q, k = heads.split(hd, dim=-1)
        gram = q.transpose(-1, -2) @ k  # (B, heads, hd, hd)
        squares = heads.square().sum(2).reshape(-1, nh, 2, hd).transpose(1, 2)  # (B, qk, heads, hd)
        return gram, squares.reshape(-1, 2 * c)

    def _statistics_from_products(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """`statistics` from q and k themselves: one product per head."""
        b, c = y.shape[0], y.shape[-1]
        nh, hd = self.num_heads, c // self.num_heads
        # q's and k's weight rows reordered head by head, [q_0, k_0, q_1, k_1, ...], so that one
        # product per head, [q_h k_h]^T [q_h k_h], holds q_h^T k_h and the squared norms (its diagonal).
        w_qk = self.qkv.weight[: 2 * c].view(2, nh, hd, c).transpose(0, 1).reshape(2 * c, c)
        qk = F.linear(y.reshape(b, -1, c), w_qk)  # (B, N, 2C)
        dtype = torch.promote_types(qk.dtype, torch.float32)
        # A product over all N pixels is one long reduction that a GPU runs on a few cores: sums
        # over chunks of about STAT_CHUNK pixels run side by side, and are added after.
        n = qk.shape[1]
        chunks = 1 if _graph() else max(1, n // STAT_CHUNK)
        size = n // chunks
        main = qk[:, : chunks * size].view(b, chunks, size, nh, 2 * hd).permute(0, 3, 1, 2, 4)
        main = main.to(dtype, memory_format=torch.contiguous_format)  # (B, heads, chunks, size, 2hd)
        products = (main.transpose(-1, -2) @ main).sum(2)  # (B, heads, 2hd, 2hd)
        if chunks * size < n:  # the last n % chunks pixels
            rest = qk[:, chunks * size :].view(b, -1, nh, 2 * hd).transpose(1, 2).to(dtype)
            products += rest.transpose(-1, -2) @ rest
        # (B, heads, 2hd); exported (one chunk) as a sum of squares: torch's ONNX diagonal is
        # EyeLike, CumSum and an If per block
        diagonal = main.square().sum((2, 3)) if _tracing() else products.diagonal(dim1=-2, dim2=-1)
        squares = diagonal.reshape(b, nh, 2, hd).transpose(1, 2)  # (B, qk, heads, hd)
        return products[:, :, :hd, hd:], squares.reshape(b, 2 * c)

    def _statistics_from_moments(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """`statistics` from y's second moments S = sum(y y^T) (C, C) in fp64, q and k never
        formed: q^T k = Wq S Wk^T and |q_i|^2 = w_i S w_i^T. A third of the products' work.

        fp64, because a q or k row that nearly cancels the features (LayerNorm's output has a
        null direction) would lose its digits in an fp32 S; in fp64 they are more exact than q's own.
        """
        b, c = y.shape[0], y.shape[-1]
        nh, hd = self.num_heads, c // self.num_heads
        pixels = y.reshape(b, -1, c).double()  # (B, N, C)
        moments = pixels.transpose(1, 2) @ pixels  # (B, C, C): S
        del pixels
        w = self.qkv.weight[: 2 * c].double()  # (2C, C): q's rows, then k's
        rows = w @ moments  # (B, 2C, C)
        gram = rows[:, :c].view(b, nh, hd, c) @ w[c:].view(nh, hd, c).transpose(1, 2)  # (B, heads, hd, hd)
        return gram, (rows * w).sum(-1)

    def mixing(self, gram: Tensor, squares: Tensor) -> Tensor:
        """The (B, C, C) matrix M with proj(attn @ v) = y @ M + proj.bias.

        normalize(q)^T normalize(k) per head is the Gram matrix over the norms' outer product.
        proj(attn @ v) = v @ A @ Wp^T + b with A block-diagonal, A[h][j, i] = attn[h, i, j], and
        v = y @ Wv^T: so M = Wv^T @ A @ Wp^T, and v is never formed.
        """
        nh, c = self.num_heads, self.qkv.in_features  # not read from shapes: no shape arithmetic in graphs
        hd = c // nh
        if exporting():
            # norms scaled by 2^-11 (`_statistics_exported`), divided one at a time by a floor that
            # fp16 holds (2^-24; their product, or 1e-12, is 0 in fp16: 0/0)
            q_norms, k_norms = squares.sqrt().clamp_min(2**-24).split(c, dim=1)  # one Split, not two Slices
            gram = gram / q_norms.reshape(-1, nh, hd, 1) / k_norms.reshape(-1, nh, 1, hd)
        else:
            norms = squares.sqrt().clamp_min(1e-12)  # F.normalize's eps
            gram = gram / (norms[:, :c].reshape(-1, nh, hd, 1) * norms[:, c:].reshape(-1, nh, 1, hd))
        attn = (gram * self.temp.to(gram.dtype)).softmax(dim=-1)
        w_v, w_p = self.qkv.weight[2 * c :].to(gram.dtype), self.proj.weight.to(gram.dtype)
        heads = attn.transpose(-1, -2) @ w_p.t().view(nh, hd, c)  # (B, heads, hd, C): M's rows by head
        return (w_v.t() @ heads.reshape(-1, c, c)).to(self.qkv.weight.dtype)

    def attend(self, y: Tensor, mixing: Tensor) -> Tensor:
        """The attention output for the pixels of y (B, H, W, C)."""
        if exporting():  # (B, H, W, C) @ (B, 1, C, C): no reshapes
            return torch.matmul(y, mixing.unsqueeze(1)) + self.proj.bias
        b, h, w, c = y.shape
        if b == 1 and not _tracing():  # the batch is symbolic in exported graphs
            out = torch.addmm(self.proj.bias, y.reshape(h * w, c), mixing[0])
        else:
            out = torch.baddbmm(self.proj.bias, y.reshape(b, h * w, c), mixing)
        return out.view(b, h, w, c)

    def forward(self, y: Tensor) -> Tensor:
        return self.attend(y, self.mixing(*self.statistics(y)))


class AIM(nn.Module):
    """Adaptive interaction: gates the attention and conv branches by each other.

    A spatial block gates its attention's channels by the conv branch's mean (`channel_gate`);
    a channel block gates its conv branch's pixels by the attention (`spatial_gate`).
    """

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

    def channel_gate(self, mean: Tensor) -> Tensor:
        """(B, C) mean of the conv branch -> (B, 1, 1, C) gate (cg without its pooling)."""
        b, c = mean.shape
        return self.cg[1:](mean.view(b, c, 1, 1)).view(b, 1, 1, c)

    def channel_gate_nhwc(self, mean: Tensor) -> Tensor:
        """(B, 1, 1, C) mean -> (B, 1, 1, C) gate: the 1x1 convs as linears on the last dim
        (exported graphs: no reshape, no transpose)."""
        reduce, expand = self.cg[1], self.cg[3]
        assert isinstance(reduce, nn.Conv2d) and isinstance(expand, nn.Conv2d)
        hidden = self.cg[2](F.linear(mean, reduce.weight.view(reduce.out_channels, -1)))
        return self.cg[4](F.linear(hidden, expand.weight.view(expand.out_channels, -1)))

    def spatial_gate(self, attn: Tensor) -> Tensor:
        """(B, H, W, C) attention output -> (B, H, W, 1) gate."""
        if exporting():  # the 1x1 conv as a linear: no transposes
            conv = self.sg[0]
            assert isinstance(conv, nn.Conv2d)
            return self.sg[1](F.linear(attn, conv.weight.view(1, -1)))
        return _nhwc(self.sg(_nchw(attn)))


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm over channels; in an exported fp16 (or bf16) graph, an explicit fp32 island.

    The residual stream it normalises grows to hundreds in trained models: the squares summed
    for the variance overflow fp16 once |x - mean| passes 256. ONNX's LayerNormalization (opset
    17 on) asks for fp32 moments (stash_type), but not every runtime obeys (DirectML did not),
    and below opset 17 it is written out as Pow and ReduceMean; Casts around it hold in every
    runtime and in TensorRT's strongly typed mode.
    """

    def forward(self, x: Tensor) -> Tensor:
        if fp32_island(x) and not NAIVE_EXPORT_SUMS:
            weight, bias = self.weight.float(), self.bias.float()
            return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)
        return super().forward(x)


class FFN(nn.Module):
    """Linear -> GELU -> depthwise 3x3 mixing -> Linear, no biases."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=False)
        self.smix = nn.Conv2d(hidden_dim, hidden_dim, 3, 1, 1, groups=hidden_dim, bias=False)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: Tensor, norm: nn.Module, bands: Sequence[Band] = WHOLE, out: Tensor | None = None) -> Tensor:
        """x + FFN(norm(x)), the addition done inside the fc2 GEMM; into `out` band by band if given.
        In one-band inference without `out`, x itself (the block's own intermediate) is overwritten.

        Taking `norm` rather than its output lets the normalised rows go as soon as fc1 has read them.
        """
        if exporting():  # no reshapes: the linears take (B, H, W, C) as they are
            hidden = _nhwc(self.smix(_nchw(F.gelu(self.fc1(norm(x))))))
            return x + self.fc2(hidden)
        c = x.shape[-1]
        in_place = out is None and len(bands) == 1 and _eager_inference()
        for band in bands:
            hidden = _gelu(self.fc1(norm(_halo(x, band))))
            hidden = _core(_nhwc(self.smix(_nchw(hidden))), band)
            rows, dst = _rows(x, band).reshape(-1, c), _into(out, band)
            hidden = hidden.reshape(-1, hidden.shape[-1])
            if in_place:
                flat = rows.addmm_(hidden, self.fc2.weight.t())
            else:
                flat = torch.addmm(rows, hidden, self.fc2.weight.t(), out=None if dst is None else dst.view(-1, c))
        return flat.view(x.shape) if out is None else out


class FDATBlock(nn.Module):
    def __init__(self, config: FDATConfig, block_type: BlockType) -> None:
        super().__init__()
        e = config.embed_dim
        self.block_type = block_type
        eps = config.layer_norm_eps
        self.n1 = LayerNorm(e, eps=eps)
        self.n2 = LayerNorm(e, eps=eps)
        self.attn: nn.Module = (
            SpatialWindowAttention(e, config.window_size, config.num_heads)
            if block_type == "spatial"
            else ChannelAttention(e, config.num_heads)
        )
        self.conv = nn.Sequential(nn.Conv2d(e, e, 3, 1, 1, groups=e, bias=False), nn.GELU())
        self.inter = AIM(e, config.aim_dim)
        self.ffn = FFN(e, config.ffn_hidden_dim)

    def forward(
        self,
        x: Tensor,
        bands: Sequence[Band] = WHOLE,
        mid: Tensor | None = None,
        out: Tensor | None = None,
        shapes: WindowShapes | None = None,
    ) -> Tensor:
        """(B, H, W, C) -> (B, H, W, C). With several bands, batch 1 and buffers `mid`, `out` like x
        (`mid` not x; `out` may be x): computed band by band into them, and `out` returned.
        `shapes`: the window shapes of x, computed once per forward in ONNX export."""
        spatial = self.block_type == "spatial"
        mixed = self._spatial(x, bands, mid, shapes) if spatial else self._channel(x, bands, mid)
        return self.ffn(mixed, self.n2, bands, out)

    def _conv_branch(self, y: Tensor, band: Band) -> Tensor:
        """GELU(depthwise conv) of the band's normalised halo rows, for its output rows."""
        return _gelu(_core(_nhwc(self.conv[0](_nchw(y))), band))  # conv[1] is that GELU

    def _spatial(self, x: Tensor, bands: Sequence[Band], mid: Tensor | None, shapes: WindowShapes | None) -> Tensor:
        """x + conv + attn * channel_gate(mean(conv)): the gate needs every band's conv first."""
        attention = self.attn
        assert isinstance(attention, SpatialWindowAttention)
        if exporting():  # one band; the mean read from the graph, not from traced sizes
            y = self.n1(x)
            conv = self._conv_branch(y, WHOLE[0])
            mean = _pixel_mean(conv)
            gate = self.inter.channel_gate_nhwc(mean if mean.dtype == x.dtype else mean.to(x.dtype))
            return attention.add_gated(x + conv, y, gate, shapes)
        b, h, w, c = x.shape
        whole = self.n1(x) if len(bands) == 1 else None  # one band: normalised once, used twice
        parts, total = [], x.new_zeros(b, c, dtype=torch.promote_types(x.dtype, torch.float32))
        for band in bands:
            conv = self._conv_branch(whole if whole is not None else self.n1(_halo(x, band)), band)
            total += conv.sum((1, 2), dtype=total.dtype)  # a sum over many pixels overflows fp16
            rows = _rows(x, band)
            parts.append(conv.add_(rows) if mid is None else torch.add(rows, conv, out=_rows(mid, band)))
            del conv
        gate = self.inter.channel_gate((total / (h * w)).to(x.dtype))
        for band, part in zip(bands, parts, strict=True):
            attention.add_gated(part, whole if whole is not None else self.n1(_rows(x, band)), gate)
        return parts[0] if mid is None else mid

    def _channel(self, x: Tensor, bands: Sequence[Band], mid: Tensor | None) -> Tensor:
        """x + attn + conv * spatial_gate(attn): the attention needs every band's statistics first."""
        attention = self.attn
        assert isinstance(attention, ChannelAttention)
        whole = self.n1(x) if len(bands) == 1 else None  # one band: normalised once, used twice
        gram, squares = attention.statistics(whole if whole is not None else self.n1(_rows(x, bands[0])))
        for band in bands[1:]:
            g, s = attention.statistics(self.n1(_rows(x, band)))
            gram, squares = gram + g, squares + s
        mixing = attention.mixing(gram, squares)
        for band in bands:
            y = whole if whole is not None else self.n1(_halo(x, band))
            attn = attention.attend(_core(y, band), mixing)
            part = torch.add(_rows(x, band), attn, out=_into(mid, band))
            if _tracing():  # torch's ONNX addcmul promotes an fp16 graph to fp32: written out
                part.add_(self._conv_branch(y, band) * self.inter.spatial_gate(attn))
            else:
                part.addcmul_(self._conv_branch(y, band), self.inter.spatial_gate(attn))
        return part if mid is None else mid


class ResidualGroup(nn.Module):
    def __init__(self, config: FDATConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([FDATBlock(config, config.block_type(i)) for i in range(config.blocks_per_group)])
        e = config.embed_dim
        self.conv = nn.Conv2d(e, e, 3, 1, 1, bias=False)

    def forward(
        self,
        x: Tensor,
        bands: Sequence[Band] = WHOLE,
        buffers: tuple[Tensor, Tensor] | None = None,
        shapes: WindowShapes | None = None,
    ) -> Tensor:
        """(B, C, H, W) in channels-last memory -> the same. With several bands, `buffers` are two
        (B, H, W, C) tensors like `_nhwc(x)` that the blocks write through. `shapes`: see FDATBlock."""
        t = _nhwc(x)
        mid, out = (None, None) if buffers is None else buffers
        for block in self.blocks:
            t = block(t, bands, mid, out, shapes)  # from the second block on, t is out
        return self.conv(_nchw(t)).add_(x)


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

    `band_pixels`: CPU inference without grad runs the body in bands of about this
    many feature pixels (see `Band`); 0 runs every image as one band. Results agree
    to float rounding either way.
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
        self.band_pixels = BAND_PIXELS
        self._warned_overflow = False
        self.apply(_init_weights)

    @classmethod
    def from_config(cls, config: FDATConfig) -> FDAT:
        return cls(**config.to_kwargs())

    def forward(self, x: Tensor) -> Tensor:
        c = self.config
        if x.ndim != 4 or x.shape[1] != c.num_in_ch or 0 in x.shape:
            raise ValueError(f"FDAT expects a (batch, {c.num_in_ch}, height, width) image tensor, got {list(x.shape)}")
        out = self._forward(x)
        if x.dtype == torch.float16 and not _graph() and not bool(torch.isfinite(out).all()):
            return self._recompute_overflow(x, out)
        return out

    def _recompute_overflow(self, x: Tensor, out: Tensor) -> Tensor:
        """An fp16 forward that gave inf or NaN from finite input overflowed fp16's range (65504):
        run it again in bf16 (fp32's range) where the device has it, else fp32, and warn once."""
        if not bool(torch.isfinite(x).all()):
            return out  # NaN in, NaN out: not an overflow
        safe = torch.bfloat16 if x.is_cuda and torch.cuda.is_bf16_supported() else torch.float32
        if not self._warned_overflow:
            self._warned_overflow = True
            warnings.warn(
                f"FDAT: the fp16 forward overflowed (inf/NaN in the output); recomputed in "
                f"{str(safe).removeprefix('torch.')}. Run this model in bf16 or fp32 to skip the fp16 try",
                FDATHalfOverflowWarning,
                stacklevel=3,
            )
        tensors = {k: t.to(safe) if t.is_floating_point() else t for k, t in self.state_dict(keep_vars=True).items()}
        return torch.func.functional_call(self, tensors, (x.to(safe),)).to(x.dtype)

    def _forward(self, x: Tensor) -> Tensor:
        c = self.config
        h, w = x.shape[-2:]
        bands = self.bands_for(x)
        if len(bands) > 1 and x.shape[0] > 1:  # bands hold one image
            return torch.cat([self(image) for image in x.split(1)])
        if c.layout == "lhan":
            x = x * c.img_range
        if c.unshuffle_mod:
            x = _pad_to_multiple(x, c.unshuffle_factor)
        x = x.contiguous(memory_format=torch.channels_last)
        shallow = self.conv_first(x)
        deep, buffers = shallow, None
        if len(bands) > 1:  # allocated once: a fresh large tensor is fresh pages to fault in
            buffers = (torch.empty_like(_nhwc(shallow)), torch.empty_like(_nhwc(shallow)))
        # ONNX export: the window shapes once for every block (see onnx_shapes)
        shapes = WindowShapes.of(shallow, c.window_size, c.embed_dim) if exporting() else None
        for group in self.groups:
            deep = group(deep, bands, buffers, shapes)
        del buffers
        out = self.upsampler(self.conv_after(deep).add_(shallow))  # conv_after's output is ours to write
        if c.unshuffle_mod:
            out = out[..., : h * c.scale, : w * c.scale]
        if c.layout == "lhan":
            out = out / c.img_range
        return out.contiguous()

    def bands_for(self, x: Tensor) -> tuple[Band, ...]:
        """The body's bands for input x: several only for CPU inference of large images, outside graphs."""
        if not self.band_pixels or x.device.type != "cpu" or not _eager_inference():
            return WHOLE
        u = self.config.unshuffle_factor if self.config.unshuffle_mod else 1
        h, w = -(-x.shape[-2] // u), -(-x.shape[-1] // u)  # the features' size
        return row_bands(h, w, self.config.window_size, self.band_pixels)


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
