"""A trained checkpoint as a classifier of images: the model and the preprocessing it was trained with, rebuilt from
the checkpoint alone, and the batched, threaded decoding that feeds it (:mod:`wbc.predict` is the command).

The checkpoint holds the class names, the deterministic preprocessing (size, lr_scale, SR method) and the SR
weights, and prediction runs the same :class:`~wbc.data.pipeline.Preprocessor` that made the training, validation
and test images.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wbc.adapt import MIN_IMAGES, adapt_batchnorm
from wbc.data.decode import DEFAULT_MAX_PIXELS, ImageReadError, is_image_file, read_image
from wbc.data.pipeline import Preprocessor
from wbc.models.module import CHECKPOINT_FORMAT, WBCClassifier, symmetry_views
from wbc.sr.stage import SuperResolver


class CheckpointError(Exception):
    """A checkpoint that cannot be used for prediction; the message says why and what to do."""


def load_checkpoint(path: str | os.PathLike, trust: bool = False) -> dict[str, Any]:
    """Read and validate a wbc classifier checkpoint, with ``weights_only`` unless ``trust`` is set."""
    if not isinstance(path, str | os.PathLike):  # ckpt_path=[a,b] on the command line: a list
        raise CheckpointError(
            f"ckpt_path={path}: this takes one checkpoint file; to evaluate several (a recipe's seeds) together, "
            f"use scripts/cross_dataset.py 'ckpt_path=[a.ckpt,b.ckpt]'"
        )
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is not ours, or cut short
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, or a truncated one (not a zip archive)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err):
            raise CheckpointError(
                f"{path}: holds Python objects that a safe (weights_only) load refuses. Load it only if you "
                f"trust its source: add trust_checkpoint=true"
            ) from err
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({err})") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, or a truncated one ({err})") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
    hparams = ckpt.get("hyper_parameters") or {}
    if "class_names" not in hparams or "net" not in hparams:
        raise CheckpointError(f"{path}: not a wbc classifier checkpoint (no class names or network in it)")
    version = ckpt.get("wbc_format")
    if version is None or "preprocessing" not in hparams or not hparams["preprocessing"]:
        raise CheckpointError(
            f"{path}: made by an older wbc that did not store its preprocessing; retrain with this version"
        )
    if version > CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: made by a newer wbc (format {version} > {CHECKPOINT_FORMAT}); upgrade wbc")
    return ckpt


class Predictor:
    """A classifier and the preprocessing it was trained with, rebuilt from a checkpoint alone."""

    def __init__(self, model: WBCClassifier, preprocessor: Preprocessor, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.preprocessor = preprocessor
        self.class_names: list[str] = list(model.class_names)
        self.device = device

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str = "auto", trust: bool = False, enlarger: str | None = None
    ) -> Predictor:
        """The checkpoint's network and preprocessing; ``enlarger`` (none, bicubic, SR weights .pt/.pb) replaces its
        way of enlarging crops smaller than S (wbc.sr.native)."""
        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        ckpt = load_checkpoint(path, trust)
        hparams = dict(ckpt["hyper_parameters"])
        model = WBCClassifier(**hparams)
        ckpt["state_dict"].setdefault("temperature", torch.ones(()))  # made before temperature scaling
        try:
            model.load_state_dict(ckpt["state_dict"])
        except RuntimeError as err:
            raise CheckpointError(f"{path}: its weights do not fit the network it describes ({err})") from err
        pre = hparams["preprocessing"]
        sr_state = ckpt.get("sr_stage") or {**pre["sr"], "scale": pre["lr_scale"]}
        restorer = SuperResolver.from_state(sr_state, device=device)
        if (pre["lr_scale"] > 1 or restorer.native) and not restorer.ready:
            raise CheckpointError(f"{path}: sr={restorer.method} needs SR weights, which the checkpoint lacks")
        preprocessor = Preprocessor.from_description(pre, restorer)
        if enlarger:
            from wbc.sr.native import load_enlarger

            preprocessor.enlarger = load_enlarger(enlarger, device)
        return cls(model, preprocessor, device)

    @torch.no_grad()
    def probabilities(self, images: np.ndarray, tta: bool = False) -> torch.Tensor:
        """(N, S, S, 3) uint8 images from the preprocessor -> (N, C) class probabilities.

        ``tta`` averages the eight flips/90-degree rotations of each image.
        """
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(self.device)
        views = symmetry_views(x) if tta else [x]
        return torch.stack([self.model(v).float().softmax(1) for v in views]).mean(0).cpu()

    def adapt(
        self,
        files: Sequence[Path],
        batch_size: int = 64,
        threads: int = 2,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        um_per_px: float | None = None,
        min_images: int = MIN_IMAGES,
        layers: Sequence[str] | None = None,
    ) -> int:
        """AdaBN (:mod:`wbc.adapt`): re-estimate the network's batch-norm statistics (of ``layers``, name
        prefixes; None: all) on ``files`` (one lab's images, preprocessed as for prediction); returns the number
        of images used, or raises AdaptationError."""
        batches = (
            images
            for _, images, _, _ in iterate_batches(files, self.preprocessor, batch_size, threads, max_pixels, um_per_px)
            if images is not None
        )
        return self.adapt_images(batches, min_images, layers)

    def adapt_images(
        self, batches: Iterable[np.ndarray], min_images: int = MIN_IMAGES, layers: Sequence[str] | None = None
    ) -> int:
        """:meth:`adapt` on images already preprocessed: batches of (n, S, S, 3) uint8 classifier inputs."""
        tensors = (torch.from_numpy(np.ascontiguousarray(b)).permute(0, 3, 1, 2).to(self.device) for b in batches)
        return adapt_batchnorm(self.model, tensors, min_images, layers)

    def adapt_layers(self, setting: Any = "auto") -> list[str] | None:
        """The batch-norm layers AdaBN re-estimates: ``auto`` takes the checkpoint's recipe's
        (``adapt_bn_layers`` of its training config; all when it has none), a list of name prefixes is used as
        given, None means all."""
        if setting == "auto":
            setting = self.model.hparams.get("adapt_bn_layers")
        return None if setting is None else [str(p) for p in setting]


def _load(
    path: Path, preprocessor: Preprocessor, max_pixels: int | None, um_per_px: float | None = None
) -> tuple[np.ndarray, list[str]] | str:
    """The S x S reference of one file and its review notes, or the problem that stopped it (never raises)."""
    if not is_image_file(path):
        return f"not an image file type ({path.suffix or 'no extension'}); skipped"
    try:
        image = read_image(path, max_pixels=max_pixels, min_size=preprocessor.decode_min_size)
        return preprocessor.prepare(image, um_per_px)
    except ImageReadError as err:
        return err.problem
    except Exception as err:  # one bad file never stops a folder
        return f"{type(err).__name__}: {err}"


def iterate_batches(
    files: Sequence[Path],
    preprocessor: Preprocessor,
    batch_size: int,
    threads: int = 2,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    um_per_px: float | None = None,
) -> Iterator[tuple[list[int], np.ndarray, dict[int, str], dict[int, list[str]]]]:
    """Yield (indices, (n, S, S, 3) classifier inputs, {index: error}, {index: review notes}) per batch; decoding
    runs ahead in threads."""
    with ThreadPoolExecutor(max(1, threads)) as pool:
        pending: list[Future] = []
        ahead = 2 * batch_size  # decode at most two batches ahead: bounded memory on huge folders
        submitted = 0
        for start in range(0, len(files), batch_size):
            stop = min(start + batch_size, len(files))
            while submitted < min(len(files), stop + ahead):
                pending.append(pool.submit(_load, files[submitted], preprocessor, max_pixels, um_per_px))
                submitted += 1
            results = [pending[i].result() for i in range(start, stop)]
            for i in range(start, stop):
                pending[i] = None  # free decoded images as soon as they are consumed
            good = [(start + j, r) for j, r in enumerate(results) if not isinstance(r, str)]
            errors = {start + j: r for j, r in enumerate(results) if isinstance(r, str)}
            notes = {i: r[1] for i, r in good if r[1]}
            references = np.stack([r[0] for _, r in good]) if good else None
            images = preprocessor.restore(preprocessor.normalise(references)) if good else None
            yield [i for i, _ in good], images, errors, notes
