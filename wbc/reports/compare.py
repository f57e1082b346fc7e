"""The SR study's report: aggregate a multirun folder into a table, paired tests against sr=none, and plots.

`python scripts/compare.py outputs/multirun/<date>/<time>` or automatically at the end of a multirun
(:class:`CompareCallback`). Runs are grouped by the config options they ran (:mod:`wbc.reports.runs`); seeds (with
split seeds) are the replicates. Each method at each f is compared with sr=none at the same f, seeds and test
images (:func:`wbc.stats.paired_comparison`: training noise and test-set sampling both counted), the verdicts are
Holm-corrected over all comparisons of the report, and each study states its between-seed noise and the smallest
difference it can detect. The text is written by :mod:`wbc.reports.tables`, the figures drawn by
:mod:`wbc.reports.plots`.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback

from wbc.reports.artefacts import json_safe
from wbc.reports.plots import plot_curves, plot_differences, plot_examples, save_figure
from wbc.reports.runs import (
    group_key,
    is_baseline,
    load_runs,
    method_rank,
    replicate,
    study_key,
    summarise,
    sweep_examples,
)
from wbc.reports.tables import write_tables
from wbc.stats import ALPHA, detectable_difference, holm, mcnemar_exact, paired_comparison, pooled_std, verdict

log = logging.getLogger(__name__)


# -- paired tests -------------------------------------------------------------------------------------------------
def paired_tests(runs: list[dict]) -> list[dict[str, Any]]:
    """Each SR method against sr=none at the same (data, model, size, f), over the seeds both ran, on the test
    images both saw: the comparison of :func:`wbc.stats.paired_comparison`, McNemar per seed, and verdicts
    Holm-corrected over every comparison returned."""
    by_key: dict[tuple, dict] = {(*group_key(r), replicate(r)): r for r in runs}
    baselines = {(*study_key(r), r["run"]["lr_scale"]): r["label"] for r in runs if is_baseline(r)}
    groups = sorted(
        {(*group_key(r), r["run"]["sr_method"]) for r in runs if not is_baseline(r)},
        key=lambda k: (k[0], k[1], k[2], k[4], method_rank(k[3], k[5])),
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
    (root / "comparison.json").write_text(json.dumps(json_safe(report), indent=1, default=str))
    save_figure(plot_curves(rows), root / "comparison.png")
    if tests:
        save_figure(plot_differences(tests), root / "comparison_differences.png")
    examples = sweep_examples(runs)
    if examples is not None:
        save_figure(plot_examples(*examples), root / "sr_examples.png")
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
