"""The project's one definition of SR image quality: PSNR and SSIM of restored images against their references.

Both come from torchmetrics on RGB 0..255 (``data_range=255``). PSNR is computed per image (the MSE over that
image's pixels and channels) and then averaged over the images: the number the SR report, the sweep comparison and
the SR training's validation all give. (Pooling the squared errors of all images before the logarithm gives
another, generally lower, number.)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure


def psnr_metric() -> PeakSignalNoiseRatio:
    """PSNR (dB) per image on 0..255, averaged over the images (an identical image gives inf, and so the mean)."""
    return PeakSignalNoiseRatio(data_range=255.0, reduction="elementwise_mean", dim=(1, 2, 3))


def _batches(restored: np.ndarray, references: np.ndarray, batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """Float NCHW pairs from uint8 NHWC arrays (one HWC image counts as a batch of one)."""
    if np.ndim(references) == 3:
        restored, references = np.asarray(restored)[None], np.asarray(references)[None]
    for start in range(0, len(references), batch_size):
        out = torch.from_numpy(np.asarray(restored[start : start + batch_size])).permute(0, 3, 1, 2).float()
        ref = torch.from_numpy(np.asarray(references[start : start + batch_size])).permute(0, 3, 1, 2).float()
        yield out, ref


def psnr(restored: np.ndarray, references: np.ndarray, batch_size: int = 256) -> float:
    """Mean per-image PSNR (dB) of restored uint8 NHWC images against their references (:func:`psnr_metric`)."""
    metric = psnr_metric()
    for out, ref in _batches(restored, references, batch_size):
        metric.update(out, ref)
    return float(metric.compute())


def sr_quality(restored: np.ndarray, references: np.ndarray, batch_size: int = 256) -> dict[str, float]:
    """Mean per-image PSNR (dB, :func:`psnr_metric`) and SSIM of restored images against their S x S references,
    on RGB 0..255."""
    psnr_value = psnr_metric()
    ssim = StructuralSimilarityIndexMeasure(data_range=255.0)
    for out, ref in _batches(restored, references, batch_size):
        psnr_value.update(out, ref)
        ssim.update(out, ref)
    return {"psnr": float(psnr_value.compute()), "ssim": float(ssim.compute())}
