"""The SR study's report: aggregate a multirun folder into a table, paired tests against sr=none, and plots.

`python scripts/compare.py outputs/multirun/<date>/<time>` or automatically at the end of a multirun
(:class:`CompareCallback`). Runs are grouped by the config options they ran (data, model, sr: Hydra's choices, so
sr=edsr and sr=edsr_small are two methods), image size and lr_scale; seeds (with split seeds) are the replicates.
Each method at each f is compared with sr=none at the same f, seeds and test images (:func:`wbc.stats.
paired_comparison`: training noise and test-set sampling both counted), the verdicts are Holm-corrected over all
comparisons of the report, and each study states its between-seed noise and the smallest difference it can detect.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback
from matplotlib.figure import Figure

from wbc.plots import save_figure
from wbc.sr.report import plot_examples
from wbc.stats import (
    ALPHA,
    POWER,
    detectable_difference,
    holm,
    mcnemar_exact,
    mean_interval,
    paired_comparison,
    pooled_std,
    verdict,
)

log = logging.getLogger(__name__)

METHOD_ORDER = ["none", "bicubic", "espcn", "edsr"]
HEADLINE = ["test/accuracy", "test/f1_macro", "sr/psnr", "sr/ssim", "sr/ms_per_image"]


# -- loading ------------------------------------------------------------------------------------------------------
def _variant(run: dict) -> tuple:
    """What an sr option contained in this run: two runs of one option that differ here are two methods."""
    arch = run.get("sr_arch")
    return (run.get("sr_backend", "torch"), json.dumps(arch, sort_keys=True) if arch else "", run.get("sr_weights"))


def _label_variants(runs: list[dict[str, Any]]) -> None:
    """Give each run its method label: the sr option, plus what differs when one option ran in several forms
    (e.g. sr=edsr on a GPU and on a CPU, sr.backend=opencv, another sr.arch)."""
    variants: dict[str, set[tuple]] = defaultdict(set)
    for r in runs:
        variants[r["run"]["sr"]].add(_variant(r["run"]))
    for r in runs:
        info = r["run"]
        label = info["sr"]
        if len(variants[label]) > 1:
            backend, arch, weights = _variant(info)
            bits = [backend] if backend != "torch" else []
            bits += [f"{k}={v}" for k, v in sorted((info.get("sr_arch") or {}).items())] if arch else []
            bits += [Path(weights).name] if weights else []
            label = f"{label} ({', '.join(bits) or 'default'})"
        r["label"] = label


def load_runs(root: Path) -> list[dict[str, Any]]:
    """Every finished run below ``root``: its metrics.json plus its test predictions (path -> correct).

    Runs written before the options were recorded (no ``data``/``sr_method`` in metrics.json's ``run``) are read
    with what they have: their source name as data option, their sr method as sr option.
    """
    runs = []
    for path in sorted(Path(root).glob("**/metrics.json")):
        data = json.loads(path.read_text())
        if "skipped" in data or "test" not in data:
            continue
        info = dict(data["run"])
        info.setdefault("data", info.get("source", "unknown"))
        info.setdefault("sr_method", info.get("sr", "none"))
        info.setdefault("split_seed", 0)
        predictions = path.parent / "test_predictions.csv"
        correct = {}
        if predictions.exists():
            with predictions.open() as f:
                correct = {row["path"]: int(row["correct"]) for row in csv.DictReader(f)}
        flat = {k: v for k, v in data["test"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for key, value in (data.get("sr") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"sr/{key}"] = value
        timing_path = path.parent / "run.json"
        if data.get("sr") and timing_path.exists():  # timings live apart from the deterministic metrics
            ms = json.loads(timing_path.read_text()).get("sr_ms_per_image")
            if ms is not None:
                flat["sr/ms_per_image"] = ms
        runs.append({"dir": path.parent, "run": info, "metrics": flat, "correct": correct})
    _label_variants(runs)
    return runs


# -- grouping -----------------------------------------------------------------------------------------------------
def _study_key(run: dict) -> tuple:
    r = run["run"]
    return (str(r["data"]), str(r["model"]), r["image_size"])


def _group_key(run: dict) -> tuple:
    return (*_study_key(run), run["label"], run["run"]["lr_scale"])


def _replicate(run: dict) -> tuple[int, int]:
    return (run["run"].get("split_seed", 0), run["run"]["seed"])


def _is_baseline(run: dict) -> bool:
    return run["run"].get("sr_method", run["run"]["sr"]) == "none"


def _method_rank(label: str, method: str) -> tuple:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else 99, label)


def _sort_key(row: dict) -> tuple:
    return (row["data"], row["model"], row["image_size"], row["lr_scale"], _method_rank(row["sr"], row["sr_method"]))


def _seed_text(replicates: list[tuple[int, int]]) -> str:
    """'0 1 2', or 'split0/seed0 ...' when the runs come from more than one split seed."""
    if len({s for s, _ in replicates}) <= 1:
        return " ".join(str(seed) for _, seed in replicates)
    return " ".join(f"split{s}/seed{seed}" for s, seed in replicates)


def summarise(runs: list[dict]) -> list[dict[str, Any]]:
    """One row per group: mean, std and 95% CI over seeds of every metric."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        groups[_group_key(run)].append(run)
    rows = []
    for key, members in groups.items():
        data, model, size, label, f = key
        names = sorted({k for m in members for k in m["metrics"]})
        stats = {name: mean_interval([m["metrics"].get(name) for m in members]) for name in names}
        replicates = sorted(_replicate(m) for m in members)
        rows.append(
            {
                "data": data,
                "model": model,
                "image_size": size,
                "sr": label,
                "sr_method": members[0]["run"]["sr_method"],
                "lr_scale": f,
                "seeds": [seed for _, seed in replicates],
                "replicates": [list(r) for r in replicates],
                "accuracy_per_seed": [m["metrics"].get("test/accuracy") for m in sorted(members, key=_replicate)],
                "stats": stats,
            }
        )
    return sorted(rows, key=_sort_key)


# -- paired tests -------------------------------------------------------------------------------------------------
def paired_tests(runs: list[dict]) -> list[dict[str, Any]]:
    """Each SR method against sr=none at the same (data, model, size, f), over the seeds both ran, on the test
    images both saw: the comparison of :func:`wbc.stats.paired_comparison`, McNemar per seed, and verdicts
    Holm-corrected over every comparison returned."""
    by_key: dict[tuple, dict] = {(*_group_key(r), _replicate(r)): r for r in runs}
    baselines = {(*_study_key(r), r["run"]["lr_scale"]): r["label"] for r in runs if _is_baseline(r)}
    groups = sorted(
        {(*_group_key(r), r["run"]["sr_method"]) for r in runs if not _is_baseline(r)},
        key=lambda k: (k[0], k[1], k[2], k[4], _method_rank(k[3], k[5])),
    )
    results = []
    for data, model, size, label, f, method in groups:
        base_label = baselines.get((data, model, size, f))
        if base_label is None or f == 1:
            continue
        replicates = sorted(
            rep
            for (*key, rep) in by_key
            if tuple(key) == (data, model, size, label, f) and (data, model, size, base_label, f, rep) in by_key
        )
        per_seed, a_rows, b_rows, image_lists = [], [], [], []
        for rep in replicates:
            a = by_key[(data, model, size, label, f, rep)]["correct"]
            b = by_key[(data, model, size, base_label, f, rep)]["correct"]
            common = sorted(set(a) & set(b))
            if not common:
                continue
            ca, cb = np.array([a[p] for p in common]), np.array([b[p] for p in common])
            only_a, only_b = int(((ca == 1) & (cb == 0)).sum()), int(((ca == 0) & (cb == 1)).sum())
            per_seed.append(
                {
                    "split_seed": rep[0],
                    "seed": rep[1],
                    "images": len(common),
                    "only_method": only_a,
                    "only_none": only_b,
                    "accuracy_diff": float(ca.mean() - cb.mean()),
                    "mcnemar_p": mcnemar_exact(only_a, only_b),
                }
            )
            a_rows.append(ca)
            b_rows.append(cb)
            image_lists.append(common)
        if not per_seed:
            continue
        same_images = all(lst == image_lists[0] for lst in image_lists)
        comparison = paired_comparison(a_rows, b_rows, same_images=same_images)
        results.append(
            {
                "data": data,
                "model": model,
                "image_size": size,
                "sr": label,
                "sr_method": method,
                "baseline": base_label,
                "lr_scale": f,
                "per_seed": per_seed,
                "one_seed": comparison["seeds"] == 1,
                "analysis": comparison["method"],
                "seeds": comparison["seeds"],
                "images": comparison["images"],
                "accuracy_diff": comparison["diff"],
                "se": comparison["se"],
                "df": comparison["df"],
                "ci_lo": comparison["lo"],
                "ci_hi": comparison["hi"],
                "p": comparison["p"],
                "mdd": comparison["mdd"],
            }
        )
    adjusted = holm([t["p"] for t in results])
    for t, p in zip(results, adjusted, strict=True):
        t["p_holm"] = p
        t["comparisons"] = len(results)
        t["verdict"] = verdict(t["accuracy_diff"], p)
    return results


def study_noise(rows: list[dict], tests: list[dict]) -> list[dict[str, Any]]:
    """Per study (data, model, size): the between-seed SD of test accuracy pooled over its groups (each method at
    each f), the seeds per group, and the smallest difference a comparison with that many seeds could detect
    (:func:`wbc.stats.detectable_difference`; also at Holm's strictest level alpha/m for m comparisons)."""
    studies: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        studies[(r["data"], r["model"], r["image_size"])].append(r)
    out = []
    for (data, model, size), members in sorted(studies.items()):
        sd, df = pooled_std([r["accuracy_per_seed"] for r in members])
        seeds = Counter(len(r["seeds"]) for r in members).most_common(1)[0][0]
        m_all = max(1, len(tests))  # Holm runs over every comparison of the report
        out.append(
            {
                "data": data,
                "model": model,
                "image_size": size,
                "groups": len(members),
                "seeds": seeds,
                "between_seed_sd": sd,
                "sd_df": df,
                "mdd": detectable_difference(sd, seeds),
                "mdd_holm_strictest": detectable_difference(sd, seeds, alpha=ALPHA / m_all),
                "comparisons_in_report": m_all,
            }
        )
    return out


# -- text ---------------------------------------------------------------------------------------------------------
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


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def sentence(test: dict) -> str:
    """One plain sentence per method and f: helped, hurt, or no measurable difference, with its numbers."""
    pct = lambda v: f"{100 * v:+.2f}"  # noqa: E731
    where = f"at x{test['lr_scale']} ({test['data']}, {test['model']}, {test['image_size']} px)"
    holm_text = (
        f"Holm-adjusted over {test['comparisons']} comparisons p={_p(test['p_holm'])}"
        if test["comparisons"] > 1
        else "1 comparison"
    )
    mcnemar = ", ".join(_p(p["mcnemar_p"]) for p in test["per_seed"])
    if test["one_seed"]:
        seed = test["per_seed"][0]["seed"]
        return (
            f"sr={test['sr']} {where}: {test['verdict']} on this training run (1 seed) — accuracy "
            f"{pct(test['accuracy_diff'])} points vs sr={test['baseline']} on {test['images']} test images "
            f"(95% CI over images {pct(test['ci_lo'])} to {pct(test['ci_hi'])}; McNemar exact p={mcnemar}, "
            f"{holm_text}). One seed (seed={seed}) does not measure training noise: add seed=0,1,2 for a verdict "
            "that covers it."
        )
    return (
        f"sr={test['sr']} {where}: {test['verdict']} — accuracy {pct(test['accuracy_diff'])} points vs "
        f"sr={test['baseline']} (95% CI {pct(test['ci_lo'])} to {pct(test['ci_hi'])} over {test['seeds']} seeds "
        f"and {test['images']} test images; p={_p(test['p'])}, {holm_text}; McNemar exact p per seed: {mcnemar})."
    )


def noise_sentence(study: dict) -> str:
    """The study's between-seed noise and detectable difference, in words, with the formula."""
    where = f"{study['data']}, {study['model']}, {study['image_size']} px"
    if not math.isfinite(study["between_seed_sd"]):
        return (
            f"{where}: {study['seeds']} seed per group, so the between-seed standard deviation and the smallest "
            "detectable difference are unknown; the verdicts cover these training runs only (add seed=0,1,2)."
        )
    sd, s = 100 * study["between_seed_sd"], study["seeds"]
    return (
        f"{where}: between-seed SD of test accuracy {sd:.2f} points (pooled over {study['groups']} groups, "
        f"{study['sd_df']} df). With {s} seeds a comparison detects a true difference of "
        f"{100 * study['mdd']:.2f} points with {POWER:.0%} power at alpha {ALPHA} "
        f"(MDD = (t[1-alpha/2, S-1] + t[power, S-1]) x sqrt(2) x SD / sqrt(S), S = {s}); at Holm's strictest level "
        f"(alpha/{study['comparisons_in_report']}) "
        f"{100 * study['mdd_holm_strictest']:.2f} points. Test-set sampling adds to this (per comparison: mdd in "
        "comparison.json)."
    )


def write_tables(
    rows: list[dict], tests: list[dict], class_names: list[str], out: Path, studies: list[dict] | None = None
) -> str:
    """comparison.csv (every metric: mean, std, CI) and comparison.md (the headline table and verdicts)."""
    metric_names = sorted({n for r in rows for n in r["stats"]})
    with (out / "comparison.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        header = ["data", "model", "image_size", "sr", "sr_method", "lr_scale", "seeds"]
        for n in metric_names:
            header += [f"{n}:mean", f"{n}:std", f"{n}:ci_lo", f"{n}:ci_hi"]
        writer.writerow(header)
        for r in rows:
            line = [r["data"], r["model"], r["image_size"], r["sr"], r["sr_method"], r["lr_scale"]]
            line.append(_seed_text([tuple(x) for x in r["replicates"]]))
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
        "Mean ± std [95% CI over seeds]. f = data.lr_scale (f=1: the high-resolution reference); sr = the config "
        "option each run used.",
        "",
    ]
    lines.append("| data | model | S | f | sr | seeds | " + " | ".join(c[0] for c in cols) + " |")
    lines.append("|" + "---|" * (6 + len(cols)))
    for r in rows:
        cells = [_fmt(r["stats"].get(key, {}), scale, 4 if key == "sr/ssim" else 2) for _, key, scale in cols]
        lines.append(
            f"| {r['data']} | {r['model']} | {r['image_size']} | {r['lr_scale']} | {r['sr']} | {len(r['seeds'])} | "
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
    if studies:
        lines += ["", "## Noise and the smallest detectable difference", ""]
        lines += [f"- {noise_sentence(s)}" for s in studies]
    lines += [
        "",
        "## Does SR help? (each method against sr=none at the same f, seeds and test images)",
        "",
        f"Verdicts at alpha {ALPHA} after Holm's correction over all {len(tests)} comparisons of this report; "
        "intervals are per comparison (95%, not corrected). Over several seeds the analysis counts training noise "
        "(seed to seed) and test-set sampling (image to image) together (wbc/stats.py).",
        "",
    ]
    lines += [f"- {sentence(t)}" for t in tests] or ["- no method/sr=none pairs with shared seeds in this sweep"]
    text = "\n".join(lines) + "\n"
    (out / "comparison.md").write_text(text)
    return text


# -- figures ------------------------------------------------------------------------------------------------------
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
            methods = sorted({(r["sr"], r["sr_method"]) for r in subset}, key=lambda x: _method_rank(*x))
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


def example_grid(runs: list[dict]) -> Figure | None:
    """LR | bicubic | ESPCN | EDSR | reference for the same test cells, from the runs' saved examples."""
    found: dict[tuple[int, int], dict[str, Path]] = defaultdict(dict)
    methods: dict[str, str] = {}
    for r in runs:
        path = r["dir"] / "sr_examples.npz"
        if r["run"]["lr_scale"] > 1 and path.exists():
            found[(r["run"]["image_size"], r["run"]["lr_scale"])][r["label"]] = path
            methods[r["label"]] = r["run"]["sr_method"]
    if not found:
        return None
    size, f = max(found)  # the largest size, then the largest f: where SR has the most to do
    columns: dict[str, np.ndarray] = {}
    for label, path in found[(size, f)].items():
        data = np.load(path)
        for i, name in enumerate(data["names"]):
            name = str(name)
            if name not in ("bicubic",) and not name.startswith(("LR", "reference")):
                name = label  # the method's own column, under the option it ran
            columns.setdefault(name, data[f"col{i}"])

    def order(name: str) -> tuple:
        if name.startswith("LR"):
            return (0,)
        if name.startswith("reference"):
            return (2,)
        return (1, *_method_rank(name, "bicubic" if name == "bicubic" else methods.get(name, name)))

    return plot_examples({n: columns[n] for n in sorted(columns, key=order)}, title=f"test cells at {size} px, x{f}")


def _finite(value: Any) -> Any:
    """NaN and infinities as null: comparison.json stays standard JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# -- entry points -------------------------------------------------------------------------------------------------
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
    studies = study_noise(rows, tests)
    text = write_tables(rows, tests, class_names, root, studies)
    report = {"groups": rows, "paired_tests": tests, "studies": studies}
    (root / "comparison.json").write_text(json.dumps(_finite(report), indent=1, default=str))
    save_figure(plot_curves(rows), root / "comparison.png")
    if tests:
        save_figure(plot_differences(tests), root / "comparison_differences.png")
    grid = example_grid(runs)
    if grid is not None:
        save_figure(grid, root / "sr_examples.png")
    return text


def verdict_lines(text: str) -> list[str]:
    """The verdict sentences of a comparison.md text (one per method and f)."""
    return [line[2:] for line in text.splitlines() if line.startswith("- sr=")]


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
        verdicts = verdict_lines(text)
        # the answer, last and plain, also on stdout (Hydra's log may go to a file only)
        print(f"\nSR study verdicts ({root / 'comparison.md'}):", *[f"  {v}" for v in verdicts or ["none"]], sep="\n")
