"""CUDA benchmark: ours against spandrel 0.4.2's FDAT in fp32, fp16 and bf16, with a kernel profile.

    python bench/gpu.py                       # everything below, written to bench/results/gpu_<GPU>.{md,json}
    python bench/gpu.py --sizes 512x512       # fewer sizes
    python bench/gpu.py --out DIR             # write elsewhere

Needs a CUDA GPU and spandrel 0.4.2. Weights are `trained_like_weights`, inputs a smooth
image with detail (scikit-image's astronaut where installed). fp32 runs with TF32 off, so
fp32 differences are arithmetic. Times are medians of CUDA-event-timed forwards, the two
models alternating. Sections, each written as soon as it is done:

- engines: which ONNX Runtime providers and whether TensorRT import here;
- profile: where ours and the reference spend GPU time (medium x2, fp16, first size);
- attention: the window-attention SDPA call under each backend, at medium's shapes;
- table: every config, size and dtype: times, ratio, PSNR and max abs against fp32, finite.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from benchmark import CASES, DTYPES, build_pair, psnr

Forward = Callable[[torch.Tensor], Any]


def photo(height: int, width: int, device: torch.device) -> torch.Tensor:
    """A (1, 3, H, W) image in [0, 1]: the astronaut photograph resized, or a synthetic one."""
    try:
        from skimage import data

        img = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float()[None] / 255
    except ImportError:
        g = torch.Generator().manual_seed(0)
        img = F.interpolate(torch.rand(1, 3, 32, 32, generator=g), size=(512, 512), mode="bicubic")
    img = F.interpolate(img, size=(height, width), mode="bicubic", align_corners=False)
    return img.clamp(0, 1).to(device)


def cuda_times(fns: dict[str, Forward], x: torch.Tensor, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each function, calls alternating between them."""
    for fn in fns.values():
        for _ in range(warmup):
            fn(x)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(x)
            end.record()
            torch.cuda.synchronize()
            times[name].append(start.elapsed_time(end) / 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def engines() -> dict[str, Any]:
    info: dict[str, Any] = {}
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError as e:
        info["onnxruntime"] = f"not importable: {e}"
    try:
        import tensorrt

        info["tensorrt"] = tensorrt.__version__
    except ImportError as e:
        info["tensorrt"] = f"not importable: {e}"
    return info


def kernel_profile(model: Forward, x: torch.Tensor, top: int = 14) -> list[dict[str, Any]]:
    """The top GPU kernels of one forward by total time, with their share of the forward's kernel time."""
    from torch.profiler import ProfilerActivity, profile

    model(x)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        model(x)
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    if not events:
        return []
    key = "device_time_total" if hasattr(events[0], "device_time_total") else "cuda_time_total"
    total = sum(getattr(e, key) for e in events) or 1.0
    events.sort(key=lambda e: getattr(e, key), reverse=True)
    return [
        {
            "kernel": re.sub(r"\s+", " ", e.key)[:110],
            "ms": getattr(e, key) / 1e3,
            "share": getattr(e, key) / total,
            "calls": e.count,
        }
        for e in events[:top]
    ] + [{"kernel": "all kernels", "ms": total / 1e3, "share": 1.0, "calls": sum(e.count for e in events)}]


def attention_variants(size: int, dtype: torch.dtype, dev: torch.device) -> dict[str, float | str]:
    """ms of the window-attention SDPA at medium x2's shapes for a size x size input, per backend."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    windows, heads, n, hd = (size // 8) ** 2, 4, 64, 30
    g = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(windows, heads, n, hd, device=dev, dtype=dtype, generator=g) for _ in range(3))
    bias = 0.02 * torch.randn(heads, n, n, device=dev, dtype=dtype, generator=g)
    mask = bias.expand(windows, -1, -1, -1)
    scale = hd**-0.5
    padded = [F.pad(t, (0, 2)) for t in (q, k, v)]
    results: dict[str, float | str] = {}

    def run(backend: SDPBackend | None, tensors: list[torch.Tensor], attn_mask: torch.Tensor) -> Forward:
        q, k, v = tensors

        def call(_: torch.Tensor) -> torch.Tensor:
            if backend is None:
                return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)

        return call

    variants = {
        "default": run(None, [q, k, v], mask),
        "math": run(SDPBackend.MATH, [q, k, v], mask),
        "efficient": run(SDPBackend.EFFICIENT_ATTENTION, [q, k, v], mask),
        "cudnn": run(SDPBackend.CUDNN_ATTENTION, [q, k, v], mask),
        "efficient hd32": run(SDPBackend.EFFICIENT_ATTENTION, padded, mask),
        "cudnn hd32": run(SDPBackend.CUDNN_ATTENTION, padded, mask),
        "efficient hd32 contiguous mask": run(SDPBackend.EFFICIENT_ATTENTION, padded, mask.contiguous()),
    }
    reference = variants["math"](q)
    with torch.inference_mode():
        for name, fn in variants.items():
            try:
                out = fn(q)[..., :hd]
                err = (out.float() - reference.float()).abs().max().item()
                ms = cuda_times({name: fn}, q, repeats=10)[name] * 1e3
                results[name] = f"{ms:.3f} ms (max abs vs math {err:.1e})"
            except RuntimeError as e:
                results[name] = "fails: " + str(e).splitlines()[0][:120]
    return results


def scale_channel_qk(model: torch.nn.Module, factor: float) -> None:
    """Multiply q's and k's weights in every channel-attention block: the fp32 output is unchanged
    (q and k are L2-normalised over the pixels), but their sums over the pixels grow by factor**2."""
    from spandrel_fdat.network import ChannelAttention

    with torch.no_grad():
        for attention in model.modules():
            if isinstance(attention, ChannelAttention):
                weight = attention.qkv.weight
                weight[: 2 * weight.shape[1]].mul_(factor)


def scale_residual(model: torch.nn.Module, factor: float) -> None:
    """Multiply the shallow features by factor and the upsampler's first layer by 1/factor: the body's
    residual stream grows by factor, the output stays about what it was."""
    with torch.no_grad():
        first = dict(model.named_parameters())
        for key in ("conv_first.weight", "conv_first.bias", "conv_first.1.weight", "conv_first.1.bias"):
            if key in first:
                first[key].mul_(factor)
        upsampler = model.get_submodule("upsampler")
        convs = [m for m in upsampler.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
        convs[0].weight.div_(factor)


def overflow_rows(case: str, w: int, h: int, dev: torch.device) -> list[dict[str, Any]]:
    """fp16 forwards of models whose fp16 intermediates overflow: each model's output finite or not,
    ours's PSNR against its fp32 output, and the warnings ours gave."""
    import warnings

    rows = []
    x32 = photo(h, w, dev)
    for label, scale in (
        ("q, k x64 in channel blocks", lambda m: scale_channel_qk(m, 64.0)),
        ("residual stream x2^14", lambda m: scale_residual(m, 2.0**14)),
    ):
        ours, ref = build_pair(case)
        scale(ours)
        ours.half().float()  # fp32 from the weights fp16 holds: the difference is the forward's alone
        ref.load_state_dict(ours.state_dict())
        ours, ref = ours.to(dev), ref.to(dev)
        with torch.inference_mode():
            base = ours(x32).float()
            ours.half(), ref.half()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = ours(x32.half())
            ref_out = ref(x32.half())
        rows.append(
            {
                "case": case,
                "size": f"{w}x{h}",
                "weights": label,
                "fp32_max_abs_output": base.abs().max().item(),
                "ref_finite": bool(torch.isfinite(ref_out).all()),
                "ours_finite": bool(torch.isfinite(out).all()),
                "ours_psnr_vs_fp32": psnr(out.float(), base),
                "ours_warnings": [str(c.message)[:90] for c in caught],
            }
        )
        del ours, ref, out, ref_out, base
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--sizes", nargs="+", default=["512x512", "1920x1080"], help="WxH input sizes")
    p.add_argument("--repeats", type=int, default=10, help="timed forwards per model (half at >1 MP)")
    p.add_argument("--only", nargs="*", help="configs whose name contains one of these")
    p.add_argument("--skip", nargs="*", default=[], choices=["profile", "attention", "overflow", "table"])
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA GPU: torch.cuda.is_available() is False here")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name()
    slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    cases = [c for c in CASES if not args.only or any(t in c for t in args.only)]
    results: dict[str, Any] = {"device": name, "torch": torch.__version__, "engines": engines()}
    args.out.mkdir(parents=True, exist_ok=True)
    md: list[str] = [f"# GPU benchmark: {name}, torch {torch.__version__}", "", "`python bench/gpu.py`", ""]

    def save() -> None:
        (args.out / f"gpu_{slug}.json").write_text(json.dumps(results, indent=2))
        (args.out / f"gpu_{slug}.md").write_text("\n".join(md) + "\n")
        print("\n".join(md[-40:]), flush=True)

    md += [f"Engines here: {results['engines']}", ""]
    save()
    w0, h0 = sizes[0]
    x0 = photo(h0, w0, dev)
    if "profile" not in args.skip:
        ours, ref = build_pair("medium x2 transpose+conv")
        ours, ref = ours.to(dev, torch.float16), ref.to(dev, torch.float16)
        with torch.inference_mode():
            results["profile"] = {"ours": kernel_profile(ours, x0.half()), "reference": kernel_profile(ref, x0.half())}
        for who, rows in results["profile"].items():
            md += [
                f"## Kernel profile, {who}, medium x2 fp16 {w0}x{h0}",
                "",
                "| kernel | ms | share | calls |",
                "|---|---|---|---|",
            ]
            md += [f"| `{r['kernel']}` | {r['ms']:.2f} | {r['share']:.1%} | {r['calls']} |" for r in rows]
            md.append("")
        del ours, ref
        save()
    if "attention" not in args.skip:
        results["attention"] = {d: attention_variants(w0, DTYPES[d], dev) for d in ("fp16", "fp32")}
        md += [f"## Window attention SDPA at medium's shapes, {w0}x{w0}", ""]
        md += [f"- {d} {k}: {v}" for d, vs in results["attention"].items() for k, v in vs.items()]
        md.append("")
        save()
    if "overflow" not in args.skip:
        w, h = sizes[-1]
        results["overflow"] = overflow_rows("light x2 nearest+conv", w, h, dev)
        md += [
            "## fp16 with weights that overflow a naive fp16 forward",
            "",
            "| config | size | weights | fp32 max abs output | finite (ref / ours) | ours PSNR vs fp32 dB | ours warned |",
            "|---|---|---|---|---|---|---|",
        ]
        md += [
            f"| {r['case']} | {r['size']} | {r['weights']} | {r['fp32_max_abs_output']:.2f} | {r['ref_finite']} / {r['ours_finite']} "
            f"| {r['ours_psnr_vs_fp32']:.1f} | {'; '.join(r['ours_warnings']) or 'no'} |"
            for r in results["overflow"]
        ]
        md.append("")
        save()
    if "table" in args.skip:
        return
    md += [
        "## Ours against spandrel 0.4.2",
        "",
        "| config | size | dtype | reference ms | ours ms | ratio | PSNR vs fp32 dB (ref / ours) | max abs vs fp32 | finite (ref / ours) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    results["rows"] = []
    for case in cases:
        ours32, ref32 = build_pair(case)
        ours32, ref32 = ours32.to(dev), ref32.to(dev)
        for w, h in sizes:
            x32 = photo(h, w, dev)
            repeats = args.repeats if w * h <= 1 << 20 else max(3, args.repeats // 2)
            with torch.inference_mode():
                base = ours32(x32).float()
                for dname in ("fp32", "fp16", "bf16"):
                    dtype = DTYPES[dname]
                    o, r = copy.deepcopy(ours32).to(dtype), copy.deepcopy(ref32).to(dtype)
                    x = x32.to(dtype)
                    out, ref_out = o(x), r(x)
                    t = cuda_times({"ref": r, "ours": o}, x, repeats)
                    row = {
                        "case": case,
                        "size": f"{w}x{h}",
                        "dtype": dname,
                        "ref_ms": t["ref"] * 1e3,
                        "ours_ms": t["ours"] * 1e3,
                        "ratio": t["ref"] / t["ours"],
                        "psnr_vs_fp32": psnr(out.float(), base),
                        "ref_psnr_vs_fp32": psnr(ref_out.float(), base),
                        "max_abs_vs_fp32": (out.float() - base).abs().max().item(),
                        "finite": bool(torch.isfinite(out).all()),
                        "ref_finite": bool(torch.isfinite(ref_out).all()),
                        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
                    }
                    del out, ref_out
                    results["rows"].append(row)
                    md.append(
                        f"| {case} | {row['size']} | {dname} | {row['ref_ms']:.2f} | {row['ours_ms']:.2f} | "
                        f"**{row['ratio']:.2f}** | {row['ref_psnr_vs_fp32']:.1f} / {row['psnr_vs_fp32']:.1f} | "
                        f"{row['max_abs_vs_fp32']:.1e} | {row['ref_finite']} / {row['finite']} |"
                    )
                    save()
        del ours32, ref32
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
