"""Where a forward of ours and of the reference spends its time, by kind of operation.

    python bench/breakdown.py                     # medium x2 at 128x128
    python bench/breakdown.py --only light --repeats 5

Each aten operation is timed around its own call (a TorchDispatchMode); the Python between
operations is printed apart, as "between them". torch.profiler is not used: on this project's
machines it made the matrix products look 1.5-2 times slower than they run (medium's qkv GEMM:
6.5 ms under the profiler, 2.9 ms timed this way, 3.1 ms alone). The two models take turns in
every round. With `MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=100000000000` neither
side faults in fresh pages (see the README), which leaves the computation alone.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections import defaultdict
from typing import Any

import torch
from benchmark import CASES, build_pair, select_cases
from torch.utils._python_dispatch import TorchDispatchMode

# The kinds of operation, in the table's order
KINDS = [
    "matrix products (Linear, channel mixing)",
    "channel attention's pixel sums (q^T k and norms, or S = y^T y)",
    "dense convolutions (group tails, conv_after, upsampler)",
    "window attention (SDPA, or its matmuls and softmax)",
    "depthwise convolutions",
    "LayerNorm",
    "GELU",
    "copies (window partition, addmm inputs, dtype)",
    "adds, gates, sums, the rest",
]


def _product_kind(a: torch.Tensor, b: torch.Tensor) -> str:
    """The kind of a matrix product a @ b by its shapes."""
    if a.dtype == torch.float64 or a.shape[-1] >= 1024:  # summed over the pixels: q^T k, S = y^T y
        return KINDS[1]
    # per window and head: both operands batched (a 2-D b is a weight, e.g. the upsampler's conv taps)
    if b.dim() > 2 and math.prod(a.shape[:-2]) > 16 and a.shape[-2] <= 256 and b.shape[-1] <= 256:
        return KINDS[3]
    return KINDS[0]


def classify(name: str, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> tuple[str, float]:
    """An operation's kind and its FLOPs (2 per multiply-add, counted for products only)."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if name == "linear":  # (..., in) @ weight (out, in)^T
        return KINDS[0], 2 * tensors[0].numel() * tensors[1].shape[0]
    if name == "einsum" and len(args[1]) == 2:  # ("ij,jk->ik", [a, b]): every index once
        sizes: dict[str, int] = {}
        for letters, operand in zip(args[0].split("->")[0].split(","), args[1], strict=True):
            sizes.update(zip(letters.strip(), operand.shape, strict=True))
        return KINDS[0], 2 * math.prod(sizes.values())
    if name in ("mm", "addmm", "addmm_", "matmul", "bmm", "baddbmm"):
        a, b = tensors[-2], tensors[-1]  # addmm/baddbmm: (input, a, b)
        return _product_kind(a, b), 2 * out.numel() * a.shape[-1]
    if name in ("conv2d", "conv_transpose2d", "convolution"):
        x, w = tensors[0], tensors[1]
        transposed = name == "conv_transpose2d" or (name == "convolution" and bool(args[6]))
        at = 8 if name == "convolution" else 6
        groups = kwargs.get("groups", args[at] if len(args) > at else 1)
        # per output value, or per input value when transposed (weight (in, out / groups, kh, kw))
        flop = 2 * (x if transposed else out).numel() * math.prod(w.shape[1:])
        if groups > 1 and w.shape[1] == 1:
            return KINDS[4], flop
        if w.shape[-1] == 1 and w.shape[-2] == 1:
            return KINDS[8], flop  # 1x1 gates and projections
        return KINDS[2], flop
    if name in ("linalg_vector_norm", "norm"):  # the reference's F.normalize of q and k over the pixels
        return KINDS[1], 0.0
    if name == "scaled_dot_product_attention":
        q, k, v = tensors[:3]
        return KINDS[3], 2 * math.prod(q.shape[:-1]) * k.shape[-2] * (q.shape[-1] + v.shape[-1])  # q k^T, attn v
    if name in ("softmax", "_softmax"):
        return KINDS[3], 0.0
    if name in ("layer_norm", "native_layer_norm"):
        return KINDS[5], 0.0
    if name in ("gelu", "gelu_"):
        return KINDS[6], 0.0
    if name in ("copy_", "clone", "contiguous", "_to_copy", "to"):
        return KINDS[7], 0.0
    return KINDS[8], 0.0


