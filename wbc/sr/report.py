"""What a run reports about its SR stage: PSNR/SSIM against the reference, cost per image, example cells.

It works on arrays (the caller, train.py, takes them from its data module): the S x S references, the images the
classifier sees (restored by the SR stage), and their (S/f) x (S/f) low-resolution versions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from wbc.reports.plots import plot_examples, save_figure
from wbc.resize import upscale
from wbc.sr.quality import sr_quality

log = logging.getLogger(__name__)


def sr_cost_ms(restorer: Callable[[np.ndarray], np.ndarray], low_res: np.ndarray, max_images: int = 256) -> float:
    """Milliseconds per image of the SR stage alone (uncached), on up to ``max_images`` low-resolution images."""
    lr = np.asarray(low_res[:max_images])
    restorer(lr[:2])  # warm-up: first-call allocations and lazy model loading
    start = time.perf_counter()
    restorer(lr)
    return 1000 * (time.perf_counter() - start) / max(1, len(lr))


def example_columns(
    low_res: np.ndarray, references: np.ndarray, restored: np.ndarray, method: str
) -> dict[str, np.ndarray]:
    """LR (nearest-neighbour enlarged, to show its pixels) | bicubic | this method | reference, per cell."""
    size, lr_size = references.shape[1], low_res.shape[1]
    columns = {
        f"LR ({lr_size} px)": np.stack([upscale(im, size, "nearest") for im in low_res]),
        "bicubic": np.stack([upscale(im, size, "bicubic") for im in low_res]),
    }
    if method != "bicubic":
        columns[method] = np.asarray(restored)
    columns[f"reference ({size} px)"] = np.asarray(references)
    return columns


def report_sr(
    references: np.ndarray,
    restored: np.ndarray,
    low_res: np.ndarray,
    restorer: Callable[[np.ndarray], np.ndarray],
    method: str,
    out: Path,
    loggers=(),
    n_examples: int = 6,
) -> tuple[dict, dict]:
    """PSNR/SSIM of the SR stage (and of bicubic) against the reference, and a grid of example cells (PNG,
    TensorBoard, and the arrays for the sweep-level grid). Returns (deterministic metrics, timings).

    ``references``: the test split's S x S reference images (uint8 NHWC); ``restored``: what the classifier sees
    of them (the SR stage's output); ``low_res``: their reductions by f; ``restorer``: the SR stage (low_res ->
    restored), timed here, whose ``train_stats`` (when it has them) are reported.
    """
    references, restored, low_res = np.asarray(references), np.asarray(restored), np.asarray(low_res)
    size = references.shape[1]
    scale = size // low_res.shape[1]
    bicubic = np.stack([upscale(im, size, "bicubic") for im in low_res])
    train_stats = dict(getattr(restorer, "train_stats", None) or {})
    metrics: dict[str, Any] = {
        "method": method,
        "scale": scale,
        **sr_quality(restored, references),
        **{f"{k}_bicubic": v for k, v in sr_quality(bicubic, references).items()},
        "test_images": len(references),
        "train": {k: v for k, v in train_stats.items() if k != "seconds"} or None,
    }
    timing = {"sr_ms_per_image": sr_cost_ms(restorer, low_res), "sr_train_seconds": train_stats.get("seconds")}
    columns = example_columns(low_res[:n_examples], references[:n_examples], restored[:n_examples], method)
    np.savez_compressed(
        out / "sr_examples.npz", **{f"col{i}": v for i, v in enumerate(columns.values())}, names=np.array(list(columns))
    )
    fig = plot_examples(columns, title=f"sr={method}, x{scale}: test cells")
    from wbc.loggers import log_figures

    log_figures(loggers, {"sr_examples": fig})
    for logger in loggers:
        logger.log_metrics({f"sr/{k}": v for k, v in metrics.items() if isinstance(v, float)}, step=0)
    save_figure(fig, out / "sr_examples.png")
    log.info(
        "sr=%s x%d: PSNR %.2f dB (bicubic %.2f), SSIM %.4f, %.2f ms/image",
        method,
        scale,
        metrics["psnr"],
        metrics["psnr_bicubic"],
        metrics["ssim"],
        timing["sr_ms_per_image"],
    )
    return metrics, timing
