"""The SR study's report: aggregate a multirun folder into a table, paired tests against sr=none, and plots.

`python scripts/compare.py outputs/multirun/<date>/<time>` or automatically at the end of a multirun
(:class:`CompareCallback`). Runs are grouped by (model, image size, SR method, lr_scale); seeds are the
replicates. Each method at each f is compared with sr=none at the same f, seed and test images.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback
from matplotlib.figure import Figure

from wbc.plots import save_figure
from wbc.sr.report import plot_examples
from wbc.stats import mcnemar_exact, mean_interval, paired_bootstrap, verdict

log = logging.getLogger(__name__)

METHOD_ORDER = ["none", "bicubic", "espcn", "edsr"]
HEADLINE = ["test/accuracy", "test/f1_macro", "sr/psnr", "sr/ssim", "sr/ms_per_image"]


def load_runs(root: Path) -> list[dict[str, Any]]:
    """Every finished run below ``root``: its metrics.json plus its test predictions (path -> correct)."""
    runs = []
    for path in sorted(root.glob("**/metrics.json")):
        data = json.loads(path.read_text())
        if "skipped" in data or "test" not in data:
            continue
        predictions = path.parent / "test_predictions.csv"
        correct = {}
        if predictions.exists():
            with predictions.open() as f:
                correct = {row["path"]: int(row["correct"]) for row in csv.DictReader(f)}
        flat = dict(data["test"])
        for key, value in (data.get("sr") or {}).items():
            if isinstance(value, (int, float)):
                flat[f"sr/{key}"] = value
        timing_path = path.parent / "run.json"
        if data.get("sr") and timing_path.exists():  # timings live apart from the deterministic metrics
            ms = json.loads(timing_path.read_text()).get("sr_ms_per_image")
            if ms is not None:
                flat["sr/ms_per_image"] = ms
        runs.append({"dir": path.parent, "run": data["run"], "metrics": flat, "correct": correct})
    return runs


def _group_key(run: dict) -> tuple:
    r = run["run"]
    return (r["model"], r["image_size"], r["sr"], r["lr_scale"])


def _sort_key(key: tuple) -> tuple:
    model, size, method, f = key
    return (model, size, f, METHOD_ORDER.index(method) if method in METHOD_ORDER else 99, method)


def summarise(runs: list[dict]) -> list[dict[str, Any]]:
    """One row per group: mean, std and 95% CI over seeds of every metric."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        groups[_group_key(run)].append(run)
    rows = []
    for key in sorted(groups, key=_sort_key):
        members = groups[key]
        model, size, method, f = key
        names = sorted({k for m in members for k in m["metrics"]})
        stats = {name: mean_interval([m["metrics"].get(name) for m in members]) for name in names}
        rows.append(
            {
                "model": model,
                "image_size": size,
                "sr": method,
                "lr_scale": f,
                "seeds": sorted(m["run"]["seed"] for m in members),
                "stats": stats,
            }
        )
    return rows


def paired_tests(runs: list[dict], n_boot: int = 2000) -> list[dict[str, Any]]:
    """Each SR method against sr=none at the same (model, size, f): McNemar per seed, bootstrap over seeds."""
    by_key = {(*_group_key(r), r["run"]["seed"]): r for r in runs}
    results = []
    for key in sorted({_group_key(r) for r in runs}, key=_sort_key):
        model, size, method, f = key
        if method == "none" or f == 1:
            continue
        seeds = sorted(
            s for (m, sz, me, ff, s) in by_key if (m, sz, me, ff) == key and (m, sz, "none", ff, s) in by_key
        )
        if not seeds:
            continue
        per_seed, a_rows, b_rows = [], [], []
        for seed in seeds:
            a, b = by_key[(*key, seed)]["correct"], by_key[(model, size, "none", f, seed)]["correct"]
            common = sorted(set(a) & set(b))
            if not common:
                continue
            ca, cb = np.array([a[p] for p in common]), np.array([b[p] for p in common])
            only_a, only_b = int(((ca == 1) & (cb == 0)).sum()), int(((ca == 0) & (cb == 1)).sum())
            per_seed.append(
                {
                    "seed": seed,
                    "images": len(common),
                    "only_method": only_a,
                    "only_none": only_b,
                    "accuracy_diff": float(ca.mean() - cb.mean()),
                    "mcnemar_p": mcnemar_exact(only_a, only_b),
                }
            )
            a_rows.append(ca)
            b_rows.append(cb)
        if not per_seed or len({len(r) for r in a_rows}) != 1:
            continue
        boot = paired_bootstrap(np.stack(a_rows), np.stack(b_rows), n_boot=n_boot)
        results.append(
            {
                "model": model,
                "image_size": size,
                "sr": method,
                "lr_scale": f,
                "per_seed": per_seed,
                "accuracy_diff": boot["diff"],
                "ci_lo": boot["lo"],
                "ci_hi": boot["hi"],
                "verdict": verdict(boot["lo"], boot["hi"]),
            }
        )
    return results


