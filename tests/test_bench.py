"""bench/'s FLOP counts: the benchmark's totals (torch's FlopCounterMode plus the operations its table
lacks) and bench/breakdown.py's counts by kind of operation agree, for ours and for the reference.

The two count differently (torch's table of aten ops; breakdown's own formulas from shapes), so
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
