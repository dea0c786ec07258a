"""`--tile auto`: untiled (exact) when the image fits in memory, else the largest tile that fits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spandrel_fdat import memory, upscale
from spandrel_fdat.arch import load_model
from spandrel_fdat.images import read_image
from tests.helpers import run_cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RGB_X2 = FIXTURES / "standalone_pixelshuffle_x2.safetensors"  # 3 -> 3, window 4


def upscaler(tile: int | str, available: int | None) -> upscale.Upscaler:
    return upscale.Upscaler.from_descriptor(
        load_model(RGB_X2),
        device=torch.device("cpu"),
        dtype=torch.float32,
        tile=tile,
        overlap=None,
        available=available,
    )


def save(path: Path, size: tuple[int, int] = (40, 28)) -> Path:
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_plenty_of_memory_runs_the_whole_image() -> None:
    up = upscaler("auto", 2**40)
    assert up.tile_for(4000, 3000) == 0
    assert upscaler("auto", None).tile_for(4000, 3000) == 0  # unknown memory: untiled, as asked of auto


def test_little_memory_takes_the_largest_tile_that_fits() -> None:
    up = upscaler("auto", 200 * 2**20)
    tile = up.tile_for(4000, 3000)
    assert tile > 0 and tile % up.align == 0
    per_pixel = up.per_pixel
    budget = 200 * 2**20 * memory.BUDGET_FRACTION
    assert tile * tile * per_pixel + memory.OVERHEAD <= budget
    assert (tile + up.align) ** 2 * per_pixel + memory.OVERHEAD > budget
    assert up.tile_for(32, 32) == 0  # a small image still runs whole


def test_auto_equals_the_untiled_output_and_the_model_itself(tmp_path: Path) -> None:
    source = save(tmp_path / "in.png")
    assert run_cli("upscale", source, "-m", RGB_X2, "-o", tmp_path / "auto.png").exit_code == 0
    assert run_cli("upscale", source, "-m", RGB_X2, "-o", tmp_path / "whole.png", "--tile", "0").exit_code == 0
    assert (tmp_path / "auto.png").read_bytes() == (tmp_path / "whole.png").read_bytes()
    model = load_model(RGB_X2).model.eval()
    with torch.inference_mode():
        expected = model(read_image(source).colour[None])[0].clamp(0, 1).mul(255).round()
    assert torch.equal(read_image(tmp_path / "auto.png").colour.mul(255).round(), expected)
    tiled = run_cli("upscale", source, "-m", RGB_X2, "-o", tmp_path / "t.png", "--tile", "16", "--overlap", "4")
    assert tiled.exit_code == 0 and (tmp_path / "t.png").read_bytes() != (tmp_path / "auto.png").read_bytes()


def test_a_tile_that_will_not_fit_is_warned_about(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upscale, "available_memory", lambda device=None: 100 * 2**20)
    source = save(tmp_path / "in.png")
    result = run_cli("upscale", source, "-m", RGB_X2, "-o", tmp_path / "o.png", "--tile", "4096")
    assert result.exit_code == 0
    assert "warning: --tile 4096 needs about" in result.stderr and "--tile auto would take" in result.stderr
    fine = run_cli("upscale", source, "-m", RGB_X2, "-o", tmp_path / "p.png", "--tile", "64")
    assert fine.exit_code == 0 and "warning" not in fine.stderr


def test_tile_zero_on_an_image_too_large_is_warned_about(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upscale, "available_memory", lambda device=None: 1000)
    source = save(tmp_path / "in.png")
    result = run_cli("upscale", source, "-m", RGB_X2, "-o", tmp_path / "o.png", "--tile", "0")
    assert result.exit_code == 0 and f"{source}: warning: --tile 0 needs about" in result.stderr


def test_available_memory_without_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "psutil", None)  # import psutil raises ImportError
    free = memory.available_memory()
    if Path("/proc/meminfo").exists():
        line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemAvailable:"))
        assert free is not None and abs(free - int(line.split()[1]) * 1024) < 2**30


def test_bad_tile_values() -> None:
    result = run_cli("upscale", "x.png", "-o", "y.png", "--tile", "big")
    assert result.exit_code == 2 and "'big' is not auto or a whole number" in result.output