def _fmt(s: dict[str, float], scale: float = 1.0, digits: int = 2, ci: bool = True) -> str:
    if not s or s["n"] == 0:
        return "-"
    mean = s["mean"] * scale
    if s["n"] == 1 or not math.isfinite(s["std"]):
        return f"{mean:.{digits}f}"
    if not ci:
        return f"{mean:.{digits}f} ± {s['std'] * scale:.{digits}f}"
    lo, hi = s["lo"] * scale, s["hi"] * scale
    return f"{mean:.{digits}f} ± {s['std'] * scale:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def sentence(test: dict) -> str:
    """One plain sentence per method and f: helped, hurt, or no measurable difference, with its numbers."""
    pct = lambda v: f"{100 * v:+.2f}"  # noqa: E731
    ps = ", ".join(f"{p['mcnemar_p']:.3g}" for p in test["per_seed"])
    return (
        f"sr={test['sr']} at x{test['lr_scale']} ({test['model']}, {test['image_size']} px): "
        f"{test['verdict']} — accuracy {pct(test['accuracy_diff'])} points vs sr=none "
        f"(95% paired-bootstrap CI {pct(test['ci_lo'])} to {pct(test['ci_hi'])}; "
        f"McNemar exact p per seed: {ps})."
    )


def write_tables(rows: list[dict], tests: list[dict], class_names: list[str], out: Path) -> str:
    """comparison.csv (every metric: mean, std, CI) and comparison.md (the headline table and verdicts)."""
    metric_names = sorted({n for r in rows for n in r["stats"]})
    with (out / "comparison.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        header = ["model", "image_size", "sr", "lr_scale", "seeds"]
        for n in metric_names:
            header += [f"{n}:mean", f"{n}:std", f"{n}:ci_lo", f"{n}:ci_hi"]
        writer.writerow(header)
        for r in rows:
            line = [r["model"], r["image_size"], r["sr"], r["lr_scale"], " ".join(map(str, r["seeds"]))]
            for n in metric_names:
                s = r["stats"].get(n, {})
                line += [s.get("mean", ""), s.get("std", ""), s.get("lo", ""), s.get("hi", "")]
            writer.writerow(line)

    cols = [
        ("accuracy %", "test/accuracy", 100),
        ("macro-F1 %", "test/f1_macro", 100),
        ("PSNR dB", "sr/psnr", 1),
        ("SSIM", "sr/ssim", 1),
        ("SR ms/img", "sr/ms_per_image", 1),
    ]
    lines = [
        "# SR study",
        "",
        "Mean ± std [95% CI over seeds]. f = data.lr_scale (f=1: the high-resolution reference).",
        "",
    ]
    lines.append("| model | S | f | sr | seeds | " + " | ".join(c[0] for c in cols) + " |")
    lines.append("|" + "---|" * (5 + len(cols)))
    for r in rows:
        cells = [_fmt(r["stats"].get(key, {}), scale, 4 if key == "sr/ssim" else 2) for _, key, scale in cols]
        lines.append(
            f"| {r['model']} | {r['image_size']} | {r['lr_scale']} | {r['sr']} | {len(r['seeds'])} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", "## Per-class F1 and specificity (%, mean ± std over seeds; intervals in comparison.csv)", ""]
    lines.append("| S | f | sr | " + " | ".join(f"F1 {c} | spec {c}" for c in class_names) + " |")
    lines.append("|" + "---|" * (3 + 2 * len(class_names)))
    for r in rows:
        cells = []
        for c in class_names:
            for name in ("f1", "specificity"):
                cells.append(_fmt(r["stats"].get(f"test/{name}/{c}", {}), 100, 1, ci=False))
        lines.append(f"| {r['image_size']} | {r['lr_scale']} | {r['sr']} | " + " | ".join(cells) + " |")
    lines += ["", "## Does SR help? (each method against sr=none at the same f, seeds and test images)", ""]
    lines += [f"- {sentence(t)}" for t in tests] or ["- no method/sr=none pairs with shared seeds in this sweep"]
    text = "\n".join(lines) + "\n"
    (out / "comparison.md").write_text(text)
    return text


def plot_curves(rows: list[dict]) -> Figure:
    """Accuracy, macro-F1 and PSNR against f per SR method; the f=1 reference drawn as the ceiling."""
    panels = [("test/accuracy", "test accuracy"), ("test/f1_macro", "test macro-F1"), ("sr/psnr", "PSNR (dB)")]
    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    configs = sorted({(r["model"], r["image_size"]) for r in rows})
    for ax, (key, label) in zip(axes, panels, strict=True):
        for model, size in configs:
            subset = [r for r in rows if (r["model"], r["image_size"]) == (model, size)]
            ref = [r for r in subset if r["lr_scale"] == 1 and key in r["stats"]]
            if ref and key.startswith("test/"):
                m = ref[0]["stats"][key]["mean"]
                ax.axhline(m, color="k", ls="--", lw=1, label=f"reference f=1 ({model}, {size})")
            for method in [m for m in METHOD_ORDER if any(r["sr"] == m for r in subset)]:
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
                suffix = "" if len(configs) == 1 else f" ({model}, {size})"
                ax.errorbar(fs, means, yerr=[means - lo, hi - means], marker="o", capsize=3, label=method + suffix)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("f (lr_scale)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_differences(tests: list[dict]) -> Figure:
    """Paired accuracy difference (method - none) with its 95% bootstrap interval, per method and f."""
    fig = Figure(figsize=(7, 0.5 + 0.45 * max(1, len(tests))))
    ax = fig.subplots()
    labels = [f"{t['sr']} x{t['lr_scale']} ({t['model']}, {t['image_size']})" for t in tests]
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
    ax.set_xlabel("accuracy difference vs sr=none (points, 95% CI)")
    ax.set_title("Does SR help the classifier?")
    fig.tight_layout()
    return fig


def example_grid(runs: list[dict]) -> Figure | None:
    """LR | bicubic | ESPCN | EDSR | reference for the same test cells, from the runs' saved examples."""
    found: dict[tuple[int, int], dict[str, Path]] = defaultdict(dict)
    for r in runs:
        path = r["dir"] / "sr_examples.npz"
        if r["run"]["lr_scale"] > 1 and path.exists():
            found[(r["run"]["image_size"], r["run"]["lr_scale"])][r["run"]["sr"]] = path
    if not found:
        return None
    size, f = max(found)  # the largest size, then the largest f: where SR has the most to do
    columns: dict[str, np.ndarray] = {}
    for path in found[(size, f)].values():
        data = np.load(path)
        for i, name in enumerate(data["names"]):
            columns.setdefault(str(name), data[f"col{i}"])
    rank = {m: i for i, m in enumerate(["bicubic", *METHOD_ORDER])}
    order = sorted(
        columns, key=lambda n: (0 if n.startswith("LR") else 2 if n.startswith("reference") else 1, rank.get(n, 99))
    )
    return plot_examples({n: columns[n] for n in order}, title=f"test cells at {size} px, x{f}")


def compare(root: str | Path, class_names: list[str] | None = None) -> str:
    """Write comparison.{md,csv,json,png}, comparison_differences.png and sr_examples.png into ``root``."""
    root = Path(root)
    runs = load_runs(root)
    if not runs:
        raise FileNotFoundError(f"{root}: no finished runs (metrics.json with test metrics) below this folder")
    if class_names is None:
        class_names = runs[0]["run"].get("class_names") or sorted(
            {k.split("/", 2)[2] for r in runs for k in r["metrics"] if k.startswith("test/f1/")}
        )
    rows, tests = summarise(runs), paired_tests(runs)
    text = write_tables(rows, tests, class_names, root)
    (root / "comparison.json").write_text(json.dumps({"groups": rows, "paired_tests": tests}, indent=1, default=str))
    save_figure(plot_curves(rows), root / "comparison.png")
    if tests:
        save_figure(plot_differences(tests), root / "comparison_differences.png")
    grid = example_grid(runs)
    if grid is not None:
        save_figure(grid, root / "sr_examples.png")
    return text


class CompareCallback(Callback):
    """Hydra callback: write the comparison report into the sweep folder when a multirun ends."""

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        root = Path(config.hydra.sweep.dir)
        try:
            text = compare(root, list(config.get("class_names") or []) or None)
        except FileNotFoundError as err:
            log.warning("no comparison written: %s", err)
            return
        log.info("comparison written to %s\n%s", root, text)
