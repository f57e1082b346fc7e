"""What prediction writes about a folder: predictions.csv (one row per file), and with ``evaluate=true`` the
metrics, confusion matrices, per-class chart and coverage-accuracy curve against the folder labels.

:func:`write_predictions` also writes a training run's test_predictions.csv.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from wbc.calibration import expected_calibration_error
from wbc.metrics import ClassificationMetrics, prefixed
from wbc.reports.artefacts import save_figures, write_json
from wbc.reports.plots import plot_coverage_accuracy, save_figure

if TYPE_CHECKING:
    from wbc.predict import FolderLabels


def write_predictions(
    path: str | Path,
    files: Sequence,
    class_names: Sequence[str],
    probs: torch.Tensor,
    labels: Sequence[int | None] | None = None,
    errors: dict[int, str] | None = None,
    review: dict[int, str] | None = None,
    correct: bool = False,
) -> None:
    """The predictions CSV: one row per file with path, (label,) predicted class, (correct,) confidence,
    probability per class, (review, error).

    ``labels``: the true class index per file (None: unknown, an empty cell); ``correct``: a 0/1 column after the
    prediction (a training run's test_predictions.csv, which the sweep comparison pairs). With ``errors`` (the
    files that could not be predicted: predict.py gives every input file a row) the last two columns are review
    (``review``: why a person should look at it; empty when nothing calls for it) and error.
    """
    status, errors, review = errors is not None, errors or {}, review or {}
    head = ["path", *(["label"] if labels is not None else []), "predicted", *(["correct"] if correct else [])]
    head += ["confidence", *[f"p/{c}" for c in class_names], *(["review", "error"] if status else [])]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(head)
        for i, file in enumerate(files):
            label = labels[i] if labels is not None else None
            row = [str(file), *([class_names[label] if label is not None else ""] if labels is not None else [])]
            if i in errors:  # no prediction: empty cells up to the error
                writer.writerow(row + [""] * (len(head) - len(row) - 1) + [errors[i]])
                continue
            p = probs[i].float()
            k = int(p.argmax())
            row += [class_names[k], *([int(k == label)] if correct else [])]
            row += [f"{float(p[k]):.6f}", *[f"{float(v):.6f}" for v in p]]
            writer.writerow(row + ([review.get(i, ""), ""] if status else []))


def review_reasons(
    probs: torch.Tensor, errors: dict[int, str], notes: dict[int, list[str]], min_confidence: float
) -> dict[int, str]:
    """{index: why a person should check this prediction}: the input's own notes (no cell found, low
    resolution, grey-scale) and a calibrated confidence below ``min_confidence``."""
    reasons: dict[int, str] = {}
    for i in range(len(probs)):
        if i in errors:
            continue
        why = list(notes.get(i, []))
        confidence = float(probs[i].max())
        if confidence < min_confidence:
            why.append(f"low confidence ({confidence:.2f})")
        if why:
            reasons[i] = "; ".join(why)
    return reasons


def summarise(
    files: Sequence[Path], class_names: Sequence[str], probs: torch.Tensor, errors: dict[int, str]
) -> dict[str, Any]:
    predicted = [class_names[int(probs[i].argmax())] for i in range(len(files)) if i not in errors]
    counts = Counter(predicted)
    return {
        "files": len(files),
        "predicted": len(predicted),
        "errors": len(errors),
        "per_class": {c: counts.get(c, 0) for c in class_names},
        "error_files": {str(files[i]): why for i, why in sorted(errors.items())},
    }


def evaluate(
    out: Path, class_names: Sequence[str], probs: torch.Tensor, errors: dict[int, str], found: FolderLabels
) -> dict[str, Any]:
    """Full metric set (the training's test metrics: :class:`~wbc.metrics.ClassificationMetrics`), confusion
    matrices and per-class chart against the folder labels; metrics.json; returns the summary's part."""
    predicted = [i for i in range(len(found.labels)) if i not in errors]
    keep = [i for i in predicted if found.labels[i] is not None]
    counts = {
        "labelled": len(keep),  # predicted files in a class folder: evaluated
        "unlabelled": len(predicted) - len(keep),  # predicted files outside the mapped folders: not evaluated
        "unmapped_folders": found.unmapped,
        "outside_class_folders": found.images.get("", 0),
        "class_map": found.folders,
        "split_folders": found.splits,  # the class folders sat in these split folders (all evaluated)
    }
    if not keep:
        return counts
    metrics = ClassificationMetrics(class_names)
    metrics.update(probs[keep], torch.tensor([found.labels[i] for i in keep]))
    values = prefixed(metrics.compute(), "test")
    confusion = metrics.confusion_matrix()
    absent = [c for c, row in zip(class_names, confusion.sum(dim=1).tolist(), strict=True) if row == 0]
    write_json(
        out / "metrics.json",
        {"test": values, "test_confusion_matrix": confusion.tolist(), **counts, "absent_classes": absent},
    )
    save_figures(out, class_names, confusion, values, history=[])
    target = torch.tensor([found.labels[i] for i in keep])
    ece = expected_calibration_error(probs[keep], target)
    curve = coverage_accuracy(probs[keep], target)
    write_json(out / "coverage_accuracy.json", curve)
    save_figure(plot_coverage_accuracy(curve), out / "coverage_accuracy.png")
    headline = {k.removeprefix("test/"): values[k] for k in ("test/accuracy", "test/f1_macro")}
    return {
        **counts,
        **headline,
        "f1_macro_n_classes": values["test/f1_macro_n_classes"],
        "ece": ece,
        "absent_classes": absent,
    }


def coverage_accuracy(probs: torch.Tensor, target: torch.Tensor, points: int = 20) -> list[dict[str, float]]:
    """Accuracy of the most confident predictions as a function of how many are kept (the rest go to a person):
    rows of coverage (share kept), the confidence threshold that keeps them, and their accuracy."""
    confidence, predicted = probs.max(dim=1)
    order = torch.argsort(confidence, descending=True)
    correct = (predicted == target)[order].double().cumsum(0)
    rows = []
    for k in sorted({max(1, round(len(order) * q / points)) for q in range(1, points + 1)}):
        rows.append(
            {
                "coverage": k / len(order),
                "threshold": float(confidence[order[k - 1]]),
                "accuracy": float(correct[k - 1] / k),
            }
        )
    return rows
