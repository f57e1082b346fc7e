"""The deterministic part of the image pipeline, one function for training, evaluation and prediction.

    decoded RGB image -> centre square, resize to S (the reference)
                      -> reduce by f (antialiased: the simulated coarser camera)
                      -> SR stage x f, or the plain resize of sr=none, back to S

The low-resolution image is made from the S x S reference, so SR training pairs, the images a classifier sees
and the reference that PSNR/SSIM compare against all come from one degradation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from wbc.data.resize import reduce, resize_to


class Restorer(Protocol):
    """Brings a batch of (S/f) x (S/f) uint8 NHWC images back to S x S (the SR stage or a plain resize)."""

    def __call__(self, images: np.ndarray) -> np.ndarray: ...

    def cache_token(self) -> str: ...


class Preprocessor:
    """decode output -> the S x S uint8 image the classifier sees. Holds the SR stage (``restorer``)."""

    def __init__(self, image_size: int, lr_scale: int = 1, restorer: Restorer | None = None):
        if image_size % lr_scale:
            raise ValueError(f"data.image_size={image_size} must be divisible by data.lr_scale={lr_scale}")
        if lr_scale > 1 and restorer is None:
            raise ValueError("data.lr_scale > 1 needs an SR stage or plain resize (sr=none) to restore the size")
        if lr_scale > 1 and getattr(restorer, "scale", lr_scale) != lr_scale:
            raise ValueError(f"sr.scale={restorer.scale} does not match data.lr_scale={lr_scale}")
        self.image_size = image_size
        self.lr_scale = lr_scale
        self.restorer = restorer

    def reference(self, image: np.ndarray) -> np.ndarray:
        """The S x S high-resolution reference of one decoded image."""
        return resize_to(image, self.image_size)

    def degrade(self, references: np.ndarray) -> np.ndarray:
        """Reduce a batch of references by f (what a coarser camera would record)."""
        return np.stack([reduce(r, self.lr_scale) for r in references])

    def restore(self, references: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """References (N, S, S, 3) -> what the classifier sees: reduced by f and restored to S x S."""
        if self.lr_scale == 1:
            return references
        out = np.empty_like(references)
        for start in range(0, len(references), batch_size):
            chunk = references[start : start + batch_size]
            out[start : start + len(chunk)] = self.restorer(self.degrade(chunk))
        return out

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Decoded images of any size -> (N, S, S, 3) uint8 batch for the classifier."""
        return self.restore(np.stack([self.reference(im) for im in images]))

    def cache_token(self) -> str:
        """Changes whenever the output of :meth:`restore` could change."""
        sr = self.restorer.cache_token() if self.lr_scale > 1 else "identity"
        return f"S{self.image_size}-f{self.lr_scale}-{sr}"
