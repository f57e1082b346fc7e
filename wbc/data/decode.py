"""Read any common image file as an H x W x 3 uint8 RGB array, or fail with an ``ImageReadError`` that names
the file and says what is wrong with it.

Conversion rules (fixed, so that a pixel's value never depends on the rest of the image):

* EXIF orientation is applied (the table of ``ImageOps.exif_transpose``); multi-frame files give frame 0.
* Palette, grey, CMYK (Adobe-inverted included), YCbCr, LAB and HSV images go through PIL's RGB conversion.
* Transparency (RGBA, LA, PA, palette or colour-key transparency) is composited over a white background,
  the colour of an empty microscope slide.
* 16-bit integer images (grey, or RGB/RGBA per channel) map to 8 bits as ``round(v / 257)``: 0 -> 0,
  65535 -> 255, a fixed scaling rather than a per-image stretch. 32-bit integer images are clipped to
  0..65535 first. Grey is replicated to three channels.
* Float images are taken to be in 0..1 when their maximum is <= 1, else in 0..255, and are clipped.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import cv2
import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

try:  # libjpeg-turbo with DCT scaling, faster than PIL for plain JPEGs; optional: PIL decodes everything
    import simplejpeg
except ImportError:  # pragma: no cover
    simplejpeg = None

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# PIL's own default for Image.MAX_IMAGE_PIXELS, fixed here so that a caller changing PIL's global cannot
# change ours.
DEFAULT_MAX_PIXELS: int = 1024 * 1024 * 1024 // 4 // 3  # 89,478,485

_ALPHA_MODES = ("RGBA", "LA", "PA")
_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")

# How to undo each EXIF orientation on an H x W (x C) array: the same table as ImageOps.exif_transpose,
# in numpy so that it also serves arrays decoded by OpenCV.
_UNDO_ORIENTATION: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],  # FLIP_LEFT_RIGHT
    3: lambda a: a[::-1, ::-1],  # ROTATE_180
    4: lambda a: a[::-1],  # FLIP_TOP_BOTTOM
    5: lambda a: a.swapaxes(0, 1),  # TRANSPOSE
    6: lambda a: np.rot90(a, -1),  # ROTATE_270 (counter-clockwise), i.e. 90 degrees clockwise
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # TRANSVERSE
    8: lambda a: np.rot90(a, 1),  # ROTATE_90
}


class ImageReadError(Exception):
    """An image that cannot be read. ``str(err)`` is ``f"{path}: {problem}"``."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        # Both go to Exception.__init__ so that the error pickles (e.g. out of a multiprocessing worker).
        super().__init__(os.fsdecode(path), problem)
        self.path: str = os.fsdecode(path)
        self.problem: str = problem

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` has one of ``IMAGE_EXTENSIONS`` (case-insensitive); the file is not opened."""
    return os.fsdecode(path).lower().endswith(IMAGE_EXTENSIONS)


def read_image(
    path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS, min_size: int | None = None
) -> np.ndarray:
    """Return the image at ``path`` as a writable, C-contiguous H x W x 3 uint8 RGB array, or raise
    ``ImageReadError``.

    An image whose header announces more than ``max_pixels`` pixels is refused before it is decoded
    (``None``: no limit). ``min_size``: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling,
    an antialiased reduction) as long as both sides stay >= ``min_size``: 2-3x faster when the caller shrinks
    the image anyway.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory") from None
    except PermissionError:
        # Windows answers PermissionError for a directory.
        problem = "is a directory" if os.path.isdir(path) else "permission denied"
        raise ImageReadError(path, problem) from None
    except OSError as e:
        raise ImageReadError(path, f"cannot read file ({e.strerror or e})") from None
    return decode_image_bytes(data, os.fsdecode(path), max_pixels, min_size)


def decode_image_bytes(
    data: bytes, name: str, max_pixels: int | None = DEFAULT_MAX_PIXELS, min_size: int | None = None
) -> np.ndarray:
    """``read_image`` for the bytes of a file already read; ``name`` is what error messages call it."""
    if not data:
        raise ImageReadError(name, "empty file (0 bytes)")
    fast = _simplejpeg_decode(data, name, max_pixels, min_size)
    if fast is not None:
        return fast
    with _quiet_decoding():
        try:
            img = Image.open(io.BytesIO(data))
        except Exception as e:
            # PIL cannot open some formats OpenCV can, e.g. float or unusual 16-bit RGB TIFFs. They have
            # no header check, so the size is checked after decoding (OpenCV caps it at 2**30 pixels).
            arr = _cv2_decode(data)
            if arr is None:
                raise ImageReadError(name, f"not a readable image ({_reason(e)})") from None
            _check_size(name, arr.shape[1], arr.shape[0], max_pixels)
            return _to_rgb8(arr)
        with img:
            _check_size(name, *img.size, max_pixels)
            high_depth_colour = _is_16bit_colour(img)  # must be asked before load(), which clears the tiles
            if min_size and img.format == "JPEG" and img.mode in ("RGB", "L", "CMYK"):
                img.draft(img.mode, (min_size, min_size))
            try:
                img.load()
                orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
                arr = _cv2_decode(data) if high_depth_colour else None
                if arr is None:
                    arr = _pil_to_array(img)
            except Exception as e:
                raise ImageReadError(name, f"truncated or corrupt image data ({_reason(e)})") from None
    undo = _UNDO_ORIENTATION.get(orientation)
    return _to_rgb8(undo(arr) if undo else arr)


def _simplejpeg_decode(data: bytes, name: str, max_pixels: int | None, min_size: int | None) -> np.ndarray | None:
    """A plain colour JPEG through simplejpeg (libjpeg-turbo, with the same DCT scaling as PIL's draft mode:
    identical pixels, about a quarter less time); None for anything else (EXIF orientation, CMYK or grey,
    progressive oddities, damaged data, simplejpeg not installed), which takes the general path."""
    if simplejpeg is None or data[:2] != b"\xff\xd8" or b"Exif" in data[:65536]:
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("YCbCr", "RGB"):
            return None
        _check_size(name, width, height, max_pixels)
        kw = {}
        if min_size:  # PIL's draft scale (1/1, 1/2, 1/4 or 1/8), so that both paths give the same pixels
            fit = min(width // min_size, height // min_size)
            k = max(f for f in (1, 2, 4, 8) if f <= max(1, fit))
            kw = {"min_height": -(-height // k), "min_width": -(-width // k)}
        return simplejpeg.decode_jpeg(data, colorspace="RGB", **kw)
    except ValueError:
        return None  # the general path names the problem


def _check_size(name: str, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageReadError(
            name,
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
            "(decompression-bomb guard)",
        )


def _reason(e: Exception) -> str:
    if isinstance(e, UnidentifiedImageError):
        return "cannot identify image file"  # PIL's message goes on with the repr of our BytesIO
    return str(e) or type(e).__name__


def _is_16bit_colour(img: Image.Image) -> bool:
    """Whether PIL would read 16-bit-per-channel colour as 8 bits (it keeps the high byte, v >> 8, which
    is not our rounding rule); such files are decoded again by OpenCV."""
    if img.mode not in ("RGB", "RGBA", "LA") or not img.tile:
        return False
    args = img.tile[0][3]  # the decoder arguments: the raw mode, or a tuple that starts with it
    rawmode = args if isinstance(args, str) else args[0] if args else ""
    return ";16" in str(rawmode)


def _cv2_decode(data: bytes) -> np.ndarray | None:
    """Decode with OpenCV at the file's own depth, channels in RGB(A) order; None if OpenCV cannot."""
    try:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    except cv2.error:
        return None
    if arr is not None and arr.ndim == 3 and arr.shape[2] >= 3:
        arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]
    return arr


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """The decoded image as an array: 16-bit, 32-bit and float grey as they are, anything with
    transparency as RGBA, everything else as 8-bit RGB."""
    if img.mode in _HIGH_DEPTH_MODES:
        return np.asarray(img)
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        return np.asarray(img.convert("RGBA"))
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))


def _to_rgb8(arr: np.ndarray) -> np.ndarray:
    """H x W, or H x W x C with C in 1..4 (alpha last when C is 2 or 4), any depth -> H x W x 3 uint8."""
    arr = _to_uint8(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] in (2, 4):
        colour, alpha = arr[..., :-1].astype(np.uint32), arr[..., -1:].astype(np.uint32)
        arr = ((colour * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)  # over white
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    # Arrays PIL hands over are read-only views of its bytes; callers may augment in place.
    return np.require(arr, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"])


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind == "f":
        arr = np.nan_to_num(arr.astype(np.float64))
        if arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    v = np.clip(arr, 0, 65535).astype(np.uint32)
    return ((v + 128) // 257).astype(np.uint8)  # round(v / 257)


_quiet_lock = threading.Lock()
_quiet_users = 0
_quiet_saved: tuple[int | None, int] = (None, 0)


@contextmanager
def _quiet_decoding() -> Iterator[None]:
    """While any thread decodes: PIL's global decompression-bomb check off (the per-call ``max_pixels``
    replaces it, and PIL's would warn, or raise before the size is known), OpenCV's logging silenced (it
    prints to stderr about broken files) and warnings ignored (PIL warns about e.g. corrupt EXIF). The
    last thread out restores PIL's limit and OpenCV's log level."""
    global _quiet_users, _quiet_saved
    with _quiet_lock:
        if _quiet_users == 0:
            _quiet_saved = (Image.MAX_IMAGE_PIXELS, cv2.utils.logging.getLogLevel())
            Image.MAX_IMAGE_PIXELS = None
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        _quiet_users += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        with _quiet_lock:
            _quiet_users -= 1
            if _quiet_users == 0:
                Image.MAX_IMAGE_PIXELS = _quiet_saved[0]
                cv2.utils.logging.setLogLevel(_quiet_saved[1])
