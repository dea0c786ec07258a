"""CPU benchmark: spandrel_fdat's FDAT against spandrel 0.4.2's, same weights, one process.

    python bench/benchmark.py               # the table, linear-scaling check, peak memory, plot
    python bench/benchmark.py --quick       # fewer repeats, no plot
    python bench/benchmark.py --bands       # ours at other band sizes (FDAT.band_pixels)
    python bench/benchmark.py --only light  # the table's light row alone, nothing written
    python bench/benchmark.py --dtype bf16  # both models in bf16 (or fp16), against fp32

Times are medians of alternating runs (reference, ours, reference, ...) at batch 1
with `--threads` threads (2: this project's machines); "paired ratios" is the range of
each reference run's time over the next run of ours, which shows how much the machine
drifted. "Page faults per run" is the median count of fresh memory pages a forward
touched (minor faults; Unix only): kernel time that depends on the allocator's state,
and so on what ran before in the process (see the README). Peak memory is the peak RSS
of a fresh process that builds one model and runs one 512x512 image. The targets are fp32;
`--dtype` times the configs in fp16 or bf16 instead, written to results/cpu_<dtype>.md unless
`--only` or `--quick` (bench/gpu.py: the same on a GPU).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from spandrel_fdat import FDAT

HERE = Path(__file__).resolve().parent
CASES: dict[str, tuple[str, dict[str, Any], int]] = {
    # name: (preset, overrides, image size)
    "medium x2 transpose+conv": ("medium", {"scale": 2, "upsampler_type": "transpose+conv"}, 128),
    "light x2 nearest+conv": ("light", {"scale": 2, "upsampler_type": "nearest+conv"}, 101),
    "tiny x4 pixelshuffle": ("tiny", {"scale": 4, "upsampler_type": "pixelshuffle"}, 96),
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TARGETS = {"medium x2 transpose+conv": 2.0, "light x2 nearest+conv": 1.7, "tiny x4 pixelshuffle": 1.4}


def trained_like_weights(model: torch.nn.Module, seed: int = 0) -> None:
    """Seeded weights of a trained network's scale: unit-gain layers, residual branches scaled down.

    Fan-in-scaled weights keep activations O(1); dividing each residual branch's last
    layer by sqrt(2 * blocks) keeps the residual stream bounded, as in trained models.
    """
    gen = torch.Generator().manual_seed(seed)
    blocks = sum(1 for name, _ in model.named_modules() if name.count(".blocks.") == 1 and name.count(".") == 3)
    gain = 1 / math.sqrt(2 * max(blocks, 1))
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point() or name.endswith("init_pos"):
                continue
            noise = torch.randn(t.shape, generator=gen)
            if name.endswith((".n1.weight", ".n2.weight")):
                t.copy_(1 + 0.1 * noise)
            elif name.endswith("attn.temp"):
                t.copy_(1 + 0.2 * noise.abs())
            elif t.ndim >= 2 and not name.endswith("attn.bias"):
                std = 1 / math.sqrt(math.prod(t.shape[1:]))
                if name.endswith(("attn.proj.weight", "ffn.fc2.weight")):
                    std *= gain
                t.copy_(std * noise)
            else:
                t.copy_(0.02 * noise)


def image_like_output(model: FDAT, spread: float = 0.25) -> None:
    """Scale the upsampler's last convolution so the output has an image's spread (its std on a probe).

    A trained network outputs [0, 1] images; trained-like random weights give outputs of +-80,
    which would make the float32 differences look 100 times larger than a real model's.
    """
    last = [m for m in model.upsampler.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)][-1]
    probe = torch.rand(1, model.config.num_in_ch, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        factor = spread / model(probe).std().item()
        last.weight.mul_(factor)
        if last.bias is not None:
            last.bias.mul_(factor)


def select_cases(parser: argparse.ArgumentParser, only: list[str] | None) -> list[str]:
    """The configs whose name contains any of the `--only` texts (all configs for none); a parser
    error that lists the configs where none matches."""
    cases = [c for c in CASES if not only or any(text in c for text in only)]
    if not cases:
        parser.error(f"--only {' '.join(only or [])}: no config matches; the configs are {', '.join(CASES)}")
    return cases


def build_pair(case: str) -> tuple[FDAT, torch.nn.Module]:
    from spandrel.architectures.FDAT import FDAT as Reference

    import spandrel_fdat

    preset, overrides, _ = CASES[case]
    ours: FDAT = getattr(spandrel_fdat, f"fdat_{preset}")(**overrides).eval()
    trained_like_weights(ours)
    image_like_output(ours)
    ref_kwargs = {k: v for k, v in ours.hyperparameters.items() if k not in ("layout", "meta_version", "norm_eps")}
    reference = Reference(**ref_kwargs).eval()
    reference.load_state_dict(dict(ours.state_dict()))
    return ours, reference


def minor_faults() -> float:
    """This process's minor page faults so far (NaN where `resource` does not exist: Windows)."""
    try:
        import resource
    except ImportError:
        return float("nan")
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_rounds(
    models: Mapping[str, Callable[[torch.Tensor], object]], images: dict[int, torch.Tensor], repeats: int
) -> tuple[dict[tuple[int, str], list[float]], dict[tuple[int, str], list[float]]]:
    """Seconds and page faults of every run, keyed (size, model name): in each round every size in
    turn and, at each size, every model in turn (in the dict's order), so that a drift of the
    machine's speed touches each model and size alike."""
    times: dict[tuple[int, str], list[float]] = {(s, n): [] for s in images for n in models}
    faults: dict[tuple[int, str], list[float]] = {key: [] for key in times}
    with torch.inference_mode():
        for _ in range(repeats):
            for s, x in images.items():
                for name, model in models.items():
                    before = minor_faults()
                    start = time.perf_counter()
                    model(x)
                    times[s, name].append(time.perf_counter() - start)
                    faults[s, name].append(minor_faults() - before)
    return times, faults


