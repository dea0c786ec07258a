"""Image files as float tensors (`spandrel_fdat.images`): every format, bit depth, grey/RGB, alpha, ICC.

PNG and TIFF round trips are exact at 8 and 16 bits; JPEG and WebP are lossy, so only close.
Files written here are also opened with Pillow, an independent reader, to check that they are
ordinary files of the promised kind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageCms

from spandrel_fdat.images import FloatImage, ImageFileError, image_format, read_image, write_image

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def levels(depth: int, *shape: int, seed: int = 0) -> torch.Tensor:
    """Random values that a `depth`-bit file holds exactly."""
    top = 2**depth - 1
    return torch.randint(0, top + 1, shape, generator=torch.Generator().manual_seed(seed)).float() / top


def smooth(channels: int, height: int = 24, width: int = 32) -> torch.Tensor:
    """A smooth picture (lossy codecs keep it close)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    return torch.stack([(x + y) / 2, x, 1 - y][:channels])


@pytest.mark.parametrize("ext", [".png", ".tif", ".tiff", ".PNG"])
@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize(("channels", "alpha"), [(1, False), (1, True), (3, False), (3, True)])
def test_png_and_tiff_round_trips_are_exact(tmp_path: Path, ext: str, depth: int, channels: int, alpha: bool) -> None:
    colour = levels(depth, channels, 9, 7, seed=1)
    mask = levels(depth, 1, 9, 7, seed=2) if alpha else None
    path = tmp_path / f"image{ext}"
    write_image(FloatImage(colour, mask, depth, SRGB), path)
    back = read_image(path)
    assert back.bit_depth == depth and back.channels == channels and (back.alpha is not None) == alpha
    assert torch.equal(back.colour, colour)
    if mask is not None:
        assert back.alpha is not None and torch.equal(back.alpha, mask)
    assert back.icc_profile == SRGB
    if depth == 16 and channels == 1 and alpha and ext.startswith(".tif"):
        return  # Pillow cannot open 16-bit grey+alpha TIFFs at all
    # an independent reader opens it (Pillow cuts 16-bit colour to 8 bits, 16-bit grey+alpha PNG to RGBA)
    with Image.open(path) as pillow:
        kinds = {(1, False): "L", (1, True): "LA", (3, False): "RGB", (3, True): "RGBA"}
        assert pillow.size == (7, 9)
        if depth == 8:
            assert pillow.mode == kinds[(channels, alpha)]


def test_sixteen_bit_colour_png_is_a_standard_file(tmp_path: Path) -> None:
    colour = levels(16, 3, 5, 6, seed=3)
    write_image(FloatImage(colour, None, 16), tmp_path / "rgb16.png")
    raw = (tmp_path / "rgb16.png").read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[24] == 16 and raw[25] == 2  # IHDR: 16 bits, truecolour
    with Image.open(tmp_path / "rgb16.png") as pillow:  # Pillow reads it, keeping the high bytes
        high = np.asarray(pillow.convert("RGB")).astype(np.int32)
    expected = (colour * 65535).round().numpy().transpose(1, 2, 0).astype(np.int32) >> 8
    assert np.abs(high - expected).max() <= 1


