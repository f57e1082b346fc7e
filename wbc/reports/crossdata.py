"""The cross-dataset report: cross_dataset.md and .csv (one row per folder and evaluation setting, values with
bootstrap 95 % intervals) and cross_dataset.png, from the results of :func:`wbc.crossdata.evaluate_folder`."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wbc.prior import tag as prior_tag
from wbc.reports.plots import plot_cross_dataset, save_figure


def write_report(results: Sequence[dict[str, Any]], class_names: Sequence[str], out: Path, title: str) -> None:
    """cross_dataset.md / .csv (one row per folder and adaptation setting) and cross_dataset.png."""
    out.mkdir(parents=True, exist_ok=True)
    cols = ["accuracy", "f1_macro", *[f"recall/{c}" for c in range(len(class_names))], "ece"]
    heads = ["accuracy", "macro-F1", *[f"recall {n}" for n in class_names], "ECE"]
    models = any("model" in r for r in results)  # several checkpoints: a column names each, and the summaries
    first = ["dataset", *(["model"] if models else []), "adapt_bn", "tta", "prior", "images (cells)"]
    lines = [f"# {title}", "", "| " + " | ".join([*first, *heads]) + " |", "|" + "---|" * (len(first) + len(heads))]
    rows = []
    for r in results:
        m, ci = r.get("metrics", {}), r.get("ci95", {})
        cells = r.get("cells", r["images"])
        tags = [r["name"], *([r.get("model", "")] if models else [])]
        values = [f"{r['images']} ({cells})", *[_cell(m.get(k), ci.get(k)) for k in cols]]
        setting = [_yes(r["adapt_bn"]), _yes(r.get("tta")), prior_tag(r.get("prior"))]
        lines.append("| " + " | ".join([*tags, *setting, *values]) + " |")
        rows.append([*tags, r["adapt_bn"], bool(r.get("tta")), prior_tag(r.get("prior")), r["images"], cells,
                     *[m.get(k) for k in cols]])  # fmt: skip
    lines += [
        "",
        "Values over all images, with bootstrap 95 % intervals (1,000 resamples) over cells: crops that frame to "
        "the same picture (several crops of one cell) are resampled together, so that they count as one cell's "
        "evidence; macro-F1 averages the classes present in each folder; ECE: 15 equal-width confidence bins, "
        "after the checkpoint's temperature. Prior: the class mix the probabilities assume (train: the training "
        "split's, as trained; folder: each folder's own, estimated on its images; wbc/prior.py).",
    ]
    if models:
        lines += [
            "",
            "Several checkpoints (one recipe, several training seeds): `mean of K` is the mean of their values, its "
            "95 % interval for another seed of the recipe on another sample of such cells (the spread over seeds / K "
            "plus the bootstrap variance of the mean over cells, Student-t); `ensemble of K` averages their "
            "probabilities (one classifier, K times the inference).",
        ]
    lines += _pixel_sizes(results)
    (out / "cross_dataset.md").write_text("\n".join(lines) + "\n")
    with (out / "cross_dataset.csv").open("w", newline="") as f:
        csv.writer(f).writerows([[*first[:-1], "images", "cells", *cols], *rows])
    shown = [r for r in results if str(r.get("model", "mean of")).startswith("mean of")]  # one bar per setting
    save_figure(plot_cross_dataset(shown), out / "cross_dataset.png")


def _yes(flag: bool | None) -> str:
    return "yes" if flag else "no"


def _cell(value: float | None, ci: tuple[float, float] | None) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def _pixel_sizes(results: Sequence[dict[str, Any]]) -> list[str]:
    """Each folder's pixel size and the cells' check of it (``cell_sizes``), where scale framing measured one."""
    lines = []
    for r in results:
        sizes = r.get("cell_sizes")
        if not r.get("um_per_px") or "cell_sizes" not in r:
            continue
        if sizes is None:
            check = "no check (too few located cells of three classes, or a checkpoint without the training sizes)"
        else:
            detail = ", ".join(f"{c} {v['ratio']:.3f}" for c, v in sizes["per_class"].items())
            warn = ": more than 5 % off, check the pixel size (`um_per_px=`)" if sizes["warn"] else ""
            check = f"{sizes['ratio']:.3f} ({detail}){warn}"
        who = f"{r['name']} [{r['model']}]" if r.get("model") else r["name"]
        lines.append(f"- {who}: {r['um_per_px']:.4f} um per pixel; its cells against the training cells: {check}")
    if lines:
        lines = [
            "",
            "Pixel size (scale framing) and the cells' check of it: per predicted class, the folder's median",
            "white-cell diameter over the training cells' (1 when the pixel size is right):",
            "",
            *lines,
        ]
    return lines
