"""Native SR: the SR stage enlarges framed crops that come out smaller than S, in place of a plain resize.

With framing at a common physical scale, another lab's cells often arrive at fewer pixels than the classifier's
input: LISC's 30 um field is 153 px, so a classifier at S=224 sees it enlarged 1.46x. With ``sr.native=true``
(training) or an ``enlarger`` (evaluation, prediction) that enlargement is done by SR:

    framed crop (its own resolution, side c)
      c >= S: reduced to S (area filter), as without native SR
      c <  S: a plain method (``none`` = bilinear, ``bicubic``) interpolates straight to S; a learned one
              (ESPCN, EDSR, an OpenCV ``.pb``) enlarges by its factor k, then the result is resized to S
              (reduced when k c >= S, so SR does all the enlarging; else bicubic for the rest)

One factor per model: a learned enlarger is trained (or was trained) at one k, in-domain on the training split's
S x S references reduced by k, as the SR study trains its models.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wbc.resize import resize_to, upscale
from wbc.sr.registry import get_method
from wbc.sr.stage import SuperResolver

PLAIN = {"none": "bilinear", "bilinear": "bilinear", "bicubic": "bicubic"}


def square(image: np.ndarray) -> np.ndarray:
    """The central square of an image (framed crops are square already)."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[top : top + side, left : left + side]


class NativeEnlarger:
    """Enlarges crops smaller than S with ``resolver`` (a :class:`SuperResolver`: a plain method, or a learned
    one with its factor and weights)."""

    def __init__(self, resolver: SuperResolver):
        self.resolver = resolver

    @property
    def name(self) -> str:
        r = self.resolver
        return r.method if r.interpolation else f"{r.method} x{r.scale}"

    @property
    def ready(self) -> bool:
        return self.resolver.ready

    def __call__(self, image: np.ndarray, size: int) -> np.ndarray:
        crop = square(image)
        if crop.shape[0] >= size:
            return resize_to(crop, size)
        if self.resolver.interpolation:
            return upscale(np.ascontiguousarray(crop), size, self.resolver.interpolation)
        return resize_to(self.resolver(np.ascontiguousarray(crop)[None])[0], size)

    def cache_token(self) -> str:
        return f"native-{self.resolver.cache_token()}"


def load_enlarger(spec: str | os.PathLike, device: str = "auto") -> NativeEnlarger:
    """An enlarger from a name or a weights file: ``none``/``bilinear``, ``bicubic``; a ``.pt`` of in-domain SR
    weights (written by the SR stage: it records its method, factor and architecture); an OpenCV ``.pb``
    (``ESPCN_x2.pb``: method and factor from the file name)."""
    text = os.fsdecode(spec)
    if text.lower() in PLAIN:
        return NativeEnlarger(SuperResolver("bicubic" if PLAIN[text.lower()] == "bicubic" else "none", scale=2))
    path = Path(text).expanduser()
    if not path.is_file():
        raise ValueError(f"enlarger {text!r}: not none, bilinear or bicubic, and no such weights file")
    if path.suffix.lower() == ".pb":
        from wbc.sr.opencv_backend import _scale_from_filename

        scale = _scale_from_filename(path)
        method = path.stem.split("_")[0].lower()
        if scale is None:
            raise ValueError(f"{path}: an OpenCV model's name gives its factor (ESPCN_x2.pb); this one does not")
        return NativeEnlarger(SuperResolver(method, scale=scale, backend="opencv", weights=path, device=device))
    payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or "method" not in payload:
        raise ValueError(
            f"{path}: SR weights without their method and factor (stored by an older wbc); train them again with "
            "scripts/train_sr.py"
        )
    get_method(payload["method"])  # a known method, or a clear error
    return NativeEnlarger(
        SuperResolver(payload["method"], payload["scale"], arch=payload.get("arch"), weights=path, device=device)
    )
