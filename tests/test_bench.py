"""bench/'s helpers. FLOP counts: the benchmark's totals (torch's FlopCounterMode plus the operations
its table lacks) and bench/breakdown.py's counts by kind of operation agree, for ours and for the
reference. Timing: the models take turns in every round. The fp16/bf16 table: both models in the
dtype, held against ours in fp32.

The two FLOP counts differ in method (torch's table of aten ops; breakdown's own formulas from shapes), so
an operation that one of them misses shows as a difference: the benchmark once left out
scaled_dot_product_attention's CPU kernel, 6 of medium x2's 110 GFLOP.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tests.helpers import builtin_fdat

BENCH = Path(__file__).resolve().parents[1] / "bench"
SIZE = 20  # not a multiple of the window: the padded windows are counted too


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, ModuleType]]:
    builtin_fdat()  # the reference
    monkeypatch.syspath_prepend(str(BENCH))
    import benchmark
    import breakdown

    yield benchmark, breakdown


def test_flop_counts_agree(bench: tuple[ModuleType, ModuleType]) -> None:
    benchmark, breakdown = bench
    for case in benchmark.CASES:
        ours, ref = benchmark.build_pair(case)
        attention = {}
        for name, model in (("ours", ours), ("reference", ref)):
            timer = breakdown.OpTimer()
            with torch.inference_mode(), timer:
                model(torch.rand(1, 3, SIZE, SIZE))
            total = benchmark.gflop(model, SIZE) * 1e9
            assert total > 0
            assert math.isclose(sum(timer.flop.values()), total, rel_tol=1e-9), (case, name)
            attention[name] = timer.flop[breakdown.KINDS[3]]
        # the same window attention, as one fused kernel (ours) or as matmuls (the reference)
        assert attention["ours"] == attention["reference"] > 0, case


def test_time_rounds_alternates(bench: tuple[ModuleType, ModuleType]) -> None:
    """Every round runs every size in turn and, at each size, every model in turn."""
    benchmark, _ = bench
    calls: list[tuple[str, int]] = []
    models = {name: (lambda x, name=name: calls.append((name, x.shape[-1]))) for name in ("ref", "ours", "fp32")}
    images = {8: torch.zeros(1, 3, 8, 8), 12: torch.zeros(1, 3, 12, 12)}
    times, faults = benchmark.time_rounds(models, images, 3)
    assert calls == [(name, s) for s in (8, 12) for name in models] * 3
    assert set(times) == set(faults) == {(s, name) for s in images for name in models}
    assert all(len(v) == 3 and min(v) >= 0 for v in times.values())


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_dtype_table(bench: tuple[ModuleType, ModuleType], monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    """Both models in the dtype, compared against ours in fp32: finite, and within the dtype's precision."""
    benchmark, _ = bench
    case = "tiny x4 pixelshuffle"
    preset, overrides, _ = benchmark.CASES[case]
    monkeypatch.setitem(benchmark.CASES, case, (preset, overrides, 24))
    lines: list[str] = []
    rows = benchmark.dtype_table([case], dtype, 1, lines.append)
    assert len(lines) == 3 and lines[2].startswith(f"| {case} | 24 |")
    row = rows[case]
    assert row["finite"] == {"ref": True, "ours": True}
    floor = 50 if dtype == "fp16" else 35  # tests/test_descriptor.py's MIN_PSNR on the CPU
    assert min(row["psnr_vs_fp32"].values()) >= floor
    assert min(row["seconds"].values()) > 0