def test_sixteen_bit_grey_png_from_pillow(tmp_path: Path) -> None:
    values = np.arange(0, 65535, 65535 // 20, dtype=np.uint16)[:20].reshape(4, 5)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    back = read_image(tmp_path / "grey16.png")
    assert back.bit_depth == 16 and back.channels == 1
    assert torch.equal(back.colour[0], torch.from_numpy(values.astype(np.float32)) / 65535)


@pytest.mark.parametrize(("ext", "channels", "alpha"), [(".jpg", 3, False), (".jpeg", 1, False), (".webp", 3, True)])
def test_lossy_formats_are_close(tmp_path: Path, ext: str, channels: int, alpha: bool) -> None:
    colour = smooth(channels)
    mask = smooth(1) if alpha else None
    write_image(FloatImage(colour, mask, 8), tmp_path / f"x{ext}")
    back = read_image(tmp_path / f"x{ext}")
    assert back.bit_depth == 8 and back.channels == channels and (back.alpha is not None) == alpha
    assert float((back.colour - colour).abs().mean()) < 0.02


def test_webp_has_no_grey_mode(tmp_path: Path) -> None:
    write_image(FloatImage(smooth(1), None, 8), tmp_path / "grey.webp")
    assert read_image(tmp_path / "grey.webp").channels == 3  # the format stores RGB


def test_jpeg_keeps_the_icc_profile(tmp_path: Path) -> None:
    write_image(FloatImage(smooth(3), None, 8, SRGB), tmp_path / "x.jpg")
    assert read_image(tmp_path / "x.jpg").icc_profile == SRGB


# --- what Pillow hands over in other modes ----------------------------------------------------


def test_palette_with_transparency_becomes_rgba(tmp_path: Path) -> None:
    palette = Image.new("P", (4, 3))
    palette.putpalette([0, 0, 0, 255, 0, 0])
    palette.paste(1, (0, 0, 2, 3))  # the left half: index 1, transparent
    palette.save(tmp_path / "p.png", transparency=1)
    back = read_image(tmp_path / "p.png")
    assert back.channels == 3 and back.alpha is not None
    assert back.alpha[0, 0].tolist() == [0, 0, 1, 1]


def test_grey_with_a_transparent_level_becomes_grey_and_alpha(tmp_path: Path) -> None:
    Image.fromarray(np.arange(20, dtype=np.uint8).reshape(4, 5)).save(tmp_path / "l.png", transparency=3)
    back = read_image(tmp_path / "l.png")
    assert back.channels == 1 and back.alpha is not None
    assert back.alpha.flatten().tolist()[:5] == [1, 1, 1, 0, 1]


@pytest.mark.parametrize(("mode", "channels"), [("1", 1), ("P", 3), ("CMYK", 3)])
def test_other_modes_become_grey_or_rgb(tmp_path: Path, mode: str, channels: int) -> None:
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    Image.new(mode, (4, 4)).save(path)
    back = read_image(path)
    assert back.channels == channels and back.alpha is None and back.bit_depth == 8


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (8, 4)).save(tmp_path / "turned.jpg", exif=exif)
    back = read_image(tmp_path / "turned.jpg")
    assert (back.width, back.height) == (4, 8)


# --- 16-bit TIFF variants (tifffile) ----------------------------------------------------------


def test_planar_tiff_is_read_as_rgb(tmp_path: Path) -> None:
    planes = (np.arange(3 * 4 * 5, dtype=np.uint16) * 1000).reshape(3, 4, 5)  # (S, H, W)
    tifffile.imwrite(tmp_path / "planar.tif", planes, photometric="rgb", planarconfig="separate")
    back = read_image(tmp_path / "planar.tif")
    assert back.channels == 3 and back.bit_depth == 16
    assert torch.equal(back.colour, torch.from_numpy(planes.astype(np.float32)) / 65535)


def test_min_is_white_tiff_is_inverted(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "white.tif", np.zeros((3, 3), np.uint16), photometric="miniswhite")
    back = read_image(tmp_path / "white.tif")
    assert back.channels == 1 and float(back.colour.min()) == 1.0


def test_premultiplied_alpha_tiff_is_unpremultiplied(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), np.uint16)
    rgba[..., :3], rgba[..., 3] = 16384, 32768  # colour 0.25 at alpha 0.5: straight colour 0.5
    tifffile.imwrite(tmp_path / "assoc.tif", rgba, photometric="rgb", extrasamples=["assocalpha"])
    back = read_image(tmp_path / "assoc.tif")
    assert back.alpha is not None
    torch.testing.assert_close(back.colour, torch.full((3, 2, 2), 0.5), atol=1e-4, rtol=0)


def test_eight_bit_tiff_goes_through_pillow(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "rgb8.tif", np.full((3, 4, 3), 51, np.uint8), photometric="rgb")
    back = read_image(tmp_path / "rgb8.tif")
    assert back.bit_depth == 8 and torch.allclose(back.colour, torch.full((3, 3, 4), 0.2))


# --- errors: one line naming the file ---------------------------------------------------------


def one_line(error: pytest.ExceptionInfo[ImageFileError], path: Path, *fragments: str) -> None:
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(path)) and error.value.path == str(path)
    for fragment in fragments:
        assert fragment in message


