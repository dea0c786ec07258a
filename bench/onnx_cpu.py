"""onnxruntime (CPU) on our exported graph against our eager PyTorch, alternating in one process.

    python bench/onnx_cpu.py [--sizes 128 512] [--rounds 3] [--threads 2]

Medium x2 (transpose+conv). Prints the graph's node count and the op types onnxruntime's graph
optimisations leave (fusions such as Gelu, LayerNormalization, FusedMatMul show up there), then
per size the median time of each and eager/onnxruntime (above 1: onnxruntime faster).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import onnx
import onnxruntime as ort
import torch

from spandrel_fdat import export_onnx
from spandrel_fdat.network import fdat_medium


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = fdat_medium(scale=2, upsampler_type="transpose+conv").eval()
    with tempfile.TemporaryDirectory() as tmp:
        path, optimized = Path(tmp) / "m.onnx", Path(tmp) / "m.opt.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_onnx(model, path)
        nodes = onnx.load(str(path)).graph.node
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
        options.optimized_model_filepath = str(optimized)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        fused = collections.Counter(n.op_type for n in onnx.load(str(optimized)).graph.node)
    print(
        f"medium x2 transpose+conv: {len(nodes)} nodes exported; onnxruntime {ort.__version__}, {args.threads} threads"
    )
    print("after onnxruntime's optimisations:", ", ".join(f"{k} {v}" for k, v in fused.most_common(12)))
    fusions = (
        "Gelu",
        "FastGelu",
        "BiasGelu",
        "LayerNormalization",
        "SkipLayerNormalization",
        "FusedMatMul",
        "FusedConv",
    )
    print("fusions:", ", ".join(f"{k} {fused[k]}" for k in fusions))
    for size in args.sizes:
        x = torch.rand(1, 3, size, size)
        times: dict[str, list[float]] = {"eager": [], "onnxruntime": []}
        with torch.inference_mode():
            for r in range(args.rounds + 1):  # round 0 warms up
                order = ("eager", "onnxruntime") if r % 2 else ("onnxruntime", "eager")
                for name in order:
                    start = time.perf_counter()
                    if name == "eager":
                        model(x)
                    else:
                        session.run(None, {"input": x.numpy()})
                    if r:
                        times[name].append(time.perf_counter() - start)
        e, o = statistics.median(times["eager"]), statistics.median(times["onnxruntime"])
        print(f"{size}x{size}: eager {e:.3f} s, onnxruntime {o:.3f} s, eager/onnxruntime {e / o:.2f}")


if __name__ == "__main__":
    main()
