"""The `-o` naming rules, the summary, the pipelined run (`--workers`, `--resume`) and the per-image API."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from PIL import Image

from spandrel_fdat import pipeline, upscale
from spandrel_fdat.images import EXTENSIONS, read_image
from spandrel_fdat.paths import OutputPathError, output_is_file
from tests.helpers import assert_one_line_error, run_cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RGB_X2 = FIXTURES / "standalone_pixelshuffle_x2.safetensors"  # 3 -> 3, window 4


def run(*args: str | Path) -> Result:
    return run_cli("upscale", *args)


def save(path: Path, size: tuple[int, int] = (20, 14), seed: int = 0, mode: str = "RGB") -> Path:
    bands = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], bands), dtype=np.uint8)
    Image.fromarray(pixels[:, :, 0] if bands == 1 else pixels).save(path)
    return path


def images(folder: Path, count: int) -> Path:
    folder.mkdir()
    for i in range(count):
        save(folder / f"im{i}.png", (12 + 4 * i, 10 + 2 * i), seed=i, mode="RGBA" if i == 2 else "RGB")
    return folder


# --- -o -----------------------------------------------------------------------------------------


def test_an_unknown_extension_is_refused_naming_the_supported_ones(tmp_path: Path) -> None:
    result = run(save(tmp_path / "a.png"), "-m", RGB_X2, "-o", tmp_path / "x.bmp")
    assert_one_line_error(result, f"-o {tmp_path / 'x.bmp'}", ".bmp is not a supported", ", ".join(EXTENSIONS))
    assert not (tmp_path / "x.bmp").exists()


def test_no_extension_and_one_input_is_refused(tmp_path: Path) -> None:
    result = run(save(tmp_path / "a.png"), "-m", RGB_X2, "-o", tmp_path / "noext")
    assert_one_line_error(result, f"-o {tmp_path / 'noext'}", "has no extension", f"end it with {os.sep}")
    assert not (tmp_path / "noext").exists()


@pytest.mark.parametrize("how", ["separator", "exists", "several"])
def test_no_extension_is_a_folder_when(tmp_path: Path, how: str) -> None:
    inputs = [save(tmp_path / "a.png")] + ([save(tmp_path / "b.png", seed=1)] if how == "several" else [])
    out = tmp_path / "out"
    if how == "exists":
        out.mkdir()
    result = run(*inputs, "-m", RGB_X2, "-o", f"{out}{os.sep}" if how == "separator" else out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in inputs)


def test_the_rules_directly(tmp_path: Path) -> None:
    assert output_is_file(tmp_path / "x.PNG", several=False)
    assert not output_is_file(f"{tmp_path / 'x.png'}/", several=False)
    assert not output_is_file(tmp_path / "noext", several=True)
    with pytest.raises(OutputPathError, match="not a supported image extension"):
        output_is_file(tmp_path / "dir.v2", several=True)


def test_the_summary_names_only_what_was_written(tmp_path: Path) -> None:
    result = run(tmp_path / "nonexist.jpg", "-m", RGB_X2, "-o", tmp_path / "ne.png")
    assert result.exit_code == 1
    line = result.stdout.strip()
    assert "nothing written" in line and "ne.png" not in line.split("nothing written")[0]
    assert line.endswith(f"failed: {tmp_path / 'nonexist.jpg'}")
    assert not (tmp_path / "ne.png").exists()


# --- the pipelined run --------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 3])
def test_pipelined_outputs_are_the_bytes_of_one_at_a_time(tmp_path: Path, workers: int) -> None:
    folder = images(tmp_path / "in", 6)
    assert run(folder, "-m", RGB_X2, "-o", tmp_path / "seq", "--workers", "0").exit_code == 0
    assert run(folder, "-m", RGB_X2, "-o", tmp_path / "pipe", "--workers", str(workers)).exit_code == 0
    names = sorted(p.name for p in (tmp_path / "seq").iterdir())
    assert names == [f"im{i}.png" for i in range(6)] == sorted(p.name for p in (tmp_path / "pipe").iterdir())
    for name in names:
        assert (tmp_path / "seq" / name).read_bytes() == (tmp_path / "pipe" / name).read_bytes()


def test_a_corrupt_image_among_good_ones_is_reported_and_the_rest_written(tmp_path: Path) -> None:
    folder = images(tmp_path / "in", 4)
    (folder / "im1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = run(folder, "-m", RGB_X2, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert f"{folder / 'im1.png'}: " in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["im0.png", "im2.png", "im3.png"]
    assert result.stdout.strip().endswith(f"failed: {folder / 'im1.png'}")
    assert result.stdout.startswith("upscaled 3 of 4 images (1 failed)")


def test_resume_skips_what_exists_and_does_the_rest(tmp_path: Path) -> None:
    folder = images(tmp_path / "in", 4)
    out = tmp_path / "out"
    assert run(folder, "-m", RGB_X2, "-o", out).exit_code == 0
    whole = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "im1.png").unlink()
    (out / "im3.png").unlink()
    (out / ".im3.png.123.456.partial").write_bytes(b"half")  # a stopped writer's leftover is no output
    (out / "im0.png").write_bytes(b"kept")  # an existing output is not touched
    result = run(folder, "-m", RGB_X2, "-o", out, "--resume")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("upscaled 2 of 4 images (0 failed, 2 already done)")
    assert (out / "im0.png").read_bytes() == b"kept"
    for name in ("im1.png", "im2.png", "im3.png"):
        assert (out / name).read_bytes() == whole[name]
    without = run(folder, "-m", RGB_X2, "-o", out)  # without --resume they are refusals, as before
    assert without.exit_code == 1 and "exists; skipped (--force overwrites)" in without.stderr


@pytest.mark.parametrize(
    "flag", [["--ray-actors", "2"], ["--ray-cpus", "2"], ["--ray-gpus", "1"], ["--ray-batch", "4"]]
)
def test_a_ray_option_without_ray_is_a_usage_error(tmp_path: Path, flag: list[str]) -> None:
    result = run(save(tmp_path / "a.png"), "-m", RGB_X2, "-o", tmp_path / "out.png", *flag)
    assert_one_line_error(result, f"{flag[0]} applies with --ray only", "add --ray [ADDRESS]", f"drop {flag[0]}")
    assert not (tmp_path / "out.png").exists()


# --- the per-image API --------------------------------------------------------------------------


def test_the_api_gives_the_cli_bytes(tmp_path: Path) -> None:
    folder = images(tmp_path / "in", 3)
    assert run(folder, "-m", RGB_X2, "-o", tmp_path / "cli").exit_code == 0
    jobs, single = pipeline.plan_outputs(sorted(folder.iterdir()), f"{tmp_path / 'api'}{os.sep}")
    assert not single
    upscaler = pipeline.load_for_upscale(RGB_X2, device="cpu")
    for job in jobs:
        data = pipeline.upscale_bytes(upscaler, job.source.read_bytes(), job.source, job.target)
        pipeline.write_atomic(data, job.target)
        assert job.target.read_bytes() == (tmp_path / "cli" / job.source.name).read_bytes()


def test_upscale_array_matches_the_file_path(tmp_path: Path) -> None:
    source = save(tmp_path / "a.png", seed=5)
    upscaler = pipeline.load_for_upscale(RGB_X2, device="cpu")
    out = pipeline.upscale_array(upscaler, np.asarray(Image.open(source)))
    expected = pipeline.decode(pipeline.upscale_bytes(upscaler, source.read_bytes(), source, "o.png"))
    assert out.dtype == np.uint8 and out.shape == (28, 40, 3)
    assert np.array_equal(out, (expected.colour.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def test_decode_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^s3://b/x\.png: "):
        pipeline.decode(b"not an image", "s3://b/x.png")
    assert read_image(save(tmp_path / "a.png")).width == 20
    assert upscale.UpscaleError  # the API's option errors
