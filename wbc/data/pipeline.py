"""The deterministic part of the image pipeline, one function for training, evaluation and prediction.

    decoded RGB image -> frame the cell (data.framing), resize to S (the reference; a crop smaller than S is
                         enlarged by the native SR stage when there is one, wbc.sr.native)
                      -> [stain normalisation, fitted on the training split]
                      -> reduce by f (antialiased: the simulated coarser camera)
                      -> SR stage x f, or the plain resize of sr=none, back to S

The low-resolution image is made from the S x S reference, so SR training pairs, the images a classifier sees
and the reference that PSNR/SSIM compare against all come from one degradation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from wbc.data.framing import CellLocation, Framed, Framing
from wbc.data.samples import Sample
from wbc.data.stain import ReinhardNormaliser, WhiteBalance, build_stain
from wbc.resize import reduce, resize_to
from wbc.sr.native import NativeEnlarger


def is_grey(image: np.ndarray, tolerance: int = 6) -> bool:
    """Whether an RGB image carries (almost) no colour: its channels differ by at most ``tolerance`` levels in
    99 % of the pixels. Stained smears are colourful; a grey-scale copy has lost the stain's information."""
    step = max(1, image.shape[0] * image.shape[1] // 65536)  # a sample of pixels is enough
    px = image.reshape(-1, 3)[::step].astype(np.int16)
    r, g, b = px[:, 0], px[:, 1], px[:, 2]  # elementwise max/min and a count: cheap beside decoding (prediction)
    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    return bool(np.count_nonzero(spread <= tolerance) >= 0.99 * len(spread))


@runtime_checkable
class DataSource(Protocol):
    """Where labelled images come from (FolderSource, SyntheticSource, BloodMNISTSource): all the datamodule and
    the split need. A new dataset format is one class meeting this, and one conf/data/<name>.yaml whose
    ``source`` node instantiates it (keys the source reads, such as data.root, go there by interpolation).
    ``um_per_px`` (optional attribute): the images' pixel size in micrometres, when the source knows it.
    """

    class_names: Sequence[str]  # the project's classes, in label order (Sample.label indexes them)

    def scan(self) -> list[Sample]:
        """Every image of the source, once, with its label and content key (and split, if the layout fixes it)."""
        ...

    def load(self, sample: Sample, min_size: int | None = None) -> np.ndarray:
        """The decoded HxWx3 uint8 RGB image; ``min_size``: the caller shrinks it to that size (a hint)."""
        ...

    def cache_token(self) -> str:
        """Separates the cached pipeline outputs of different sources (with the samples' content keys)."""
        ...


class Restorer(Protocol):
    """Brings a batch of (S/f) x (S/f) uint8 NHWC images back to S x S (the SR stage or a plain resize)."""

    def __call__(self, images: np.ndarray) -> np.ndarray: ...

    def cache_token(self) -> str: ...


class Preprocessor:
    """decode output -> the S x S uint8 image the classifier sees. Holds the SR stage (``restorer``)."""

    def __init__(
        self,
        image_size: int,
        lr_scale: int = 1,
        restorer: Restorer | None = None,
        framing: Framing | None = None,
        stain: WhiteBalance | ReinhardNormaliser | None = None,
        enlarger: NativeEnlarger | None = None,
    ):
        if image_size % lr_scale:
            raise ValueError(f"data.image_size={image_size} must be divisible by data.lr_scale={lr_scale}")
        if lr_scale > 1 and restorer is None:
            raise ValueError("data.lr_scale > 1 needs an SR stage or plain resize (sr=none) to restore the size")
        if lr_scale > 1 and getattr(restorer, "scale", lr_scale) != lr_scale:
            raise ValueError(f"sr.scale={restorer.scale} does not match data.lr_scale={lr_scale}")
        self.image_size = image_size
        self.lr_scale = lr_scale
        self.restorer = restorer
        self.framing = framing or Framing()
        self.stain = stain
        self.enlarger = enlarger

    @property
    def decode_min_size(self) -> int | None:
        """How small a JPEG may be decoded (libjpeg's DCT scaling): centre framing shrinks the whole image to
        S; the other framings crop a part of it first, so they decode at full resolution."""
        return None if self.framing.locates else self.image_size

    def frame(
        self, image: np.ndarray, um_per_px: float | None = None, location: CellLocation | None = None
    ) -> tuple[np.ndarray, Framed]:
        """The S x S high-resolution reference of one decoded image (framed, not yet stain-normalised), and how
        it was framed. Training, evaluation and prediction all make their references here."""
        framed = self.framing(image, um_per_px, location)
        if self.enlarger is not None and self.enlarger.ready:
            return self.enlarger(framed.image, self.image_size), framed
        return resize_to(framed.image, self.image_size), framed

    def reference(
        self, image: np.ndarray, um_per_px: float | None = None, location: CellLocation | None = None
    ) -> np.ndarray:
        """:meth:`frame` without the framing record."""
        return self.frame(image, um_per_px, location)[0]

    def prepare(self, image: np.ndarray, um_per_px: float | None = None) -> tuple[np.ndarray, list[str]]:
        """The reference of one image for prediction, and why its prediction deserves a second look (reasons
        that come from the input itself: no cell found, too few pixels for the model, no colour)."""
        reference, framed = self.frame(image, um_per_px)
        notes = ["no cell found"] if framed.note.startswith("no cell found") else []
        side = min(framed.image.shape[:2])
        if 2 * side <= self.image_size:
            notes.append(f"low resolution ({side} px enlarged to {self.image_size})")
        if is_grey(image):
            notes.append("grey-scale image")
        return reference, notes

    def normalise(self, references: np.ndarray) -> np.ndarray:
        """Stain normalisation of a batch of references (identity without a stain step)."""
        return references if self.stain is None else self.stain(references)

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

    def __call__(self, images: Sequence[np.ndarray], um_per_px: float | None = None) -> np.ndarray:
        """Decoded images of any size -> (N, S, S, 3) uint8 batch for the classifier."""
        return self.restore(self.normalise(np.stack([self.reference(im, um_per_px) for im in images])))

    def reference_token(self) -> str:
        """What the native enlarger adds to the references' cache key ('' without one, as before it existed)."""
        return "" if self.enlarger is None or not self.enlarger.ready else self.enlarger.cache_token()

    def cache_token(self) -> str:
        """Changes whenever the output of :meth:`restore` applied to :meth:`normalise` could change."""
        sr = self.restorer.cache_token() if self.lr_scale > 1 else "identity"
        stain = "" if self.stain is None else f"-{self.stain.token()}"
        return f"S{self.image_size}-f{self.lr_scale}-{sr}{stain}"

    @classmethod
    def from_description(cls, preprocessing: dict, restorer: Restorer | None = None) -> Preprocessor:
        """Rebuild the pipeline a checkpoint records (``preprocessing`` hyperparameters; older checkpoints
        without framing or stain entries used centre framing and no stain step). A native SR stage
        (``restorer.native``) becomes the enlarger of crops smaller than S."""
        stain = preprocessing.get("stain") or {}
        native = getattr(restorer, "native", False)
        return cls(
            preprocessing["image_size"],
            preprocessing["lr_scale"],
            None if native else restorer,
            Framing(preprocessing.get("framing", "centre"), preprocessing.get("field_um", Framing.field_um)),
            build_stain(stain.get("method"), stain.get("target")),
            NativeEnlarger(restorer) if native else None,
        )

    def describe(self) -> dict:
        """What a checkpoint records of the framing and stain steps (the SR stage is recorded by itself)."""
        return {
            "framing": self.framing.method,
            "field_um": self.framing.field_um,
            "stain": None if self.stain is None else self.stain.state(),
        }
