"""fp16 ONNX graphs at large sizes: plain ("naive") sums over pixels against ours, run in onnxruntime.

    python bench/onnx_fp16.py [--sizes 256x256 960x540] [--preset light] [--graphs ...] [--rounds N]
                              [--threads 2] [--out bench/results/onnx_fp16.md]

FDAT light x2 (pixelshuffle) with seeded weights of a trained network's scale, then made "hot":
LayerNorm weights x16 and the conv branch x4 (large normalised features, so large sums over
pixels) and the residual stream x300 (the upsampler's first conv scaled back). Four graphs,
each run by onnxruntime on the CPU at every size:

- fp32: our fp32 graph (the reference is eager fp32 PyTorch);
- naive fp16: `export_onnx(dtype="fp16")` with `network.NAIVE_EXPORT_SUMS` (sums over pixels
  in fp16, unscaled; LayerNorm in fp16) - what a plain fp16 graph does;
- ours fp16: `export_onnx(dtype="fp16")`;
- converted: onnxconverter-common's `convert_float_to_float16(keep_io_types=True)` of our fp32
  graph (skipped when the package is missing).

Per size it prints the fp32 activations (largest |x| into a LayerNorm, largest fp32 sum over
pixels: the AIM conv branch's and channel attention's squared norms), and per graph the inf/NaN
count in its reductions' outputs and in its output, and PSNR against eager fp32 (clamped to [0, 1]).
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from spandrel_fdat import FDAT, export_onnx
from spandrel_fdat import network as net
from spandrel_fdat.config import PRESETS
from spandrel_fdat.network import ChannelAttention, FDATBlock

FP16_MAX = 65504.0
GRAPHS = ("fp32", "naive fp16", "ours fp16", "converted")


def hot_model(preset: str = "light", seed: int = 0) -> FDAT:
    """`preset` x2 with weights of a trained network's scale (std 1/sqrt(fan_in), LayerNorm weights
    near 1), then with large normalised features and a large residual stream."""
    model = FDAT(**PRESETS[preset], scale=2, upsampler_type="pixelshuffle").eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith((".n1.weight", ".n2.weight")):
                p.copy_(1 + 0.1 * noise)
            elif name.endswith("attn.temp"):
                p.copy_(1 + 0.2 * noise.abs())
            elif p.ndim >= 2 and not name.endswith("attn.bias"):
                p.copy_(noise / math.sqrt(math.prod(p.shape[1:])))
            else:
                p.copy_(0.05 * noise)
        for block in model.modules():
            if isinstance(block, FDATBlock):
                block.n1.weight.mul_(16)
                block.get_parameter("conv.0.weight").mul_(4)
        model.get_parameter("conv_first.weight").mul_(300)
        model.get_parameter("conv_first.bias").mul_(300)
        next(m for m in model.upsampler.modules() if isinstance(m, torch.nn.Conv2d)).weight.div_(300)
    return model


def fp32_figures(model: FDAT, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Eager fp32 output and the largest |LayerNorm input| and fp32 sums over pixels."""
    found = {"max |x| into LayerNorm": 0.0, "max AIM sum": 0.0, "max squared-norm sum": 0.0}
    pixels = x.shape[-2] * x.shape[-1]
    undo: list[Callable[[], None]] = []

    def keep(key: str, value: float) -> None:
        found[key] = max(found[key], value)

    for block in model.modules():
        if not isinstance(block, FDATBlock):
            continue
        for norm in (block.n1, block.n2):
            handle = norm.register_forward_pre_hook(
                lambda _m, a: keep("max |x| into LayerNorm", float(a[0].abs().max()))
            )
            undo.append(handle.remove)
        if isinstance(block.attn, ChannelAttention):
            stats, totals = block.attn.statistics, [torch.zeros(())]

            def spy_stats(y: torch.Tensor, stats: Any = stats, totals: list[torch.Tensor] = totals) -> Any:
                gram, squares = stats(y)  # of one band of rows: added up over the bands
                totals[0] = totals[0] + squares
                keep("max squared-norm sum", float(totals[0].max()))
                return gram, squares

            block.attn.statistics = spy_stats  # type: ignore[method-assign]
            undo.append(functools.partial(delattr, block.attn, "statistics"))
        else:
            gate = block.inter.channel_gate

            def spy_gate(mean: torch.Tensor, gate: Any = gate) -> Any:
                keep("max AIM sum", float(mean.abs().max()) * pixels)
                return gate(mean)

            block.inter.channel_gate = spy_gate  # type: ignore[method-assign]
            undo.append(functools.partial(delattr, block.inter, "channel_gate"))
    with torch.inference_mode():
        out = model(x)
    for step in undo:
        step()
    return out, found