def paired_ratios(ref_times: list[float], ours_times: list[float]) -> tuple[float, float]:
    """The range of each reference run's time over the run of ours after it."""
    paired = sorted(r / o for r, o in zip(ref_times, ours_times, strict=True))
    return paired[0], paired[-1]


def time_pairs(
    ours: torch.nn.Module, ref: torch.nn.Module, sizes: list[int], repeats: int
) -> dict[int, dict[str, float]]:
    """Per image size: median times, paired ratios, page faults and the outputs' difference.

    Rounds go over every size in turn (reference, ours at one size, then the next size), so that
    a drift of the machine's speed touches each size alike and ratios between sizes hold.
    """
    images = {s: torch.rand(1, 3, s, s, generator=torch.Generator().manual_seed(1)) for s in sizes}
    results = {}
    with torch.inference_mode():
        for s, x in images.items():  # warm-up, and the outputs to compare
            a, b = ours(x), ref(x)
            results[s] = {"max_abs_diff": (a - b).abs().max().item(), "out_max_abs": b.abs().max().item()}
            del a, b
    times, faults = time_rounds({"ref": ref, "ours": ours}, images, repeats)
    for s in sizes:
        low, high = paired_ratios(times[s, "ref"], times[s, "ours"])
        results[s] |= {
            "ours_s": statistics.median(times[s, "ours"]),
            "ref_s": statistics.median(times[s, "ref"]),
            "paired_ratio_min": low,
            "paired_ratio_max": high,
            "ours_faults": statistics.median(faults[s, "ours"]),
            "ref_faults": statistics.median(faults[s, "ref"]),
        }
    return results