def test_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageFileError) as error:
        read_image(tmp_path / "junk.png")
    one_line(error, tmp_path / "junk.png", "not a PNG, JPEG, WebP or TIFF image")
    with pytest.raises(ImageFileError) as error:
        read_image(tmp_path / "missing.png")
    one_line(error, tmp_path / "missing.png", "No such file")
    Image.new("RGB", (64, 64)).save(tmp_path / "cut.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "cut.png").read_bytes()[:60])
    with pytest.raises(ImageFileError) as error:
        read_image(tmp_path / "cut.png")
    one_line(error, tmp_path / "cut.png", "cannot read")


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: Image.new("F", (3, 3)).save(p), "32-bit samples"),
        (lambda p: tifffile.imwrite(p, np.zeros((3, 3), np.int16)), "unsigned 16-bit"),
        (lambda p: tifffile.imwrite(p, np.zeros((3, 3, 3), np.uint16), photometric="ycbcr"), "photometric"),
    ],
)
def test_unsupported_tiffs(tmp_path: Path, make: object, fragment: str) -> None:
    path = tmp_path / "x.tif"
    make(path)  # type: ignore[operator]
    with pytest.raises(ImageFileError) as error:
        read_image(path)
    one_line(error, path, fragment)


def test_a_codec_tifffile_lacks_is_named(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    try:
        import imagecodecs  # noqa: F401

        pytest.skip("imagecodecs is installed: LZW is readable")
    except ImportError:
        pass
    # a 16-bit LZW TIFF, written by Pillow's libtiff from a 16-bit grey image
    Image.fromarray(np.full((4, 4), 1000, np.uint16)).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    with pytest.raises(ImageFileError) as error:
        read_image(tmp_path / "lzw.tif")
    one_line(error, tmp_path / "lzw.tif", "imagecodecs")


@pytest.mark.parametrize(
    ("name", "image", "fragment"),
    [
        ("x.jpg", FloatImage(smooth(3), None, 16), "8-bit images only"),
        ("x.webp", FloatImage(smooth(3), None, 16), "8-bit images only"),
        ("x.jpg", FloatImage(smooth(3), smooth(1), 8), "no alpha channel"),
        ("x.gif", FloatImage(smooth(3), None, 8), "expected one of the extensions"),
        ("missing/x.png", FloatImage(smooth(3), None, 8), "cannot write"),
    ],
)
def test_unwritable(tmp_path: Path, name: str, image: FloatImage, fragment: str) -> None:
    with pytest.raises(ImageFileError) as error:
        write_image(image, tmp_path / name)
    one_line(error, tmp_path / name, fragment)
    assert not any(p.name.endswith(".partial") for p in tmp_path.rglob("*"))


def test_a_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import spandrel_fdat.images as images

    def broken(*args: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(images, "_write_pillow", broken)
    with pytest.raises(ImageFileError, match="disk on fire"):
        write_image(FloatImage(smooth(3), None, 8), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_values_outside_zero_one_are_clamped(tmp_path: Path) -> None:
    colour = torch.tensor([[[-0.5, 0.5, 1.5]]])
    write_image(FloatImage(colour, None, 8), tmp_path / "c.png")
    assert read_image(tmp_path / "c.png").colour.flatten().tolist() == pytest.approx([0.0, 128 / 255, 1.0])


def test_float_image_checks_its_planes() -> None:
    with pytest.raises(ValueError, match="colour planes"):
        FloatImage(torch.zeros(2, 3, 3), None, 8)
    with pytest.raises(ValueError, match="alpha plane"):
        FloatImage(torch.zeros(3, 3, 3), torch.zeros(1, 2, 3), 8)
    with pytest.raises(ValueError, match="bit depth"):
        FloatImage(torch.zeros(3, 3, 3), None, 12)
    assert FloatImage(torch.zeros(3, 4, 5), torch.zeros(1, 4, 5), 16).describe() == "5x4 RGBA 16-bit"


def test_image_format_by_extension() -> None:
    assert [image_format(n) for n in ("a.PNG", "b.jpeg", "c.Tif", "d.webp", "e.gif", "f")] == [
        "PNG",
        "JPEG",
        "TIFF",
        "WEBP",
        None,
        None,
    ]
