"""The SR study report's text: comparison.csv (every metric: mean, std, CI) and comparison.md (the headline table,
per-class table, noise and the verdict sentences)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from wbc.stats import ALPHA, POWER


def _seed_text(replicates: list[tuple[int, int]]) -> str:
    """'0 1 2', or 'split0/seed0 ...' when the runs come from more than one split seed."""
    if len({s for s, _ in replicates}) <= 1:
        return " ".join(str(seed) for _, seed in replicates)
    return " ".join(f"split{s}/seed{seed}" for s, seed in replicates)


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