def psnr(a: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR of a against ref in dB, the peak being ref's range."""
    mse = (a.float() - ref.float()).pow(2).mean().item()
    peak = (ref.max() - ref.min()).item()
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def _taking(model: torch.nn.Module, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model, run on its input cast to dtype (the cast is timed with it, as a user runs it)."""
    return lambda x: model(x.to(dtype))


def dtype_table(cases: list[str], dtype_name: str, repeats: int, report: Callable[[str], None]) -> dict[str, Any]:
    """Ours and the reference both in a lower precision on the CPU, with ours in fp32 timed in the
    same rounds: the speed-up over the reference, over fp32, and the outputs against fp32."""
    dtype = DTYPES[dtype_name]
    report(
        f"| config | size | reference {dtype_name} s | ours {dtype_name} s | ratio | paired ratios | ours fp32 s "
        f"| ours fp32 / {dtype_name} | PSNR vs fp32 ref / ours (dB) | max abs vs fp32 ref / ours | finite ref / ours |"
    )
    report("|---|---|---|---|---|---|---|---|---|---|---|")
    rows: dict[str, Any] = {}
    for case in cases:
        size = CASES[case][2]
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
        ours32, ref = build_pair(case)
        ours, ref = copy.deepcopy(ours32).to(dtype), ref.to(dtype)
        with torch.inference_mode():  # warm-up, and the outputs to compare
            base = ours32(x)
            outs = {"ref": ref(x.to(dtype)).float(), "ours": ours(x.to(dtype)).float()}
        runs = {"ref": _taking(ref, dtype), "ours": _taking(ours, dtype), "fp32": _taking(ours32, torch.float32)}
        times, _ = time_rounds(runs, {size: x}, repeats)
        t = {name: statistics.median(times[size, name]) for name in runs}
        low, high = paired_ratios(times[size, "ref"], times[size, "ours"])
        p = {name: psnr(out, base) for name, out in outs.items()}
        m = {name: (out - base).abs().max().item() for name, out in outs.items()}
        f = {name: bool(out.isfinite().all()) for name, out in outs.items()}
        rows[case] = {"size": size, "seconds": t, "paired_ratios": [low, high]}
        rows[case] |= {"psnr_vs_fp32": p, "max_abs_vs_fp32": m, "finite": f}
        report(
            f"| {case} | {size} | {t['ref']:.3f} | {t['ours']:.3f} | {t['ref'] / t['ours']:.2f} | {low:.2f} to {high:.2f} "
            f"| {t['fp32']:.3f} | {t['fp32'] / t['ours']:.2f} | {p['ref']:.1f} / {p['ours']:.1f} "
            f"| {m['ref']:.1e} / {m['ours']:.1e} | {f['ref']} / {f['ours']} |"
        )
    return rows


def gflop(model: torch.nn.Module, size: int) -> float:
    """Floating-point operations of one forward pass (matrix products, convolutions, attention), in GFLOP."""
    from torch.utils.flop_counter import FlopCounterMode

    def addmm_flop(_: Any, a: tuple[int, int], b: tuple[int, int], *args: Any, **kwargs: Any) -> int:
        return 2 * a[0] * a[1] * b[1]

    def sdpa_flop(q: tuple[int, ...], k: tuple[int, ...], v: tuple[int, ...], *args: Any, **kwargs: Any) -> int:
        return 2 * math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])  # q k^T, then attn v

    # Not in the counter's table: in-place addmm_ (ours, one-band inference) and the CPU kernel of
    # scaled_dot_product_attention (ours; the reference's window attention is matmuls).
    mapping = {torch.ops.aten.addmm_: addmm_flop, torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: sdpa_flop}
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with torch.inference_mode(), counter:
        model(torch.rand(1, 3, size, size))  # the cases are RGB models
    return counter.get_total_flops() / 1e9


def machine_rates(repeats: int = 9) -> dict[str, float]:
    """This machine's fp32 GFLOP/s now: a 2048^3 GEMM, medium's fc1 GEMM and group conv at 128x128.

    The limit to hold the cases' GFLOP/s against: what the matrix products alone reach.
    """
    import torch.nn.functional as F

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    x, w = torch.randn(128 * 128, 120), torch.randn(120, 240)
    img = torch.randn(1, 120, 128, 128).contiguous(memory_format=torch.channels_last)
    kernel = torch.randn(120, 120, 3, 3)
    work = {
        "gemm 2048^3": (lambda: a @ b, 2 * 2048**3),
        "fc1 16384x120x240": (lambda: x @ w, 2 * 16384 * 120 * 240),
        "conv3x3 120ch 128^2": (lambda: F.conv2d(img, kernel, padding=1), 2 * 128 * 128 * 120 * 120 * 9),
    }
    rates = {}
    with torch.inference_mode():
        for name, (fn, flop) in work.items():
            fn()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            rates[name] = flop / statistics.median(times) / 1e9
    return rates


def peak_rss_mb(which: str, case: str, size: int, threads: int) -> float:
    """Peak RSS of a fresh process that builds one model and upscales one image."""
    cmd = [
        sys.executable,
        __file__,
        "--peak-rss",
        which,
        "--case",
        case,
        "--size",
        str(size),
        "--threads",
        str(threads),
    ]
    return float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip())


def rss_mb(field: str = "VmRSS") -> float:
    """This process's RSS (`VmRSS`) or peak RSS (`VmHWM`) in MB, from /proc/self/status.

    Not `getrusage`'s ru_maxrss: on Linux it survives exec, so a child started from a large
    parent would report the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    return float("nan")


def _peak_rss_child(which: str, case: str, size: int) -> None:
    ours, ref = build_pair(case)
    model = ours if which == "ours" else ref
    del ours, ref
    x = torch.rand(1, 3, size, size)
    with torch.inference_mode():
        model(x)
    print(rss_mb("VmHWM"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="3 repeats, no scaling sweep or plot")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--bands", action="store_true", help="time ours at several band sizes instead")
    p.add_argument(
        "--only",
        action="append",
        metavar="TEXT",
        help="time only the configs whose name contains TEXT (repeatable); no sweep, plot or files",
    )
    p.add_argument(
        "--dtype",
        choices=list(DTYPES),
        default="fp32",
        help="fp16/bf16: both models in that dtype, ours in fp32 timed beside them; no sweep or plot",
    )
    p.add_argument("--peak-rss", choices=["ours", "ref"], help=argparse.SUPPRESS)
    p.add_argument("--case", default="medium x2 transpose+conv", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=512, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.peak_rss:
        _peak_rss_child(args.peak_rss, args.case, args.size)
        return
    if args.bands and args.dtype != "fp32":
        p.error("--bands times fp32 only; leave out --dtype")
    if args.bands:
        _band_sizes(args.threads, args.repeats, args.out)
        return
    cases = select_cases(p, args.only)
    lines: list[str] = []

    def report(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    repeats = 3 if args.quick else args.repeats
    machine = f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}"
    if args.dtype != "fp32":
        report(f"# CPU benchmark in {args.dtype} ({machine})\n")
        rows = dtype_table(cases, args.dtype, repeats, report)
        if not (args.quick or args.only):
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"cpu_{args.dtype}.json").write_text(json.dumps({"machine": machine, "cases": rows}, indent=2))
            command = f"`python bench/benchmark.py --dtype {args.dtype} --repeats {repeats}`"
            (args.out / f"cpu_{args.dtype}.md").write_text("\n".join([*lines, "", command, ""]))
        return
    report(f"# CPU benchmark ({machine})\n")
    report(
        "| config | size | reference s | ours s | ratio | paired ratios | target | max abs diff | output max "
        "| GFLOP ref / ours | GFLOP/s ref / ours | page faults per run ref / ours |"
    )
    report("|---|---|---|---|---|---|---|---|---|---|---|---|")
    results: dict[str, Any] = {"machine": machine, "cases": {}}
    for case in cases:
        size = CASES[case][2]
        ours, ref = build_pair(case)
        r = time_pairs(ours, ref, [size], repeats)[size]
        ratio = r["ref_s"] / r["ours_s"]
        flops = {"ref": gflop(ref, size), "ours": gflop(ours, size)}
        results["cases"][case] = {**r, "size": size, "ratio": ratio, "gflop": flops}
        report(
            f"| {case} | {size} | {r['ref_s']:.3f} | {r['ours_s']:.3f} | {ratio:.2f} "
            f"| {r['paired_ratio_min']:.2f} to {r['paired_ratio_max']:.2f} | {TARGETS[case]} "
            f"| {r['max_abs_diff']:.1e} | {r['out_max_abs']:.2f} | {flops['ref']:.1f} / {flops['ours']:.1f} "
            f"| {flops['ref'] / r['ref_s']:.0f} / {flops['ours'] / r['ours_s']:.0f} "
            f"| {r['ref_faults']:.0f} / {r['ours_faults']:.0f} |"
        )
    rates = machine_rates()
    results["machine_gflops"] = rates
    report("\nfp32 GFLOP/s of this machine now: " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))
    if args.quick or args.only:
        return

    case = "medium x2 transpose+conv"
    ours, ref = build_pair(case)
    sizes = [64, 128, 256, 384, 512]
    sweep = time_pairs(ours, ref, sizes, max(2, repeats // 2))
    results["sweep"] = {str(s): v for s, v in sweep.items()}
    per_px = {s: (v["ours_s"] / s**2, v["ref_s"] / s**2) for s, v in sweep.items()}
    report(f"\n## Time per pixel, {case}\n\n| size | reference us/px | ours us/px | ratio |\n|---|---|---|---|")
    for s, (ours_px, ref_px) in per_px.items():
        report(f"| {s} | {ref_px * 1e6:.2f} | {ours_px * 1e6:.2f} | {ref_px / ours_px:.2f} |")
    report(
        f"\ntime per pixel at 512 / at 128: ours {per_px[512][0] / per_px[128][0]:.2f}, "
        f"reference {per_px[512][1] / per_px[128][1]:.2f} (target for ours <= 1.3)"
    )

    rss = {w: peak_rss_mb(w, case, 512, args.threads) for w in ("ref", "ours")}
    results["peak_rss_mb_512"] = rss
    report(
        f"peak RSS at 512x512 ({case}, fresh process): reference {rss['ref']:.0f} MB, ours {rss['ours']:.0f} MB, "
        f"ratio {rss['ours'] / rss['ref']:.2f} (target <= 0.7)"
    )

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu.json").write_text(json.dumps(results, indent=2))
    (args.out / "cpu.md").write_text("\n".join([*lines, "", f"`python bench/benchmark.py --repeats {repeats}`", ""]))
    _plot(per_px, case, machine, args.out / "time_per_pixel.png")


def _with_bands(model: FDAT, pixels: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model, run with `band_pixels` set to pixels."""

    def run(x: torch.Tensor) -> torch.Tensor:
        model.band_pixels = pixels
        return model(x)

    return run


def _band_sizes(threads: int, repeats: int, out: Path) -> None:
    """Ours at several `band_pixels` (0: the whole image as one band), alternating, medians."""
    case = "medium x2 transpose+conv"
    ours, _ = build_pair(case)
    choices = [0, 2048, 4096, 8192, 16384, 32768]
    lines = [f"# Band sizes, {case}, {threads} threads, torch {torch.__version__}", ""]
    lines += ["| size | " + " | ".join(f"{p or 'whole'} s" for p in choices) + " |", "|---" * (len(choices) + 1) + "|"]
    print("\n".join(lines), flush=True)
    runs = {str(p): _with_bands(ours, p) for p in choices}
    for size in (128, 256, 512):
        image = {size: torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))}
        time_rounds(runs, image, 1)  # warm-up
        times, _ = time_rounds(runs, image, max(2, repeats // 2))
        line = f"| {size} | " + " | ".join(f"{statistics.median(times[size, str(p)]):.3f}" for p in choices) + " |"
        print(line, flush=True)
        lines.append(line)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bands.md").write_text(
        "\n".join([*lines, "", f"`python bench/benchmark.py --bands --repeats {repeats}`", ""])
    )


def _plot(per_px: dict[int, tuple[float, float]], case: str, machine: str, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[bench]')")
        return
    sizes = list(per_px)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(sizes, [per_px[s][1] * 1e6 for s in sizes], "o-", label="spandrel 0.4.2 FDAT")
    ax.plot(sizes, [per_px[s][0] * 1e6 for s in sizes], "o-", label="spandrel_fdat")
    ax.set_xlabel("image side (px)")
    ax.set_ylabel("time per input pixel (µs)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{case}, CPU\n{machine}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
