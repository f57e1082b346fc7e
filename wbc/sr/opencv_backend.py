"""OpenCV ``dnn_superres`` backend: pretrained .pb SR models applied to uint8 RGB image batches."""

from __future__ import annotations

import os
import re
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np

# Model names accepted by DnnSuperResImpl.setModel.
OPENCV_SR_NAMES = ("espcn", "edsr", "fsrcnn", "lapsrn")


def _installed_opencv_version() -> str:
    """Version to pin in the repair command: the pip package if known, else what cv2 reports."""
    try:
        return metadata.version("opencv-python-headless")
    except metadata.PackageNotFoundError:
        return str(getattr(cv2, "__version__", "")) or "<your cv2 version>"


def check_dnn_superres() -> None:
    """Raise RuntimeError with a repair command if ``cv2.dnn_superres`` is unavailable.

    opencv-python-headless and opencv-contrib-python-headless share the ``cv2/`` folder, so installing the
    plain build after the contrib one silently overwrites the contrib files and ``dnn_superres`` disappears.
    """
    module = getattr(cv2, "dnn_superres", None)
    if module is not None and hasattr(module, "DnnSuperResImpl_create"):
        return
    version = _installed_opencv_version()
    raise RuntimeError(
        "cv2.dnn_superres.DnnSuperResImpl_create is missing: the cv2/ folder holds the plain OpenCV build, "
        "probably because opencv-python-headless was installed after opencv-contrib-python-headless "
        "(they share cv2/). Repair with:\n"
        f"    pip install --force-reinstall --no-deps opencv-contrib-python-headless=={version}"
    )


def _scale_from_filename(path: Path) -> int | None:
    """The ``k`` of a ``..._x<k>.pb`` file name, as OpenCV's model zoo names them; None if absent."""
    match = re.search(r"_x(\d+)", path.stem, flags=re.IGNORECASE)
    return int(match.group(1)) if match else None


class OpenCVSuperResolver:
    """Callable upscaler around ``cv2.dnn_superres.DnnSuperResImpl``, picklable for DataLoader workers.

    The cv2 object can neither be pickled nor safely shared across processes, so only the path, name and scale
    are state; the cv2 object is (re)created lazily in each process that uses it.
    """

    def __init__(self, model_path: str | os.PathLike[str], scale: int, name: str = "espcn") -> None:
        check_dnn_superres()
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"OpenCV SR model file not found: {path}")
        name = name.lower()
        if name not in OPENCV_SR_NAMES:
            raise ValueError(f"unknown OpenCV SR model name {name!r}; known: {', '.join(OPENCV_SR_NAMES)}")
        file_scale = _scale_from_filename(path)
        if file_scale is not None and file_scale != scale:
            raise ValueError(f"{path.name} is an x{file_scale} model but scale={scale} was requested")
        self.model_path = path
        self.scale = int(scale)
        self.name = name
        self._local = threading.local()
        self._impl()  # load once now so that a broken file fails here, not in the first batch

    def _impl(self) -> Any:
        # One cv2 object per thread and process: a cv2 Net must not cross processes (recreated after unpickling
        # or a fork, when the pid changes), and two threads upsampling with one Net corrupt each other's output
        # (prediction decodes and preprocesses in threads).
        local = self._local
        if getattr(local, "sr", None) is None or local.pid != os.getpid():
            sr = cv2.dnn_superres.DnnSuperResImpl_create()
            sr.readModel(str(self.model_path))
            sr.setModel(self.name, self.scale)
            local.sr, local.pid = sr, os.getpid()
        return local.sr

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_local"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def __repr__(self) -> str:
        cls = type(self).__name__
        return f"{cls}(model_path={str(self.model_path)!r}, scale={self.scale}, name={self.name!r})"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Upscale a uint8 RGB batch (N, H, W, 3) or one image (H, W, 3) by ``scale``; returns uint8 RGB."""
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images, got {images.dtype}")
        single = images.ndim == 3
        batch = images[None] if single else images
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) or (H, W, 3) RGB images, got shape {images.shape}")
        sr = self._impl()
        out = np.empty((batch.shape[0], batch.shape[1] * self.scale, batch.shape[2] * self.scale, 3), dtype=np.uint8)
        for i, image in enumerate(batch):
            # OpenCV models and colour conversions assume BGR order.
            bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
            out[i] = cv2.cvtColor(sr.upsample(bgr), cv2.COLOR_BGR2RGB)
        return out[0] if single else out
