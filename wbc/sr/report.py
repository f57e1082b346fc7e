"""What a run reports about its SR stage: PSNR/SSIM against the reference, cost per image, example cells."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from wbc.data.pipeline import Preprocessor
from wbc.plots import save_figure
from wbc.resize import upscale
from wbc.sr.quality import sr_quality

log = logging.getLogger(__name__)


def sr_cost_ms(preprocessor: Preprocessor, references: np.ndarray, max_images: int = 256) -> float:
    """Milliseconds per image of the SR stage alone (uncached), on up to ``max_images`` low-resolution images."""
    lr = preprocessor.degrade(np.asarray(references[:max_images]))
    preprocessor.restorer(lr[:2])  # warm-up: first-call allocations and lazy model loading
    start = time.perf_counter()
    preprocessor.restorer(lr)
    return 1000 * (time.perf_counter() - start) / max(1, len(lr))


def example_columns(
    preprocessor: Preprocessor, references: np.ndarray, restored: np.ndarray, method: str
) -> dict[str, np.ndarray]:
    """LR (nearest-neighbour enlarged, to show its pixels) | bicubic | this method | reference, per cell."""
    size = preprocessor.image_size
    lr = preprocessor.degrade(np.asarray(references))
    columns = {
        f"LR ({size // preprocessor.lr_scale} px)": np.stack([upscale(im, size, "nearest") for im in lr]),
        "bicubic": np.stack([upscale(im, size, "bicubic") for im in lr]),
    }
    if method != "bicubic":
        columns[method] = np.asarray(restored)
    columns[f"reference ({size} px)"] = np.asarray(references)
    return columns


def plot_examples(columns: Mapping[str, np.ndarray], title: str | None = None) -> Figure:
    """A grid: one row per cell, one column per image kind (LR | bicubic | ESPCN | EDSR | reference)."""
    names = list(columns)
    rows = len(next(iter(columns.values())))
    fig = Figure(figsize=(1.9 * len(names), 1.9 * rows + 0.4))
    axes = fig.subplots(rows, len(names), squeeze=False)
    for c, name in enumerate(names):
        for r in range(rows):
            ax = axes[r][c]
            ax.imshow(columns[name][r], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def report_sr(datamodule, method: str, out: Path, loggers=(), n_examples: int = 6) -> tuple[dict, dict]:
    """PSNR/SSIM of the SR stage (and of bicubic) against the reference on the test split, and a grid of example
    cells (PNG, TensorBoard, and the arrays for the sweep-level grid). Returns (deterministic metrics, timings)."""
    test = datamodule.datasets["test"]
    rows = np.unique(test.rows)
    references, restored = np.asarray(datamodule.references[rows]), np.asarray(test.images[rows])
    pre = datamodule.preprocessor
    bicubic = np.stack([upscale(im, pre.image_size, "bicubic") for im in pre.degrade(references)])
    train_stats = dict(getattr(pre.restorer, "train_stats", None) or {})
    metrics: dict[str, Any] = {
        "method": method,
        "scale": pre.lr_scale,
        **sr_quality(restored, references),
        **{f"{k}_bicubic": v for k, v in sr_quality(bicubic, references).items()},
        "test_images": len(rows),
        "train": {k: v for k, v in train_stats.items() if k != "seconds"} or None,
    }
    timing = {"sr_ms_per_image": sr_cost_ms(pre, references), "sr_train_seconds": train_stats.get("seconds")}
    columns = example_columns(pre, references[:n_examples], restored[:n_examples], method)
    np.savez_compressed(
        out / "sr_examples.npz", **{f"col{i}": v for i, v in enumerate(columns.values())}, names=np.array(list(columns))
    )
    fig = plot_examples(columns, title=f"sr={method}, x{pre.lr_scale}: test cells")
    from wbc.loggers import log_figures

    log_figures(loggers, {"sr_examples": fig})
    for logger in loggers:
        logger.log_metrics({f"sr/{k}": v for k, v in metrics.items() if isinstance(v, float)}, step=0)
    save_figure(fig, out / "sr_examples.png")
    log.info(
        "sr=%s x%d: PSNR %.2f dB (bicubic %.2f), SSIM %.4f, %.2f ms/image",
        method,
        pre.lr_scale,
        metrics["psnr"],
        metrics["psnr_bicubic"],
        metrics["ssim"],
        timing["sr_ms_per_image"],
    )
    return metrics, timing