def session(graph: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    """The graph with its reductions' outputs added as graph outputs."""
    names = [n.output[0] for n in graph.graph.node if n.op_type in ("ReduceSum", "ReduceMean")]
    graph.graph.output.extend([onnx.ValueInfoProto(name=name) for name in names])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = False  # else each session keeps its largest run's memory: 4 at 1920x1080 pass 24 GiB
    return ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])


def nonfinite(arrays: list[np.ndarray]) -> int:
    return sum(int((~np.isfinite(a.astype(np.float32))).sum()) for a in arrays)


def psnr(out: np.ndarray, ref: np.ndarray) -> float:
    mse = float(np.mean((np.clip(np.nan_to_num(out, nan=0.0), 0, 1) - np.clip(ref, 0, 1)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(1 / mse)


def graphs(model: FDAT, tmp: Path) -> dict[str, onnx.ModelProto]:
    found: dict[str, onnx.ModelProto] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found["fp32"] = onnx.load(str(export_onnx(model, tmp / "fp32.onnx")))
        net.NAIVE_EXPORT_SUMS = True
        try:
            found["naive fp16"] = onnx.load(str(export_onnx(model, tmp / "naive.onnx", dtype="fp16")))
        finally:
            net.NAIVE_EXPORT_SUMS = False
        found["ours fp16"] = onnx.load(str(export_onnx(model, tmp / "ours.onnx", dtype="fp16")))
        try:
            from onnxconverter_common import float16
        except ImportError:
            print("onnxconverter-common is not installed: the converted graph is skipped")
        else:
            found["converted"] = float16.convert_float_to_float16(onnx.load(str(tmp / "fp32.onnx")), keep_io_types=True)
    return found


def timing(sessions: dict[str, ort.InferenceSession], x: np.ndarray, rounds: int, label: str) -> str:
    """Median time of each graph over `rounds` rounds, the graphs alternating within each round
    (robust to a loaded machine), as ratios to the naive fp16 graph's."""
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, sess in sessions.items():
            start = time.perf_counter()
            sess.run(None, {"input": x})
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = medians.get("naive fp16", next(iter(medians.values())))
    text = ", ".join(f"{name} {m:.2f} s ({m / base:.2f}x)" for name, m in medians.items())
    print(f"  median of {rounds} alternating rounds at {label}: {text}")
    return f"\nMedian of {rounds} alternating rounds at {label} (ratio to naive fp16): {text}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["256x256", "960x540"], help="WIDTHxHEIGHT inputs")
    parser.add_argument("--preset", default="light", choices=sorted(PRESETS), help="FDAT size (x2 pixelshuffle)")
    parser.add_argument("--graphs", nargs="+", default=list(GRAPHS), choices=GRAPHS, help="which graphs to run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=0, help="also time the graphs, alternating, this many rounds")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = hot_model(args.preset)
    print(f"FDAT {args.preset} x2 pixelshuffle, hot weights; onnxruntime {ort.__version__} CPU, {args.threads} threads")
    lines = [
        "| input (WxH) | max \\|x\\| into LayerNorm | max AIM sum | max squared-norm sum | graph | inf/NaN in sums | inf/NaN in output | PSNR vs fp32 (dB) | run (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        built = {k: v for k, v in graphs(model, Path(tmp)).items() if k in args.graphs}
        sessions = {name: session(graph, args.threads) for name, graph in built.items()}
        for size in args.sizes:
            w, h = (int(v) for v in size.lower().split("x"))
            x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1))
            ref, figures = fp32_figures(model, x)
            ref_np = ref.numpy()
            print(f"{w}x{h}: " + ", ".join(f"{k} {v:.4g}" for k, v in figures.items()) + f" (fp16 max {FP16_MAX:g})")
            first = True
            for name, sess in sessions.items():
                start = time.perf_counter()
                out, *sums = sess.run(None, {"input": x.numpy()})
                seconds = time.perf_counter() - start
                row = (nonfinite(sums), nonfinite([out]), psnr(out.astype(np.float32), ref_np))
                print(
                    f"  {name:>10}: inf/NaN in sums {row[0]}, in output {row[1]}, PSNR {row[2]:.2f} dB ({seconds:.1f} s)"
                )
                cells = [f"{v:.4g}" for v in figures.values()] if first else ["", "", ""]
                label = f"{w}x{h}" if first else ""
                lines.append(
                    f"| {label} | {' | '.join(cells)} | {name} | {row[0]} | {row[1]} | {row[2]:.2f} | {seconds:.1f} |"
                )
                first = False
            if args.rounds:
                lines.append(timing(sessions, x.numpy(), args.rounds, f"{w}x{h}"))
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
