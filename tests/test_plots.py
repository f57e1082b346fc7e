"""Figures from wbc.reports.plots: structure, normalisation, PNG output."""

import warnings

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from wbc.reports.plots import plot_confusion_matrix, plot_per_class_metrics, plot_training_curves, save_figure

NAMES = ["Neutrophil", "Lymphocyte", "Monocyte", "Eosinophil/Basophil"]
CM = np.array([[5, 1, 0, 0], [2, 6, 0, 0], [0, 0, 0, 0], [1, 0, 1, 2]])  # Monocyte row has no samples


def test_confusion_matrix_counts():
    fig = plot_confusion_matrix(torch.tensor(CM), NAMES, title="val")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # matrix + colorbar
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), CM)
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES
    assert len(ax.texts) == 16 and ax.get_title() == "val"


def test_confusion_matrix_normalised_rows_sum_to_one():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the empty row must not trigger a division warning
        fig = plot_confusion_matrix(CM, NAMES, normalize=True)
    values = np.asarray(fig.axes[0].images[0].get_array())
    np.testing.assert_allclose(values.sum(axis=1), [1, 1, 0, 1])
    np.testing.assert_array_equal(values[2], 0)
    assert values[0, 0] == pytest.approx(5 / 6)


def test_per_class_metrics_with_prefix_and_missing_values():
    metrics = {f"test/{m}/{c}": 0.5 for m in ("precision", "recall", "specificity", "f1") for c in NAMES}
    metrics["test/f1/Eosinophil/Basophil"] = 1.0
    del metrics["test/recall/Monocyte"]
    fig = plot_per_class_metrics(metrics, NAMES, prefix="test/")
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.patches) == 4 * 4  # 4 metrics x 4 classes
    labels = [t.get_text() for t in ax.texts]
    assert labels.count("n/a") == 1 and "1.00" in labels
    assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] >= 1
    # "test" without the slash works too
    assert len(plot_per_class_metrics(metrics, NAMES, names=("f1",), prefix="test").axes[0].patches) == 4


def test_training_curves_handle_missing_keys():
    history = [
        {"epoch": 0, "train/loss": 1.2, "train/accuracy": 0.5},
        {"epoch": 0, "val/loss": 1.0, "val/accuracy": 0.55, "val/f1_macro": 0.4},
        {"epoch": 1, "train/loss": 0.8, "train/accuracy": 0.7, "val/loss": 0.9},
        {"train/loss": 0.6},  # no epoch: falls back to its index (3)
    ]
    fig = plot_training_curves(history)
    assert len(fig.axes) == 3
    loss, acc, f1 = fig.axes
    assert [len(line.get_xdata()) for line in loss.lines] == [3, 2]  # train, val
    assert list(loss.lines[0].get_xdata()) == [0, 1, 3]
    assert len(acc.lines) == 2
    assert len(f1.lines) == 1 and f1.lines[0].get_label() == "val"
    assert len(plot_training_curves([]).axes) == 3


def test_save_figure_writes_png(tmp_path):
    path = tmp_path / "nested" / "dir" / "cm.png"
    save_figure(plot_confusion_matrix(CM, NAMES, normalize=True), path)
    data = path.read_bytes()
    assert len(data) > 1000
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
