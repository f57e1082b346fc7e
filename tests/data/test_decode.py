"""wbc.data.decode: every file the readers meet becomes H x W x 3 uint8 RGB, or a clear ImageReadError."""

from __future__ import annotations

import os
import pickle
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from wbc.data.decode import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageReadError,
    decode_image_bytes,
    is_image_file,
    read_image,
)

# Any warning raised while a test runs fails it: the reader must stay silent.
pytestmark = pytest.mark.filterwarnings("error")

RNG = np.random.default_rng(0)


def _noise(h: int = 24, w: int = 32) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _check_rgb8(arr: np.ndarray, shape: tuple[int, int]) -> None:
    assert isinstance(arr, np.ndarray)
    assert arr.dtype == np.uint8 and arr.shape == (*shape, 3)
    assert arr.flags.c_contiguous and arr.flags.writeable


def _expect_error(path: Path | str, problem_start: str, **kwargs) -> ImageReadError:
    with pytest.raises(ImageReadError) as info:
        read_image(path, **kwargs)
    err = info.value
    assert str(err).startswith(str(path)) and err.path == str(path)
    assert err.problem.startswith(problem_start), err.problem
    assert str(err) == f"{path}: {err.problem}"
    return err


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose IHDR claims ``width`` x ``height`` RGB pixels, with no pixel data at all."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


# --- what reads ---------------------------------------------------------------------------------------


def test_rgb_png_round_trip_is_exact(tmp_path: Path) -> None:
    pixels = _noise()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    _check_rgb8(out, (24, 32))
    np.testing.assert_array_equal(out, pixels)


def test_rgb_jpeg_round_trip(tmp_path: Path) -> None:
    pixels = np.zeros((32, 48, 3), np.uint8)
    pixels[:, :24] = (200, 30, 60)
    pixels[:, 24:] = (20, 180, 240)
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=95)
    out = read_image(str(tmp_path / "a.jpg"))
    _check_rgb8(out, (32, 48))
    assert np.abs(out.astype(int) - pixels).mean() < 3


def test_grey_png_gives_three_equal_channels(tmp_path: Path) -> None:
    grey = _noise()[..., 0]
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    _check_rgb8(out, (24, 32))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


def test_rgba_png_is_composited_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 0)  # transparent
    rgba[0, 1] = (10, 20, 30, 255)  # opaque
    rgba[0, 2] = (0, 0, 0, 128)  # half transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    out = read_image(tmp_path / "t.png")
    _check_rgb8(out, (2, 3))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [10, 20, 30]
    assert out[0, 2].tolist() == [127, 127, 127]


def test_palette_png_and_palette_transparency(tmp_path: Path) -> None:
    pixels = np.zeros((4, 4, 3), np.uint8)
    pixels[:2] = (255, 0, 0)
    pixels[2:] = (0, 0, 255)
    pal = Image.fromarray(pixels).quantize(colors=2)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), pixels)

    red_index = pal.getpixel((0, 0))
    pal.save(tmp_path / "pt.png", transparency=red_index)
    out = read_image(tmp_path / "pt.png")
    assert (out[:2] == 255).all() and out[2:].tolist() == pixels[2:].tolist()


def test_cmyk_jpeg(tmp_path: Path) -> None:
    cmyk = (0, 200, 255, 40)
    Image.new("CMYK", (16, 16), cmyk).save(tmp_path / "c.jpg", quality=95)
    expected = np.array(Image.new("CMYK", (1, 1), cmyk).convert("RGB").getpixel((0, 0)))
    out = read_image(tmp_path / "c.jpg")
    _check_rgb8(out, (16, 16))
    assert np.abs(out.astype(int) - expected).max() <= 6


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_grey(tmp_path: Path, suffix: str) -> None:
    grey = np.array([[65535, 257 * 100, 0, 128, 129]], np.uint16)
    cv2.imwrite(str(tmp_path / f"g16{suffix}"), grey)
    out = read_image(tmp_path / f"g16{suffix}")
    _check_rgb8(out, (1, 5))
    assert out[..., 0].tolist() == [[255, 100, 0, 0, 1]]
    assert (out == out[..., :1]).all()


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_colour_uses_the_rounding_rule(tmp_path: Path, suffix: str) -> None:
    # 1000 / 257 = 3.89 -> 4, where PIL's own reading (the high byte) would give 3.
    rgb = np.array([[[65535, 257 * 100, 1000], [0, 128, 129]]], np.uint16)
    cv2.imwrite(str(tmp_path / f"c16{suffix}"), rgb[..., ::-1])  # OpenCV writes BGR
    out = read_image(tmp_path / f"c16{suffix}")
    _check_rgb8(out, (1, 2))
    assert out.tolist() == [[[255, 100, 4], [0, 0, 1]]]


