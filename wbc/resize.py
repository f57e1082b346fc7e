"""The resampling steps of the pipeline: antialiased reduction and the plain (non-SR) upscales."""

from __future__ import annotations

import cv2
import numpy as np

# cv2 interpolation used by each plain resize. INTER_AREA is the antialiased reduction (a box filter at
# integer factors), what a coarser camera sensor integrates.
_UPSCALE = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}


def resize_to(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop an RGB uint8 image to a square and resize it to ``size`` x ``size``.

    Cells are centred in their images, so the crop loses background, not cell; shrinking uses the area filter,
    enlarging bicubic interpolation.
    """
    h, w = image.shape[:2]
    if h != w:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        image = image[top : top + side, left : left + side]
        h = w = side
    if h == size:
        return np.ascontiguousarray(image)
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interp)


def reduce(image: np.ndarray, factor: int) -> np.ndarray:
    """Antialiased reduction of an S x S image to (S/f) x (S/f): the simulated coarser camera."""
    if factor == 1:
        return image
    h, w = image.shape[:2]
    if h % factor or w % factor:
        raise ValueError(f"image size {w}x{h} is not divisible by lr_scale={factor}")
    return cv2.resize(image, (w // factor, h // factor), interpolation=cv2.INTER_AREA)


def upscale(image: np.ndarray, size: int, method: str = "bilinear") -> np.ndarray:
    """Plain interpolation back to ``size`` x ``size`` (``method``: bilinear, bicubic or nearest)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return cv2.resize(image, (size, size), interpolation=_UPSCALE[method])
