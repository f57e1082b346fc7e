"""Every figure of the project (matplotlib): a run's confusion matrix, per-class metrics, training curves and framing
examples; prediction's coverage-accuracy curve; the cross-dataset bars; the SR study's curves, paired differences
and example cells.

Figures are built with the object API (no pyplot state, safe in callbacks); the caller saves them, e.g. with
`save_figure`, which also closes them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from wbc.prior import tag as prior_tag
from wbc.reports.runs import method_rank

CURVE_PANELS = (("loss", "Loss"), ("accuracy", "Accuracy"), ("f1_macro", "Macro F1"))


def plot_confusion_matrix(
    cm: np.ndarray | Tensor, class_names: Sequence[str], normalize: bool = False, title: str | None = None
) -> Figure:
    """Heatmap of a (C, C) confusion matrix (rows = true, cols = predicted), counts or row-normalised.

    With normalize=True each row sums to 1; a row without samples stays all 0 (no division warning).
    """
    counts = cm.detach().cpu().numpy() if isinstance(cm, Tensor) else np.asarray(cm)
    if normalize:
        rows = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    else:
        values = counts
    c = len(class_names)
    size = 2.5 + 0.9 * c
    fig = Figure(figsize=(size + 1, size), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else max(values.max(), 1))
    fig.colorbar(im, ax=ax, fraction=0.046)
    # Dark cells get white text; the threshold is half the colour range.
    dark = (1 if normalize else max(values.max(), 1)) / 2
    for i in range(c):
        for j in range(c):
            text = f"{values[i, j]:.2f}" if normalize else f"{int(values[i, j])}"
            ax.text(j, i, text, ha="center", va="center", color="white" if values[i, j] > dark else "black")
    ax.set_xticks(range(c), labels=class_names, rotation=35, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(c), labels=class_names)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(title or ("Confusion matrix (row-normalised)" if normalize else "Confusion matrix"))
    return fig


def plot_per_class_metrics(
    metrics: dict[str, float],
    class_names: Sequence[str],
    names: Sequence[str] = ("precision", "recall", "specificity", "f1"),
    prefix: str = "",
) -> Figure:
    """Grouped bars per class from keys "{prefix}{name}/{class}" (prefix e.g. "test/" or "test").

    Missing or NaN values draw no bar and are labelled "n/a".
    """
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    c, k = len(class_names), len(names)
    width = 0.8 / k
    fig = Figure(figsize=(max(6.0, 1.6 * c + 2), 4), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(c)
    for i, name in enumerate(names):
        vals = [float(metrics.get(f"{prefix}{name}/{cls}", math.nan)) for cls in class_names]
        heights = [0.0 if math.isnan(v) else v for v in vals]
        bars = ax.bar(x + (i - (k - 1) / 2) * width, heights, width, label=name)
        labels = ["n/a" if math.isnan(v) else f"{v:.2f}" for v in vals]
        ax.bar_label(bars, labels=labels, padding=2, fontsize=7, rotation=90 if k > 4 else 0)
    ax.set_xticks(x, labels=class_names, rotation=15)
    # Headroom above 1 so the value labels of perfect scores stay inside the axes.
    ax.set_ylim(0, 1.12)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("score")
    ax.set_title(f"Per-class metrics ({prefix.rstrip('/')})" if prefix else "Per-class metrics")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def plot_training_curves(history: list[dict[str, float]]) -> Figure:
    """Loss, accuracy and macro F1 vs epoch, train and val lines, from per-epoch dicts.

    Keys: "epoch", "train/loss", "val/loss", "train/accuracy", ... Any key may be missing from any entry
    (e.g. train and val logged in separate rows); a missing "epoch" falls back to the entry's index.
    """
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    axes = fig.subplots(1, len(CURVE_PANELS))
    for ax, (key, label) in zip(axes, CURVE_PANELS, strict=True):
        for stage, color in (("train", "C0"), ("val", "C1")):  # fixed colours: same stage, same colour
            points = sorted(
                (float(h.get("epoch", i)), float(h[f"{stage}/{key}"]))
                for i, h in enumerate(history)
                if h.get(f"{stage}/{key}") is not None
            )
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, color=color, label=stage)
        if ax.lines:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> None:
    """Save as PNG (whatever the suffix), creating parent folders, then close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)  # releases pyplot-managed figures; a no-op for figures built with Figure()