def test_16bit_rgba_png(tmp_path: Path) -> None:
    bgra = np.array([[[1000, 25700, 65535, 65535], [0, 0, 0, 0]]], np.uint16)
    cv2.imwrite(str(tmp_path / "a16.png"), bgra)
    assert read_image(tmp_path / "a16.png").tolist() == [[[255, 100, 4], [255, 255, 255]]]


def test_float_images(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0.0, 0.2, 1.0]], np.float32), "F").save(tmp_path / "unit.tif")
    assert read_image(tmp_path / "unit.tif")[..., 0].tolist() == [[0, 51, 255]]
    Image.fromarray(np.array([[0.0, 200.0, 300.0]], np.float32), "F").save(tmp_path / "byte.tif")
    assert read_image(tmp_path / "byte.tif")[..., 0].tolist() == [[0, 200, 255]]


def test_float_rgb_tiff_that_pil_cannot_open(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    bgr = np.zeros((2, 2, 3), np.float32)
    bgr[..., 2] = 1.0  # red
    bgr[..., 1] = 0.2
    cv2.imwrite(str(tmp_path / "f.tif"), bgr)
    out = read_image(tmp_path / "f.tif")
    _check_rgb8(out, (2, 2))
    assert (out == (255, 51, 0)).all()
    assert capfd.readouterr() == ("", "")


def test_first_frame_of_an_animated_gif(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert (read_image(tmp_path / "a.gif") == (255, 0, 0)).all()


def test_exif_rotated_jpeg(tmp_path: Path) -> None:
    pixels = np.zeros((16, 32, 3), np.uint8)
    pixels[:, :16] = (255, 0, 0)  # left half red
    pixels[:, 16:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: to be turned 90 degrees clockwise for display
    Image.fromarray(pixels).save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "r.jpg")
    _check_rgb8(out, (32, 16))
    assert out[:14, :, 0].min() > 200 and out[:14, :, 2].max() < 50  # the left half is now on top
    assert out[18:, :, 2].min() > 200


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pil(tmp_path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(_noise(5, 7)).save(tmp_path / "o.png", exif=exif)
    with Image.open(tmp_path / "o.png") as img:
        expected = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / "o.png"), expected)


def test_lossless_webp_reads_exactly(tmp_path: Path) -> None:
    pixels = _noise(9, 7)
    Image.fromarray(pixels).save(tmp_path / "cell.webp", lossless=True)
    np.testing.assert_array_equal(read_image(tmp_path / "cell.webp"), pixels)


def test_non_ascii_file_name(tmp_path: Path) -> None:
    path = tmp_path / "zelle_ñ_白血球.png"
    pixels = _noise(8, 8)
    Image.fromarray(pixels).save(path)
    np.testing.assert_array_equal(read_image(path), pixels)
    _expect_error(tmp_path / "fehlt_ñ_白血球.png", "no such file")


def test_decode_image_bytes(tmp_path: Path) -> None:
    pixels = _noise(6, 5)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    np.testing.assert_array_equal(decode_image_bytes((tmp_path / "a.png").read_bytes(), "x"), pixels)
    with pytest.raises(ImageReadError, match=r"^archive\.zip:cell\.png: empty file \(0 bytes\)$"):
        decode_image_bytes(b"", "archive.zip:cell.png")


def test_is_image_file() -> None:
    assert IMAGE_EXTENSIONS == tuple(e.lower() for e in IMAGE_EXTENSIONS)
    for name in ("a.jpg", "B.JPG", "c.Jpeg", "d.PNG", "e.bmp", "f.TIF", "g.tiff", "i.WebP", Path("dir/h.png")):
        assert is_image_file(name), name
    for name in ("a.txt", "png", "a.png.bak", "a.gif", "jpg"):
        assert not is_image_file(name), name


# --- what fails, and how ------------------------------------------------------------------------------


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    err = _expect_error(tmp_path / "empty.jpg", "empty file (0 bytes)")
    assert err.problem == "empty file (0 bytes)"


def test_missing_file_and_directory(tmp_path: Path) -> None:
    _expect_error(tmp_path / "missing.png", "no such file")
    (tmp_path / "dir.png").mkdir()
    _expect_error(tmp_path / "dir.png", "is a directory")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "locked.png"
    Image.new("RGB", (2, 2)).save(path)
    path.chmod(0)
    _expect_error(path, "permission denied")


def test_files_that_are_not_images(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.png").write_text("not an image, just text\n")
    _expect_error(tmp_path / "notes.png", "not a readable image (cannot identify image file")
    # The AppleDouble file macOS leaves next to cell.jpg on a foreign file system.
    apple_double = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(4000)
    (tmp_path / "._cell.jpg").write_bytes(apple_double)
    _expect_error(tmp_path / "._cell.jpg", "not a readable image (")
    # A PNG signature followed by garbage: PIL gives its own reason.
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage " * 10)
    _expect_error(tmp_path / "bad.png", "not a readable image (")
    assert capfd.readouterr() == ("", "")  # nothing printed, by PIL or by the OpenCV fallback


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image(tmp_path: Path, fmt: str, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / f"cut.{fmt.lower()}"
    Image.fromarray(_noise(64, 64)).save(path, fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _expect_error(path, "truncated or corrupt image data (image file is truncated")
    assert capfd.readouterr() == ("", "")


def test_truncated_16bit_colour_png(tmp_path: Path) -> None:
    path = tmp_path / "cut16.png"
    cv2.imwrite(str(path), RNG.integers(0, 65536, (32, 32, 3), dtype=np.uint16))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _expect_error(path, "truncated or corrupt image data (")


def test_pixel_limit(tmp_path: Path) -> None:
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    err = _expect_error(tmp_path / "big.png", "image is 100x100", max_pixels=5000)
    assert err.problem == ("image is 100x100 = 10,000 pixels, over the limit of 5,000 (decompression-bomb guard)")
    assert read_image(tmp_path / "big.png", max_pixels=10_000).shape == (100, 100, 3)
    assert read_image(tmp_path / "big.png", max_pixels=None).shape == (100, 100, 3)


@pytest.mark.parametrize("side", [10_000, 20_000])  # PIL itself would warn at 10000^2, raise at 20000^2
def test_decompression_bomb_header_is_refused_before_decoding(tmp_path: Path, side: int) -> None:
    path = tmp_path / "bomb.png"
    _png_header_only(path, side, side)
    pil_limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        err = _expect_error(path, f"image is {side}x{side} = {side * side:,} pixels")
    assert err.problem.endswith(f"over the limit of {DEFAULT_MAX_PIXELS:,} (decompression-bomb guard)")
    assert Image.MAX_IMAGE_PIXELS == pil_limit  # PIL's own global guard is back as it was


def test_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(ImageReadError("a/b.png", "no such file")))
    assert (err.path, err.problem, str(err)) == ("a/b.png", "no such file", "a/b.png: no such file")


def test_min_size_decodes_a_jpeg_at_reduced_scale(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "big.jpg"
    Image.fromarray(rng.integers(0, 256, (360, 363, 3), dtype=np.uint8)).save(path)
    assert read_image(path).shape == (360, 363, 3)
    assert read_image(path, min_size=64).shape == (90, 91, 3)  # 1/4 scale: both sides still >= 64
    assert read_image(path, min_size=128).shape == (180, 182, 3)
    png = tmp_path / "big.png"
    Image.fromarray(rng.integers(0, 256, (360, 363, 3), dtype=np.uint8)).save(png)
    assert read_image(png, min_size=64).shape == (360, 363, 3)  # only JPEG has a reduced-scale decode


def test_fast_jpeg_path_gives_pils_pixels(pbc_root, monkeypatch):
    """Plain colour JPEGs go through simplejpeg (libjpeg-turbo): the same pixels as PIL's path, at full and at
    reduced (DCT) scale, on real PBC files."""
    import wbc.data.decode as decode

    if decode.simplejpeg is None:
        pytest.skip("simplejpeg not installed")
    files = sorted(pbc_root.glob("*/*.jpg"))[::500][:12]
    fast = [[decode.read_image(f, min_size=m) for m in (None, 64, 128)] for f in files]
    monkeypatch.setattr(decode, "simplejpeg", None)
    for f, images in zip(files, fast, strict=True):
        for image, m in zip(images, (None, 64, 128), strict=True):
            slow = decode.read_image(f, min_size=m)
            assert image.shape == slow.shape and np.array_equal(image, slow), (f, m)
            assert image.flags.writeable and image.flags.c_contiguous
