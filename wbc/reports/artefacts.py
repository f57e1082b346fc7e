"""The per-run report: what a finished run leaves in its folder (metrics.json, figures, and the loggers' copies;
test_predictions.csv: :func:`wbc.reports.predictions.write_predictions`)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from wbc.reports.plots import plot_confusion_matrix, plot_per_class_metrics, plot_training_curves, save_figure

log = logging.getLogger(__name__)


def json_safe(value: Any) -> Any:
    """NaN and infinities as null, in nested dicts and lists: the files stay standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; an undefined metric is null
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: str | Path, data: dict) -> None:
    Path(path).write_text(json.dumps(json_safe(data), indent=2, sort_keys=False) + "\n")


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
