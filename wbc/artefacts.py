"""What a finished run leaves in its folder: metrics.json, figures, predictions, and the loggers' copies."""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from wbc.plots import plot_confusion_matrix, plot_per_class_metrics, plot_training_curves, save_figure

log = logging.getLogger(__name__)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; an undefined metric is null
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: str | Path, data: dict) -> None:
    Path(path).write_text(json.dumps(_json_safe(data), indent=2, sort_keys=False) + "\n")


def write_predictions(
    path: str | Path, paths: Sequence[str], class_names: Sequence[str], outputs: dict[str, torch.Tensor]
) -> None:
    """One row per test image: path, true and predicted class, confidence, probability per class."""
    probs = outputs["probs"].float()
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "predicted", "correct", "confidence", *[f"p/{c}" for c in class_names]])
        for i, p, t in zip(outputs["index"].tolist(), probs, outputs["target"].tolist(), strict=True):
            pred = int(p.argmax())
            writer.writerow(
                [
                    paths[i],
                    class_names[t],
                    class_names[pred],
                    int(pred == t),
                    f"{float(p[pred]):.6f}",
                    *[f"{float(v):.6f}" for v in p],
                ]
            )


def save_figures(
    out_dir: Path,
    class_names: Sequence[str],
    confusion: torch.Tensor | None,
    test_metrics: dict[str, float],
    history: list[dict],
    loggers: Sequence = (),
    step: int = 0,
) -> list[Path]:
    """Confusion matrices (counts, row-normalised), per-class chart and training curves as PNG, and to every
    logger that shows figures (:func:`wbc.loggers.log_figures`)."""
    figures = {}
    if confusion is not None:
        figures["confusion_matrix"] = plot_confusion_matrix(confusion, class_names, title="Test confusion (counts)")
        figures["confusion_matrix_normalized"] = plot_confusion_matrix(
            confusion, class_names, normalize=True, title="Test confusion (row-normalised)"
        )
    if test_metrics:
        figures["per_class_metrics"] = plot_per_class_metrics(test_metrics, class_names, prefix="test/")
    if history:
        figures["training_curves"] = plot_training_curves(history)
    from wbc.loggers import log_figures

    log_figures(loggers, figures, step)
    written = []
    for name, fig in figures.items():
        path = out_dir / f"{name}.png"
        save_figure(fig, path)
        written.append(path)
    return written
