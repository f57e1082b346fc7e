"""Colour normalisation steps: ``data.stain=white`` (white balance on the empty slide) and ``data.stain=reinhard``
(Reinhard et al. 2001: match each image's colour statistics to the training split's).

White balance: in brightfield microscopy the empty slide transmits the lamp's light unchanged, so its colour in an
image is the lamp and the camera's colour response, not the stain. Each framed image is divided, channel by
channel, by the colour of its brightest pixels (the slide between the cells) and multiplied by a fixed white: an
image becomes its transmittance, the same whatever the lab's lamp, white balance and exposure. Nothing is fitted;
an image without visible slide (its brightest pixels are dark or strongly coloured) is left as it is.

Reinhard:
Each framed S x S image is converted to CIE L*a*b*; its per-channel mean and standard deviation are measured on
the field *around* the cell (outside a centred disc: the empty slide and the red cells that every smear shows,
so the statistics describe the stain and the light, not which white cell is in the middle), and the whole image
is shifted and scaled so that those statistics equal the target's. The target is the mean of the training
images' statistics, fitted once on the training split and stored in the checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

STAINS = (None, "white", "reinhard")
CELL_DISC = 0.6  # the centred disc left out of the statistics, as a fraction of the image side
MIN_STD = 2.0  # a flat channel is not stretched into noise


def _surround(size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    return np.hypot(yy - c, xx - c) > CELL_DISC * size / 2


def _lab_and_stats(image: np.ndarray, ring: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) float L*a*b* of one uint8 RGB image, and its 6 statistics (mean, standard deviation) around the
    cell; padding (black) pixels are left out."""
    lab = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB).astype(np.float64)
    sel = ring & (image.max(axis=2) > 20)
    px = lab[sel] if sel.sum() >= 16 else lab.reshape(-1, 3)
    return lab, np.concatenate([px.mean(axis=0), px.std(axis=0)])


def lab_stats(images: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) uint8 RGB -> (N, 6): L*a*b* mean and standard deviation around the cell of each image."""
    ring = _surround(images.shape[1])
    return np.stack([_lab_and_stats(im, ring)[1] for im in images]) if len(images) else np.zeros((0, 6))


class ReinhardNormaliser:
    """``fit`` on training images, then ``__call__`` maps any batch of images onto the fitted statistics."""

    def __init__(self, target: Sequence[float] | None = None):
        self.target = None if target is None else np.asarray(target, np.float64)

    def fit(self, images: np.ndarray) -> ReinhardNormaliser:
        if len(images) == 0:
            raise ValueError("stain normalisation needs training images to fit its target")
        self.target = lab_stats(np.asarray(images)).mean(axis=0)
        return self

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if self.target is None:
            raise RuntimeError("ReinhardNormaliser used before fit()")
        images = np.asarray(images)
        ring = _surround(images.shape[1])
        mean_t, std_t = self.target[:3], self.target[3:]
        out = np.empty_like(images)
        for i, im in enumerate(images):
            lab, stats = _lab_and_stats(im, ring)
            lab = (lab - stats[:3]) * (std_t / np.maximum(stats[3:], MIN_STD)) + mean_t
            rgb = cv2.cvtColor(np.clip(np.rint(lab), 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
            rgb[im.max(axis=2) <= 20] = 0  # padding stays padding
            out[i] = rgb
        return out

    def state(self) -> dict:
        return {"method": "reinhard", "target": None if self.target is None else [float(v) for v in self.target]}

    def token(self) -> str:
        return "reinhard-" + ("unfitted" if self.target is None else ",".join(f"{v:.3f}" for v in self.target))


WHITE = 235.0  # the slide's grey level after white balance: bright, with headroom for a brighter spot
SLIDE_FRACTION = 0.1  # the brightest tenth of an image's pixels is taken as its empty slide
MIN_SLIDE = 120.0  # a "slide" darker than this in any channel is a cell filling the image: left unbalanced
MAX_GAIN = 3.0


def slide_colour(image: np.ndarray) -> np.ndarray | None:
    """The mean RGB of the brightest tenth of an image's (non-padding) pixels, or None when it is not a slide."""
    px = image.reshape(-1, 3).astype(np.float64)
    px = px[px.max(axis=1) > 20]
    if len(px) < 16:
        return None
    brightness = px.sum(axis=1)
    slide = px[brightness >= np.quantile(brightness, 1 - SLIDE_FRACTION)].mean(axis=0)
    return slide if slide.min() >= MIN_SLIDE else None


class WhiteBalance:
    """``data.stain=white``: divide each image by its slide's colour (no fitting; see the module docstring)."""

    target = (WHITE,)  # fixed: nothing to fit on the training split

    def fit(self, images: np.ndarray) -> WhiteBalance:
        return self

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        out = images.copy()
        for i, im in enumerate(images):
            slide = slide_colour(im)
            if slide is None:
                continue
            gain = np.clip(WHITE / slide, 1 / MAX_GAIN, MAX_GAIN)
            balanced = np.clip(np.rint(im * gain), 0, 255).astype(np.uint8)
            balanced[im.max(axis=2) <= 20] = 0  # padding stays padding
            out[i] = balanced
        return out

    def state(self) -> dict:
        return {"method": "white", "target": None}

    def token(self) -> str:
        return f"white-{WHITE:g}-{SLIDE_FRACTION:g}-{MIN_SLIDE:g}"


def build_stain(method: str | None, target: Sequence[float] | None = None) -> WhiteBalance | ReinhardNormaliser | None:
    """The colour step of ``data.stain`` (null, white or reinhard), optionally with a stored (Reinhard) target."""
    if method in (None, "none"):
        return None
    if method == "white":
        return WhiteBalance()
    if method != "reinhard":
        raise ValueError(f"data.stain must be null, 'white' or 'reinhard', got {method!r}")
    return ReinhardNormaliser(target)