class OpTimer(TorchDispatchMode):
    """Adds up each aten operation's wall time and FLOPs by kind."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: dict[str, float] = defaultdict(float)
        self.flop: dict[str, float] = defaultdict(float)

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        elapsed = time.perf_counter() - start
        if func.overloadpacket.__name__ in ("view", "as_strided", "slice", "permute", "transpose", "t", "expand"):
            return out  # views: no work
        kind, flop = classify(func.overloadpacket.__name__, args, kwargs or {}, out)
        self.seconds[kind] += elapsed
        self.flop[kind] += flop
        return out


def breakdown(
    models: dict[str, torch.nn.Module], x: torch.Tensor, repeats: int
) -> dict[str, tuple[dict[str, float], dict[str, float], float, float]]:
    """Per model: median seconds per kind, FLOPs per kind, the median timed forward and the median
    untimed one. The models take turns in every round, so a drift of the machine's speed touches
    each alike."""
    seconds: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in models}
    flop: dict[str, dict[str, float]] = {}
    walls: dict[str, list[float]] = {name: [] for name in models}
    plain: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            model(x)
        for _ in range(repeats):
            for name, model in models.items():
                timer = OpTimer()
                start = time.perf_counter()
                with timer:
                    model(x)
                walls[name].append(time.perf_counter() - start)
                for kind in KINDS:
                    seconds[name][kind].append(timer.seconds[kind])
                flop[name] = dict(timer.flop)
            for name, model in models.items():
                start = time.perf_counter()
                model(x)
                plain[name].append(time.perf_counter() - start)
    median = statistics.median
    return {
        name: ({k: median(v) for k, v in seconds[name].items()}, flop[name], median(walls[name]), median(plain[name]))
        for name in models
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="medium", help="the benchmark config whose name contains this (default: medium)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    case = select_cases(p, [args.only])[0]
    size = CASES[case][2]
    ours, ref = build_pair(case)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    columns = breakdown({"reference": ref, "ours": ours}, x, args.repeats)
    print(f"# Where the time goes: {case} at {size}x{size}, {args.threads} threads, torch {torch.__version__}\n")
    print("| kind | reference ms | ours ms | ours share | GFLOP ref / ours | GFLOP/s ref / ours |")
    print("|---|---|---|---|---|---|")
    for kind in KINDS:
        ms, gflop, rate = [], [], []
        for name in ("reference", "ours"):
            s, gf = columns[name][0].get(kind, 0.0), columns[name][1].get(kind, 0.0) / 1e9
            ms.append(s * 1e3)
            gflop.append(f"{gf:.1f}")
            rate.append(f"{gf / s:.0f}" if gf and s else "-")
        share = columns["ours"][0].get(kind, 0.0) / columns["ours"][2]
        flops = " / ".join(gflop) if any(g != "0.0" for g in gflop) else ""
        rates = " / ".join(rate) if flops else ""
        print(f"| {kind} | {ms[0]:.1f} | {ms[1]:.1f} | {share:.0%} | {flops} | {rates} |")
    for name, (seconds, _, wall, plain) in columns.items():
        in_ops = sum(seconds.values())
        print(
            f"\n{name}: {in_ops * 1e3:.0f} ms in operations, {(wall - in_ops) * 1e3:.0f} ms between them "
            f"(timed forward {wall * 1e3:.0f} ms; untimed {plain * 1e3:.0f} ms)"
        )


if __name__ == "__main__":
    main()
