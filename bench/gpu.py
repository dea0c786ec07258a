"""CUDA benchmark: ours vs spandrel 0.4.2's FDAT in fp32/fp16/bf16, precision, torch.compile.

    python bench/gpu.py [--out bench/results]

Needs a CUDA GPU. Inputs are a real photograph (scikit-image's astronaut, if
installed; else a smooth synthetic image), weights are `trained_like_weights`.
fp32 runs with TF32 off, so fp32 differences are arithmetic, not TF32.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch
from benchmark import CASES, build_pair, psnr

EXTRA_CASES: dict[str, tuple[str, dict[str, Any], int]] = {
    "medium x4 dysample": ("medium", {"scale": 4, "upsampler_type": "dysample"}, 128),
    "light x2 pa_up": ("light", {"scale": 2, "upsampler_type": "pa_up"}, 128),
    "light x2 lda": ("light", {"scale": 2, "upsampler_type": "lda"}, 128),
}


def photo(size: int, device: torch.device) -> torch.Tensor:
    try:
        from skimage import data

        img = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255
        img = torch.nn.functional.interpolate(img[None], size=(size, size), mode="area")
    except ImportError:
        ramp = torch.linspace(0, 1, size)
        img = torch.stack(
            [ramp[None].expand(size, size), ramp[:, None].expand(size, size), 0.5 * torch.ones(size, size)]
        )[None]
    return img.clamp(0, 1).to(device)


def cuda_time(fn: Any, x: torch.Tensor, repeats: int = 20) -> float:
    for _ in range(3):
        fn(x)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(x)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--size", type=int, default=512)
    args = p.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name()
    print(f"# GPU benchmark: {name}, torch {torch.__version__}, {args.size}x{args.size} input\n")
    print(
        "| config | dtype | reference ms | ours ms | ratio | PSNR vs fp32 (dB) | max abs vs fp32 | finite (ref / ours) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    results: dict[str, Any] = {"device": name, "torch": torch.__version__, "rows": []}
    x32 = photo(args.size, dev)
    CASES.update(EXTRA_CASES)  # build_pair looks cases up there
    for case in CASES:
        ours, ref = build_pair(case)
        ours, ref = ours.to(dev), ref.to(dev)
        with torch.inference_mode():
            base = ours(x32).float()
            for dtype in (torch.float32, torch.float16, torch.bfloat16):
                o, r = ours.to(dtype), ref.to(dtype)
                x = x32.to(dtype)
                out, ref_out = o(x), r(x)
                t_ours, t_ref = cuda_time(o, x), cuda_time(r, x)
                row = {
                    "case": case,
                    "dtype": str(dtype).removeprefix("torch."),
                    "ref_ms": t_ref * 1e3,
                    "ours_ms": t_ours * 1e3,
                    "psnr_vs_fp32": psnr(out, base),
                    "max_abs_vs_fp32": (out.float() - base).abs().max().item(),
                    "finite": bool(torch.isfinite(out).all()),
                    "ref_finite": bool(torch.isfinite(ref_out).all()),
                    "ref_psnr_vs_fp32": psnr(ref_out, base),
                }
                results["rows"].append(row)
                print(
                    f"| {case} | {row['dtype']} | {row['ref_ms']:.2f} | {row['ours_ms']:.2f} | "
                    f"{t_ref / t_ours:.2f} | {row['psnr_vs_fp32']:.1f} | {row['max_abs_vs_fp32']:.1e} | {row['ref_finite']} / {row['finite']} |",
                    flush=True,
                )
            ours.float()

    # torch.compile: graph breaks in the whole model, output and speed vs eager
    ours, _ = build_pair("medium x2 transpose+conv")
    ours = ours.to(dev)
    x = photo(args.size, dev)
    explanation = torch._dynamo.explain(ours)(x)
    compiled = torch.compile(ours)
    with torch.inference_mode():
        eager_out = ours(x)
        compiled_out = compiled(x)
        t_eager, t_compiled = cuda_time(ours, x), cuda_time(compiled, x)
    results["compile"] = {
        "graph_breaks": explanation.graph_break_count,
        "graphs": explanation.graph_count,
        "max_abs_vs_eager": (compiled_out - eager_out).abs().max().item(),
        "eager_ms": t_eager * 1e3,
        "compiled_ms": t_compiled * 1e3,
    }
    print(f"\ntorch.compile (medium x2, fp32): {results['compile']}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
