"""`spandrel-fdat upscale`: every flag, every kind of image, and the ways it can fail.

The models are the small bundled fixtures (16-dim bodies, window 4), the images a few dozen
pixels, so each command runs in well under a second. Exit status: 0 all done, 1 some images
failed (one line each on stderr, the others written), 2 nothing run (one-line error).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import Result
from PIL import Image

from spandrel_fdat import upscale
from spandrel_fdat.images import FloatImage, read_image, write_image
from spandrel_fdat.models import default_model_path
from tests.helpers import assert_one_line_error, run_cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RGB_X2 = FIXTURES / "standalone_pixelshuffle_x2.safetensors"  # 3 -> 3, window 4
GREY_X3 = FIXTURES / "uni_v2_nearest_conv_gray_x3.safetensors"  # 1 -> 1
GREY_TO_RGB_X2 = FIXTURES / "uni_unshuffle_1to3_x2.safetensors"  # 1 -> 3, pixel unshuffle
RGBA_X2 = FIXTURES / "uni_pattern_css_rgba_x2.safetensors"  # 4 -> 4
GUESSED = FIXTURES / "lhan_nearest_conv_x2.safetensors"  # no scale recorded: loads as x4 with a warning


def run(*args: str | Path) -> Result:
    return run_cli("upscale", *args)


def summary(result: Result) -> str:
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    return lines[0]


def save(path: Path, mode: str = "RGB", size: tuple[int, int] = (20, 14), seed: int = 0) -> Path:
    """An 8-bit image of Pillow mode `mode`, width x height `size`."""
    bands = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], bands), dtype=np.uint8)
    Image.fromarray(pixels[:, :, 0] if bands == 1 else pixels).save(path)
    return path


def save16(path: Path, channels: int, alpha: bool, size: tuple[int, int] = (18, 12)) -> Path:
    gen = torch.Generator().manual_seed(channels)
    colour = torch.rand(channels, size[1], size[0], generator=gen)
    write_image(FloatImage(colour, torch.rand(1, size[1], size[0], generator=gen) if alpha else None, 16), path)
    return path


# --- what comes out -----------------------------------------------------------------------------


def test_a_folder_of_images_into_a_new_folder(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    save(inputs / "rgb.png")
    save(inputs / "rgba.png", "RGBA")
    save(inputs / "grey.jpg", "L")
    save16(inputs / "deep.tif", 3, alpha=True)
    (inputs / "notes.txt").write_text("not an image: ignored in a folder")
    (inputs / "sub").mkdir()
    save(inputs / "sub" / "nested.png")  # subfolders are not searched
    result = run(inputs, "-m", RGB_X2, "-o", tmp_path / "out" / "x2")
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "out" / "x2"
    assert sorted(p.name for p in out.iterdir()) == ["deep.tif", "grey.jpg", "rgb.png", "rgba.png"]
    expected = {
        "rgb.png": "40x28 RGB 8-bit",
        "rgba.png": "40x28 RGBA 8-bit",
        "grey.jpg": "40x28 grey 8-bit",  # grey stays grey on an RGB model
        "deep.tif": "36x24 RGBA 16-bit",  # 16 bits stay 16 bits
    }
    assert {name: read_image(out / name).describe() for name in expected} == expected
    line = summary(result)
    assert line.startswith("upscaled 4 of 4 images (0 failed)") and "MP/s" in line and f"outputs in {out}" in line


@pytest.mark.parametrize(
    ("model", "make", "expected"),
    [
        (GREY_X3, lambda p: save(p, "RGB"), "60x42 RGB 8-bit"),  # RGB through a grey model: plane by plane
        (GREY_X3, lambda p: save(p, "LA"), "60x42 greyA 8-bit"),
        (GREY_TO_RGB_X2, lambda p: save(p, "L"), "40x28 grey 8-bit"),  # grey -> RGB model: averaged back
        (GREY_TO_RGB_X2, lambda p: save(p, "RGBA"), "40x28 RGBA 8-bit"),
        (RGBA_X2, lambda p: save(p, "RGBA"), "40x28 RGBA 8-bit"),  # alpha goes through the model with colour
        (RGBA_X2, lambda p: save(p, "RGB"), "40x28 RGB 8-bit"),
        (RGBA_X2, lambda p: save(p, "L"), "40x28 grey 8-bit"),
        (RGB_X2, lambda p: save16(p, 1, alpha=False), "36x24 grey 16-bit"),
        (RGB_X2, lambda p: save16(p, 1, alpha=True), "36x24 greyA 16-bit"),
        (RGB_X2, lambda p: save16(p, 3, alpha=False), "36x24 RGB 16-bit"),
    ],
)
def test_every_image_kind_keeps_its_kind(tmp_path: Path, model: Path, make: object, expected: str) -> None:
    make(tmp_path / "in.png")  # type: ignore[operator]
    result = run(tmp_path / "in.png", "-m", model, "-o", tmp_path / "out.png")
    assert result.exit_code == 0, result.stderr
    assert read_image(tmp_path / "out.png").describe() == expected
    assert summary(result).endswith(f"output: {tmp_path / 'out.png'}")


def test_alpha_is_upscaled_as_its_own_grey_image(tmp_path: Path) -> None:
    """RGBA on an RGB model: the alpha output equals the grey image of the alpha upscaled alone."""
    rgba = save(tmp_path / "rgba.png", "RGBA", seed=4)
    with Image.open(rgba) as source:
        source.getchannel("A").save(tmp_path / "alpha.png")
    assert run(rgba, "-m", RGB_X2, "-o", f"{tmp_path / 'a'}/").exit_code == 0
    assert run(tmp_path / "alpha.png", "-m", RGB_X2, "-o", f"{tmp_path / 'b'}/").exit_code == 0
    alpha = read_image(tmp_path / "a" / "rgba.png").alpha
    assert alpha is not None and torch.equal(alpha, read_image(tmp_path / "b" / "alpha.png").colour)


def test_the_output_files_extension_picks_the_format(tmp_path: Path) -> None:
    save(tmp_path / "in.png")
    result = run(tmp_path / "in.png", "-m", RGB_X2, "-o", tmp_path / "new" / "out.webp")
    assert result.exit_code == 0, result.stderr
    with Image.open(tmp_path / "new" / "out.webp") as written:
        assert written.format == "WEBP" and written.size == (40, 28)


def test_tile_zero_is_the_whole_image_and_a_tile_as_large_is_the_same(tmp_path: Path) -> None:
    save(tmp_path / "in.png", size=(40, 36))
    assert run(tmp_path / "in.png", "-m", RGB_X2, "-o", tmp_path / "whole.png", "--tile", "0").exit_code == 0
    assert run(tmp_path / "in.png", "-m", RGB_X2, "-o", tmp_path / "big.png", "--tile", "64").exit_code == 0
    small = run(tmp_path / "in.png", "-m", RGB_X2, "-o", tmp_path / "small.png", "--tile", "16", "--overlap", "4")
    assert small.exit_code == 0
    whole, big, tiled = (read_image(tmp_path / f"{n}.png").colour for n in ("whole", "big", "small"))
    assert torch.equal(whole, big)  # one tile: the same code path gives the same bytes
    assert tiled.shape == whole.shape and float((tiled - whole).abs().mean()) < 0.05


def test_tile_progress_and_the_library_call(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save(tmp_path / "in.png", size=(40, 36))
    reports: list[str] = []
    result = upscale.upscale_files(
        [tmp_path / "in.png"],
        f"{tmp_path / 'out'}/",
        model=RGB_X2,
        tile=16,
        overlap=4,
        progress=True,
        report=reports.append,
    )
    assert (result.done, result.failed, reports) == (1, 0, [])
    err = capsys.readouterr().err
    assert "images: 100%|" in err and "1/1" in err  # tqdm bars on stderr: over images, and over
    assert "in.png:   0%|" in err and "0/9 [" in err and "tile/s" in err  # the 3 x 3 tiles of this image
    assert result.megapixels == pytest.approx(40 * 36 / 1e6)


def test_the_tile_is_rounded_up_to_whole_windows(tmp_path: Path) -> None:
    notes: list[str] = []
    device = torch.device("cpu")
    up = upscale.Upscaler.load(GREY_TO_RGB_X2, device=device, dtype="fp32", tile=13, overlap=None, notes=notes)
    assert (up.align, up.tile, up.overlap) == (8, 16, 4)  # window 4 x unshuffle 2; overlap: a quarter of the tile
    up = upscale.Upscaler.load(RGB_X2, device=device, dtype="fp32", tile=512, overlap=None, notes=notes)
    assert (up.align, up.tile, up.overlap) == (4, 512, upscale.DEFAULT_OVERLAP)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_precision_on_cpu(tmp_path: Path, dtype: str) -> None:
    save(tmp_path / "in.png")
    result = run(tmp_path / "in.png", "-m", RGB_X2, "-o", tmp_path / "out.png", "--dtype", dtype, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    full = run(tmp_path / "in.png", "-m", RGB_X2, "-o", tmp_path / "full.png", "--device", "cpu")
    assert full.exit_code == 0
    difference = (read_image(tmp_path / "out.png").colour - read_image(tmp_path / "full.png").colour).abs()
    assert float(difference.mean()) < 0.02
    notes = result.stderr.splitlines()
    assert notes == (
        ["note: --dtype fp16 on CPU works but is about 2x slower than fp32 (few CPUs compute in fp16)"]
        if dtype == "fp16"
        else []
    )


def test_a_scale_guessed_model_warns_on_one_line_and_takes_scale(tmp_path: Path) -> None:
    save(tmp_path / "in.png")
    result = run(tmp_path / "in.png", "-m", GUESSED, "-o", tmp_path / "x4.png")
    assert result.exit_code == 0, result.stderr
    assert [line for line in result.stderr.splitlines()] == [result.stderr.strip()]
    assert result.stderr.startswith("warning: this FDAT checkpoint does not record its scale; loaded as x4")
    assert read_image(tmp_path / "x4.png").describe() == "80x56 RGB 8-bit"
    result = run(tmp_path / "in.png", "-m", GUESSED, "-o", tmp_path / "x2.png", "--scale", "2")
    assert result.exit_code == 0 and result.stderr == ""
    assert read_image(tmp_path / "x2.png").describe() == "40x28 RGB 8-bit"


@pytest.mark.skipif(not default_model_path().is_file(), reason="the bundled default model is not trained yet")
def test_the_bundled_default_model(tmp_path: Path) -> None:
    save(tmp_path / "in.png")
    result = run(tmp_path / "in.png", "-o", tmp_path / "out.png")
    assert result.exit_code == 0, result.stderr
    assert read_image(tmp_path / "out.png").describe() == "40x28 RGB 8-bit"


def test_a_missing_default_model_names_the_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upscale, "default_model_path", lambda: tmp_path / "none.safetensors")
    save(tmp_path / "in.png")
    assert_one_line_error(run(tmp_path / "in.png", "-o", tmp_path / "out.png"), "-m/--model", "default model")


# --- existing outputs and bad images: reported, skipped, exit 1 ---------------------------------


def test_existing_outputs_are_kept_unless_forced(tmp_path: Path) -> None:
    save(tmp_path / "a.png")
    save(tmp_path / "b.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").write_bytes(b"precious")
    result = run(tmp_path / "a.png", tmp_path / "b.png", "-m", RGB_X2, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert (tmp_path / "out" / "a.png").read_bytes() == b"precious"
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'a.png'}: output {tmp_path / 'out' / 'a.png'} exists; skipped (--force overwrites)"
    ]
    assert summary(result).startswith("upscaled 1 of 2 images (1 failed)")
    forced = run(tmp_path / "a.png", tmp_path / "b.png", "-m", RGB_X2, "-o", tmp_path / "out", "--force")
    assert forced.exit_code == 0 and forced.stderr == ""
    assert read_image(tmp_path / "out" / "a.png").describe() == "40x28 RGB 8-bit"


def test_bad_images_are_reported_one_line_each_and_the_rest_done(tmp_path: Path) -> None:
    save(tmp_path / "good.png")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n but nothing more")
    (tmp_path / "notes.txt").write_text("hello")
    Image.new("F", (4, 4)).save(tmp_path / "float.tif")
    save16(tmp_path / "deep.png", 3, alpha=False)
    inputs = ["good.png", "junk.png", "notes.txt", "missing.png", "float.tif", "deep.png"]
    result = run(*(tmp_path / n for n in inputs), "-m", RGB_X2, "-o", tmp_path / "out")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 4, result.stderr
    for name, fragment in [
        ("notes.txt", "not an image file"),
        ("missing.png", "no such file or folder"),
        ("junk.png", "not a PNG, JPEG, WebP or TIFF image"),
        ("float.tif", "32-bit samples"),
    ]:
        assert any(line.startswith(f"{tmp_path / name}: ") and fragment in line for line in lines), (name, lines)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["deep.png", "good.png"]
    assert summary(result).startswith("upscaled 2 of 6 images (4 failed)")


def test_an_image_the_output_format_cannot_hold_fails_alone(tmp_path: Path) -> None:
    save16(tmp_path / "deep.png", 3, alpha=False)
    result = run(tmp_path / "deep.png", "-m", RGB_X2, "-o", tmp_path / "out.jpg")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"{tmp_path / 'deep.png'}: {tmp_path / 'out.jpg'}: JPEG holds 8-bit images only, this one is 16-bit: "
        "write a .png or .tif"
    )
    assert not (tmp_path / "out.jpg").exists()


def test_inputs_sharing_a_name_and_an_output_that_is_the_input(tmp_path: Path) -> None:
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        save(tmp_path / folder / "same.png")
    result = run(tmp_path / "one", tmp_path / "two", "-m", RGB_X2, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert result.stderr.strip().startswith(f"{tmp_path / 'two' / 'same.png'}: its output ")
    assert "already written from" in result.stderr
    result = run(tmp_path / "one", "-m", RGB_X2, "-o", tmp_path / "one", "--force")
    assert result.exit_code == 1 and "is the input itself" in result.stderr
    assert read_image(tmp_path / "one" / "same.png").describe() == "20x14 RGB 8-bit"  # untouched


def test_a_model_that_takes_alpha_but_gives_none_fails_per_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load = upscale.load_model

    def three_out(path: Path, *, scale: int | None = None) -> object:
        descriptor = load(path, scale=scale)
        descriptor.output_channels = 3  # as if the model dropped alpha
        return descriptor

    monkeypatch.setattr(upscale, "load_model", three_out)
    save(tmp_path / "rgba.png", "RGBA")
    result = run(tmp_path / "rgba.png", "-m", RGBA_X2, "-o", f"{tmp_path / 'out'}/")
    assert result.exit_code == 1 and "takes alpha (4 channels) but gives none back (3)" in result.stderr


# --- errors that stop everything: one line, exit 2 ----------------------------------------------


def test_no_inputs_or_no_images(tmp_path: Path) -> None:
    result = run("-m", RGB_X2, "-o", tmp_path / "out")
    assert_one_line_error(result, "Missing argument 'INPUT...'")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run(tmp_path / "empty", "-m", RGB_X2, "-o", tmp_path / "out"), "no input images in")


def test_no_output(tmp_path: Path) -> None:
    assert_one_line_error(run(save(tmp_path / "a.png"), "-m", RGB_X2), "Missing option '-o'")


def test_a_file_output_for_several_images(tmp_path: Path) -> None:
    save(tmp_path / "a.png")
    save(tmp_path / "b.png")
    result = run(tmp_path / "a.png", tmp_path / "b.png", "-m", RGB_X2, "-o", tmp_path / "out.png")
    assert_one_line_error(result, f"-o {tmp_path / 'out.png'}", "2 input images; give a folder")


def test_an_output_folder_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file")
    result = run(save(tmp_path / "a.png"), "-m", RGB_X2, "-o", tmp_path / "taken")
    assert_one_line_error(result, f"-o {tmp_path / 'taken'}", "not a folder")


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        (lambda p: None, ("missing.pth", "no such file")),
        (lambda p: p.write_bytes(b"\x80\x02garbage"), ("missing.pth", "corrupt")),
        (
            lambda p: torch.save({"conv.weight": torch.zeros(1, 1, 3, 3)}, p),
            ("missing.pth", "not an FDAT checkpoint: it has conv.* (keys outside the FDAT layout)"),
        ),
    ],
)
def test_a_bad_model(tmp_path: Path, make: object, fragments: tuple[str, ...]) -> None:
    make(tmp_path / "missing.pth")  # type: ignore[operator]
    result = run(save(tmp_path / "a.png"), "-m", tmp_path / "missing.pth", "-o", tmp_path / "out")
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "out").exists()


def test_bad_tiling_options(tmp_path: Path) -> None:
    image = save(tmp_path / "a.png")
    result = run(image, "-m", RGB_X2, "-o", tmp_path / "o", "--tile", "64", "--overlap", "40")
    assert_one_line_error(result, "--overlap 40", "at most half the tile (64)")
    assert_one_line_error(run(image, "-m", RGB_X2, "-o", tmp_path / "o", "--tile", "-1"), "--tile")
    assert_one_line_error(run(image, "-m", RGB_X2, "-o", tmp_path / "o", "--dtype", "fp64"), "--dtype")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_when_unavailable(tmp_path: Path) -> None:
    result = run(save(tmp_path / "a.png"), "-m", RGB_X2, "-o", tmp_path / "o", "--device", "cuda")
    assert_one_line_error(result, "--device cuda: CUDA is not available")


def test_mps_when_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    result = run(save(tmp_path / "a.png"), "-m", RGB_X2, "-o", tmp_path / "o", "--device", "mps")
    assert_one_line_error(result, "--device mps: Apple's MPS backend is not available")


@pytest.mark.parametrize(("dtype", "flag"), [("fp16", "supports_half"), ("bf16", "supports_bfloat16")])
def test_a_dtype_the_model_does_not_support(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: str, flag: str
) -> None:
    load = upscale.load_model

    def without(path: Path, *, scale: int | None = None) -> object:
        descriptor = load(path, scale=scale)
        setattr(descriptor, flag, False)
        return descriptor

    monkeypatch.setattr(upscale, "load_model", without)
    result = run(save(tmp_path / "a.png"), "-m", RGB_X2, "-o", tmp_path / "o", "--dtype", dtype)
    assert_one_line_error(result, f"--dtype {dtype}: this model does not support")


def test_debug_prints_the_traceback_first(tmp_path: Path) -> None:
    result = run(save(tmp_path / "a.png"), "-m", tmp_path / "missing.pth", "-o", tmp_path / "o", "--debug")
    assert result.exit_code == 2
    assert result.stderr.startswith("Traceback") and result.stderr.splitlines()[-1].startswith("spandrel-fdat: error:")


def test_help_lists_every_flag() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for flag in ("-m, --model", "-o, --output", "--tile", "--overlap", "--dtype", "--device", "--force", "--debug"):
        assert flag in result.stdout


def test_pillows_size_limit_warns_or_refuses_on_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = save(tmp_path / "big.png")  # 280 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # above the limit: a warning; above twice: an error
    result = run(image, "-m", RGB_X2, "-o", tmp_path / "warned.png")
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [result.stderr.strip()] and "big.png: warning: Image size (280 pixels)" in (
        result.stderr
    )
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    result = run(image, "-m", RGB_X2, "-o", tmp_path / "refused.png")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "decompression bomb" in result.stderr