def plot_framing_examples(rows: Sequence[tuple[str, np.ndarray, np.ndarray | None, np.ndarray]]) -> Figure:
    """One row per image: the source, the located nucleus (magenta) and cell (green), and the framed input
    the classifier sees. ``rows``: (title, source RGB, mask RGB or None when no cell was found, crop RGB)."""
    fig = Figure(figsize=(6.6, 2.2 * max(1, len(rows))), layout="constrained")
    axes = fig.subplots(max(1, len(rows)), 3, squeeze=False)
    for (title, source, mask, crop), ax_row in zip(rows, axes, strict=False):
        panels = (("source", source), ("nucleus / cell", mask), ("framed", crop))
        for ax, (name, image) in zip(ax_row, panels, strict=True):
            ax.set_axis_off()
            if image is None:
                ax.text(0.5, 0.5, "no cell found", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(image, interpolation="nearest" if name != "source" else "antialiased")
            ax.set_title(f"{name}\n{title}" if name == "source" else name, fontsize=8)
    return fig


def plot_cross_dataset(results: Sequence[dict]) -> Figure:
    """Accuracy and macro-F1 per dataset (bars, with bootstrap 95 % intervals), one bar per evaluation setting
    (as trained, adapt_bn, tta, both; each class prior) side by side."""
    names = list(dict.fromkeys(r["name"] for r in results))

    def setting_of(r: dict) -> tuple[bool, bool, str]:
        return bool(r["adapt_bn"]), bool(r.get("tta")), prior_tag(r.get("prior"))

    settings = list(dict.fromkeys(setting_of(r) for r in results))
    width = 0.8 / len(settings)
    fig = Figure(figsize=(3 + 0.8 * len(settings) * len(names), 3.4), layout="constrained")
    axes = fig.subplots(1, 2, squeeze=False)[0]
    for ax, key, label in zip(axes, ("accuracy", "f1_macro"), ("Accuracy", "Macro F1"), strict=True):
        for j, setting in enumerate(settings):
            xs, ys, lo, hi = [], [], [], []
            for i, name in enumerate(names):
                r = next((r for r in results if (r["name"], *setting_of(r)) == (name, *setting)), None)
                if r is None or "metrics" not in r:
                    continue
                v, ci = r["metrics"][key], r["ci95"][key]
                xs.append(i + (j - (len(settings) - 1) / 2) * width)
                ys.append(v)
                lo.append(v - ci[0])
                hi.append(ci[1] - v)
            if xs:
                on = [t for t, flag in zip(("adapt_bn", "tta"), setting, strict=False) if flag]
                on += [f"prior={setting[2]}"] if setting[2] != "train" else []
                tag = " + ".join(on) or "as trained"
                ax.bar(xs, ys, width * 0.95, yerr=[lo, hi], capsize=3, label=tag)
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_ylim(0, 1)
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    return fig


def plot_coverage_accuracy(curve: Sequence[dict]) -> Figure:
    """Accuracy of the predictions kept against the share kept, the most confident first."""
    fig = Figure(figsize=(4.4, 3.4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([r["coverage"] for r in curve], [r["accuracy"] for r in curve], marker="o", ms=3)
    ax.set_xlabel("coverage (share of images kept, most confident first)")
    ax.set_ylabel("accuracy of those kept")
    ax.set_xlim(0, 1.02)
    ax.grid(alpha=0.3)
    return fig


# -- the SR study: the comparison of a sweep and the SR stage's example cells --------------------------------------
def plot_curves(rows: list[dict]) -> Figure:
    """Accuracy, macro-F1 and PSNR against f per SR method; the f=1 reference drawn as the ceiling."""
    panels = [("test/accuracy", "test accuracy"), ("test/f1_macro", "test macro-F1"), ("sr/psnr", "PSNR (dB)")]
    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    configs = sorted({(r["data"], r["model"], r["image_size"]) for r in rows})
    for ax, (key, label) in zip(axes, panels, strict=True):
        for data, model, size in configs:
            subset = [r for r in rows if (r["data"], r["model"], r["image_size"]) == (data, model, size)]
            ref = [r for r in subset if r["lr_scale"] == 1 and r["sr_method"] == "none" and key in r["stats"]]
            if ref and key.startswith("test/"):
                m = ref[0]["stats"][key]["mean"]
                ax.axhline(m, color="k", ls="--", lw=1, label=f"reference f=1 ({model}, {size})")
            methods = sorted({(r["sr"], r["sr_method"]) for r in subset}, key=lambda x: method_rank(*x))
            for method, _ in methods:
                pts = sorted(
                    (r["lr_scale"], r["stats"][key])
                    for r in subset
                    if r["sr"] == method and r["lr_scale"] > 1 and key in r["stats"]
                )
                if not pts:
                    continue
                fs = [p[0] for p in pts]
                means = np.array([p[1]["mean"] for p in pts])
                lo = np.array([p[1]["lo"] if math.isfinite(p[1]["lo"]) else p[1]["mean"] for p in pts])
                hi = np.array([p[1]["hi"] if math.isfinite(p[1]["hi"]) else p[1]["mean"] for p in pts])
                suffix = "" if len(configs) == 1 else f" ({data}, {model}, {size})"
                ax.errorbar(fs, means, yerr=[means - lo, hi - means], marker="o", capsize=3, label=method + suffix)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("f (lr_scale)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_differences(tests: list[dict]) -> Figure:
    """Paired accuracy difference (method - none) with its 95% interval, per method and f (colour: verdict)."""
    fig = Figure(figsize=(7, 0.5 + 0.45 * max(1, len(tests))))
    ax = fig.subplots()
    labels = [
        f"{t['sr']} x{t['lr_scale']} ({t['model']}, {t['image_size']}{', 1 seed' if t['one_seed'] else ''})"
        for t in tests
    ]
    for i, t in enumerate(tests):
        colour = {"helped": "tab:green", "hurt": "tab:red"}.get(t["verdict"], "tab:gray")
        ax.errorbar(
            100 * t["accuracy_diff"],
            i,
            xerr=[[100 * (t["accuracy_diff"] - t["ci_lo"])], [100 * (t["ci_hi"] - t["accuracy_diff"])]],
            fmt="o",
            color=colour,
            capsize=4,
        )
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(range(len(tests)), labels)
    ax.set_xlabel("accuracy difference vs sr=none (points, 95% CI; colour: Holm-corrected verdict)")
    ax.set_title("Does SR help the classifier?")
    fig.tight_layout()
    return fig


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
