"""onnxruntime (CPU) on our exported graph against our eager PyTorch, alternating in one process.

    python bench/onnx_cpu.py [--sizes 128 512] [--rounds 3] [--threads 2] [--opset 17]
        [--post none|onnxslim|onnxsim] [--nodes-only] [--baseline OTHER.onnx]

Medium x2 (transpose+conv), its weights made distinct as a trained checkpoint's are (the exporter
merges equal initial weights into Identity nodes). Prints the graph's node count and op types,
the op types onnxruntime's graph optimisations (ORT_ENABLE_ALL) leave and which of its fusions took
hold (Gelu, LayerNormalization, FusedMatMul, FusedConv, ...), then per size the median time of
each and eager/onnxruntime (above 1: onnxruntime faster). `--post` runs onnxslim or onnxsim on
the graph first (pip install them yourself; neither is a dependency). `--nodes-only` skips timing.
`--baseline` times another graph of the same model (e.g. one exported by an older version) as a
third side, and prints baseline/ours (above 1: our graph faster in onnxruntime). `--one-band`
adds eager PyTorch with its CPU bands of rows turned off (`band_pixels = 0`), the whole image at
once as the graph computes it: how much of eager's lead is the bands' cache locality.
`--profile` prints, per size, where onnxruntime's time goes by op type (its own profiler, one run
after a warm-up) instead of timing the sides.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

import onnx
import onnxruntime as ort
import torch

from spandrel_fdat import export_onnx
from spandrel_fdat.network import FDAT, fdat_medium

FUSIONS = (
    "Gelu",
    "BiasGelu",
    "FastGelu",
    "LayerNormalization",
    "SkipLayerNormalization",
    "SimplifiedLayerNormalization",
    "FusedMatMul",
    "FusedConv",
    "FusedGemm",
    "Attention",
    "MultiHeadAttention",
)


def op_histogram(nodes: Iterable[onnx.NodeProto]) -> collections.Counter[str]:
    """Node count per op type."""
    return collections.Counter(n.op_type for n in nodes)


def describe(counts: collections.Counter[str], top: int = 14) -> str:
    return f"{sum(counts.values())} nodes: " + ", ".join(f"{k} {v}" for k, v in counts.most_common(top))


def medium_x2() -> FDAT:
    model = fdat_medium(scale=2, upsampler_type="transpose+conv").eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 1e-3)
    return model


def post_pass(path: Path, kind: str) -> Path:
    """The graph after onnxslim or onnxsim, written next to it."""
    out = path.with_suffix(f".{kind}.onnx")
    if kind == "onnxslim":
        import onnxslim

        onnx.save(onnxslim.slim(str(path)), str(out))
    else:
        import onnxsim

        model, ok = onnxsim.simplify(onnx.load(str(path)))
        assert ok, "onnxsim could not check its result"
        onnx.save(model, str(out))
    return out


def session(path: Path, threads: int, optimized: Path | None = None, profiled: bool = False) -> ort.InferenceSession:
    """An onnxruntime CPU session (ORT_ENABLE_ALL); `optimized`: where to save the graph it runs;
    `profiled`: with onnxruntime's profiler on, writing next to `path`."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    if profiled:
        options.enable_profiling = True
        options.profile_file_prefix = str(path.with_suffix(""))
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def profile(path: Path, threads: int, size: int) -> None:
    """onnxruntime's kernel time per op type for one run at size x size, after a warm-up run."""
    sess = session(path, threads, profiled=True)  # a profile ends with its session: one per size
    x = {"input": torch.rand(1, 3, size, size).numpy()}
    sess.run(None, x)
    start = time.perf_counter()
    sess.run(None, x)
    wall = time.perf_counter() - start
    per_op: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    events = json.loads(Path(sess.end_profiling()).read_text())
    last = max((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])  # the timed run
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= last["ts"]:
            per_op[e["args"]["op_name"]] += e["dur"]
            count[e["args"]["op_name"]] += 1
    total = sum(per_op.values())
    print(f"{size}x{size}: onnxruntime {wall:.3f} s, kernels {total / 1e6:.3f} s")
    print("| op type | nodes | s | share |\n|---|---|---|---|")
    for op, us in per_op.most_common(16):
        print(f"| {op} | {count[op]} | {us / 1e6:.3f} | {100 * us / total:.1f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--post", choices=["none", "onnxslim", "onnxsim"], default="none")
    parser.add_argument("--nodes-only", action="store_true")
    parser.add_argument("--baseline", type=Path, default=None)
    parser.add_argument("--one-band", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = medium_x2()
    with tempfile.TemporaryDirectory() as tmp:
        path, optimized = Path(tmp) / "m.onnx", Path(tmp) / "m.opt.onnx"
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_onnx(model, path, opset=args.opset)
        exported = time.perf_counter() - start
        counts = op_histogram(onnx.load(str(path)).graph.node)
        print(f"medium x2 transpose+conv, opset {args.opset}, exported in {exported:.1f} s: {describe(counts)}")
        if args.post != "none":
            path = post_pass(path, args.post)
            print(f"after {args.post}: {describe(op_histogram(onnx.load(str(path)).graph.node))}")
        if args.profile:
            for size in args.sizes:
                profile(path, args.threads, size)
            return
        sess = session(path, args.threads, optimized)
        fused = op_histogram(onnx.load(str(optimized)).graph.node)
        sides = {"eager": lambda x: model(x), "onnxruntime": lambda x: sess.run(None, {"input": x.numpy()})}
        if args.baseline is not None:
            print(f"baseline {args.baseline}: {describe(op_histogram(onnx.load(str(args.baseline)).graph.node))}")
            other = session(args.baseline, args.threads, Path(tmp) / "baseline.opt.onnx")
            sides["baseline"] = lambda x: other.run(None, {"input": x.numpy()})
    if args.one_band:
        whole = copy.deepcopy(model)
        whole.band_pixels = 0
        sides["eager, one band"] = lambda x: whole(x)
    print(f"after onnxruntime {ort.__version__}'s optimisations (ORT_ENABLE_ALL): {describe(fused)}")
    print("fusions:", ", ".join(f"{k} {fused[k]}" for k in FUSIONS if fused[k]) or "none")
    if args.nodes_only:
        return
    for size in args.sizes:
        x = torch.rand(1, 3, size, size)
        times: dict[str, list[float]] = {name: [] for name in sides}
        with torch.inference_mode():
            for r in range(args.rounds + 1):  # round 0 warms up
                order = list(sides) if r % 2 else list(reversed(sides))
                for name in order:
                    start = time.perf_counter()
                    sides[name](x)
                    if r:
                        times[name].append(time.perf_counter() - start)
        t = {name: statistics.median(v) for name, v in times.items()}
        e, o = t["eager"], t["onnxruntime"]
        line = f"{size}x{size}: eager {e:.3f} s, onnxruntime {o:.3f} s, eager/onnxruntime {e / o:.2f}"
        if "baseline" in t:
            line += f"; baseline graph {t['baseline']:.3f} s, baseline/ours {t['baseline'] / o:.2f}"
        if "eager, one band" in t:
            line += (
                f"; eager in one band {t['eager, one band']:.3f} s, one band/onnxruntime {t['eager, one band'] / o:.2f}"
            )
        print(line, flush=True)


if __name__ == "__main__":
    main()
