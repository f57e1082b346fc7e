"""SuperResolver: the SR stage of the pipeline, (S/f) x (S/f) uint8 images -> S x S.

The methods are those of :mod:`wbc.sr.registry`: ``none`` is the plain bilinear resize a user without SR would
do, ``bicubic`` the classic baseline, the learned ones (``espcn``, ``fsrcnn``, ``edsr``) are PyTorch modules
(trained in-domain on the training split on first use, or loaded from ``weights``) or OpenCV dnn_superres ``.pb``
models (``backend: opencv``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wbc.cache import atomic_write, digest, file_lock
from wbc.resize import upscale
from wbc.sr.models import build_sr_model
from wbc.sr.registry import get_method
from wbc.sr.training import SRTrainConfig, train_sr, upscale_images

log = logging.getLogger(__name__)


def _resolve_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


class SuperResolver:
    """One SR method at one scale; call it on a uint8 NHWC batch of low-resolution images."""

    def __init__(
        self,
        method: str = "none",
        scale: int = 1,
        backend: str = "torch",
        weights: str | os.PathLike | None = None,
        arch: Mapping[str, Any] | None = None,
        train: Mapping[str, Any] | None = None,
        device: str = "auto",
        batch_size: int = 64,
        native: bool = False,
        native_scale: int = 2,
    ):
        """``native``: the stage enlarges framed crops smaller than S (:mod:`wbc.sr.native`) at ``native_scale``
        instead of restoring images reduced by ``scale`` (data.lr_scale, which must then be 1)."""
        if native:
            if int(scale) != 1:
                raise ValueError(
                    f"sr.native=true enlarges crops smaller than S; it does not combine with data.lr_scale={scale} "
                    "(the simulated coarser camera): use one or the other"
                )
            scale = native_scale
            if int(scale) < 2:
                raise ValueError(f"sr.native_scale must be an integer >= 2, got {native_scale}")
        self.native = bool(native)
        self.interpolation = get_method(method).interpolation  # plain methods: bilinear or bicubic; else None
        if backend not in ("torch", "opencv"):
            raise ValueError(f"sr.backend must be torch or opencv, got {backend!r}")
        self.method, self.scale, self.backend = method, int(scale), backend
        self.arch = dict(arch or {})
        train = dict(train or {})
        if "patch_size" in train:  # HR patches must cut into whole LR pixels
            step = max(1, self.scale)
            train["patch_size"] = max(step, train["patch_size"] - train["patch_size"] % step)
        self.train_cfg = SRTrainConfig(**train)
        self.device = _resolve_device(device)
        self.batch_size = batch_size
        self.weights = Path(weights).expanduser() if weights else None
        self.weights_path: Path | None = self.weights  # where the weights in use came from (or were stored)
        self.model: torch.nn.Module | None = None
        self.opencv = None
        self.weights_digest: str | None = None
        self.train_stats: dict[str, float] | None = None
        if self.interpolation or self.scale == 1:
            return
        if backend == "opencv":
            from wbc.sr.opencv_backend import OpenCVSuperResolver

            if self.weights is None:
                raise ValueError(f"sr={method} with backend=opencv needs sr.weights=<path to a .pb model>")
            self.opencv = OpenCVSuperResolver(self.weights, self.scale, name=method)
            self.weights_digest = hashlib.blake2b(self.weights.read_bytes(), digest_size=10).hexdigest()
        else:
            self.model = build_sr_model(method, self.scale, **self.arch)
            if self.weights is not None:
                self._load(torch.load(self.weights, map_location="cpu", weights_only=True), str(self.weights))

    # -- weights ----------------------------------------------------------------------------------------
    @property
    def trainable(self) -> bool:
        return self.model is not None

    @property
    def ready(self) -> bool:
        return bool(self.interpolation) or self.scale == 1 or self.weights_digest is not None

    def _load(self, payload: Mapping[str, Any], origin: str) -> None:
        state = payload.get("state_dict", payload)
        try:
            self.model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(
                f"{origin}: SR weights do not fit sr={self.method} x{self.scale} with arch {self.arch}: {err}"
            ) from err
        self.model.to(self.device).eval()
        self.train_stats = payload.get("stats")
        buffer = io.BytesIO()
        torch.save({k: v.cpu() for k, v in self.model.state_dict().items()}, buffer)
        self.weights_digest = hashlib.blake2b(buffer.getvalue(), digest_size=10).hexdigest()

    _task_digest: str | None = None

    def _task_classifier(self) -> torch.nn.Module | None:
        """The frozen classifier of ``sr.train.loss=l1+task`` (its checkpoint's content is part of the weights'
        key), or None for the plain L1 loss."""
        cfg = self.train_cfg
        if cfg.loss != "l1+task":
            return None
        from wbc.errors import UserError
        from wbc.models.module import WBCClassifier
        from wbc.predict import CheckpointError, load_checkpoint

        if not cfg.task_checkpoint:
            raise UserError(
                "sr.train.loss=l1+task needs sr.train.task_checkpoint=<a classifier's best.ckpt trained at "
                "data.lr_scale=1 on the same split> (python train.py data.lr_scale=1 ...)"
            )
        path = Path(cfg.task_checkpoint).expanduser()
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as err:
            raise UserError(f"sr.train.task_checkpoint: {err}") from err
        if ckpt["hyper_parameters"]["preprocessing"].get("lr_scale", 1) != 1:
            raise UserError(f"sr.train.task_checkpoint={path}: trained at data.lr_scale>1; the task term needs a "
                            "classifier of the reference images (data.lr_scale=1)")  # fmt: skip
        model = WBCClassifier(**ckpt["hyper_parameters"])
        ckpt["state_dict"].setdefault("temperature", torch.ones(()))
        model.load_state_dict(ckpt["state_dict"])
        self._task_digest = hashlib.blake2b(path.read_bytes(), digest_size=10).hexdigest()
        return model.eval()

    def prepare(
        self, training_images: Callable[[], np.ndarray], dataset_key: str, store_dir: str | os.PathLike | None
    ) -> None:
        """Make a trainable method ready: load its in-domain weights from the store, or train and store them.

        Weights are keyed by dataset, split, scale, architecture and training settings; the store is locked, so
        two runs that start together train once and never see a half-written file.
        """
        if self.ready or not self.trainable:
            return
        task = self._task_classifier()
        # the task classifier counts by its content (_task_digest), not by the path it was given: the same
        # checkpoint named another way reuses the stored weights (null keeps the keys of L1-trained weights)
        settings = {**vars(self.train_cfg), "task_checkpoint": None}
        key = digest(dataset_key, self.method, self.scale, self.arch, settings, self._task_digest)
        path = None if store_dir is None else Path(store_dir) / f"{self.method}-x{self.scale}-{key}.pt"
        self.weights_path = path
        if path is not None and path.exists():
            self._load(torch.load(path, map_location="cpu", weights_only=True), str(path))
            return
        with file_lock(path) if path is not None else contextlib.nullcontext():
            if path is not None and path.exists():
                self._load(torch.load(path, map_location="cpu", weights_only=True), str(path))
                return
            hr = training_images()
            log.info(
                "training sr=%s x%d on %d training images (%d steps)",
                self.method,
                self.scale,
                len(hr),
                self.train_cfg.steps,
            )
            stats = train_sr(self.model, hr, self.scale, self.train_cfg, device=self.device, log=log.info, task=task)
            payload = {
                "state_dict": {k: v.cpu() for k, v in self.model.state_dict().items()},
                "stats": stats,
                "method": self.method,  # so that the file alone rebuilds the model (wbc.sr.native.load_enlarger)
                "scale": self.scale,
                "arch": self.arch,
            }
            if path is not None:
                atomic_write(path, lambda f: torch.save(payload, f))
                log.info("sr weights stored: %s", path)
            self._load(payload, "trained weights")

    # -- inference --------------------------------------------------------------------------------------
    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(N, h, w, 3) uint8 -> (N, h*scale, w*scale, 3) uint8."""
        if self.interpolation or self.scale == 1:
            size = images.shape[1] * self.scale
            return np.stack([upscale(im, size, self.interpolation or "bilinear") for im in images])
        if self.opencv is not None:
            return self.opencv(images)
        if not self.ready:
            raise RuntimeError(f"sr={self.method} has no weights: give sr.weights or let the datamodule train it")
        return upscale_images(self.model, images, batch_size=self.batch_size, device=self.device)

    def cache_token(self) -> str:
        """Changes whenever the output could change: method, scale, backend and a digest of the weights."""
        if self.interpolation:
            return f"{self.method}-x{self.scale}"
        return f"{self.method}-x{self.scale}-{self.backend}-{self.weights_digest}"

    # -- checkpoint round trip --------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild this stage without its files (stored inside classifier checkpoints)."""
        state: dict[str, Any] = {
            "method": self.method,
            "scale": self.scale,
            "backend": self.backend,
            "arch": self.arch,
            "native": self.native,
        }
        if self.model is not None and self.ready:
            state["state_dict"] = {k: v.cpu() for k, v in self.model.state_dict().items()}
        if self.opencv is not None:
            state["opencv_model"] = self.weights.read_bytes()
            state["opencv_name"] = self.weights.name
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any], device: str = "auto") -> SuperResolver:
        common = {
            "method": state["method"],
            "scale": state["scale"],
            "arch": state.get("arch"),
            "device": device,
        }
        if "opencv_model" in state:
            folder = Path(tempfile.mkdtemp(prefix="wbc-sr-"))
            path = folder / state.get("opencv_name", f"{state['method']}_x{state['scale']}.pb")
            path.write_bytes(state["opencv_model"])
            resolver = cls(backend="opencv", weights=path, **common)
        else:
            resolver = cls(backend=state.get("backend", "torch"), **common)
        if "state_dict" in state:
            resolver._load(state, "checkpoint")
        resolver.native = bool(state.get("native", False))
        return resolver
