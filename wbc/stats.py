"""Statistics of the SR study: intervals over seeds, McNemar's exact test, the paired comparison of two methods over
training seeds and test images, Holm's correction, and the smallest difference a design can detect.

The paired comparison (:func:`paired_comparison`) treats the per-image differences d[s, i] = correct_A - correct_B
(seed s, test image i; -1, 0 or +1) as a crossed two-way layout: seeds and test images are both random samples
(of training runs and of cells), and every seed sees the same images. Its variance has three parts,

    Var(mean d) = sigma_seed^2 / S + sigma_image^2 / N + sigma_residual^2 / (S N),

estimated from the two-way ANOVA mean squares (MS_seed, MS_image, MS_residual; a negative image component is
set to 0, so the variance is never below the seed-level paired t-test's MS_seed / (S N)), with Satterthwaite's
degrees of freedom. Training noise enters through MS_seed (S - 1 degrees of freedom: two seeds that disagree give a
wide interval) and test-set sampling through MS_image (an effect carried by a few images that every seed shares is
not mistaken for a general one).

Why not a bootstrap: resampling seeds and then images within each seed (a nested two-level bootstrap) treats the
images as nested in seeds, but they are crossed with them. It counts the per-image noise twice (it is already in
the seed-to-seed spread) and the image effects shared by all seeds too weakly, and with 2-5 seeds its percentile
interval is far too narrow (10-25 % false "helped/hurt" under a true null in our simulation) while its standard
error read with Student-t quantiles is so wide that nothing is ever found (0 % false positives, but also 0-20 %
power where the analysis below has 20-43 %). ``tests/test_stats.py`` simulates the null and checks this analysis
says helped/hurt in about 5 % of repetitions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.8


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean, sample standard deviation and the Student-t confidence interval of the mean over seeds.

    With one value the spread is unknown: std and the interval are NaN.
    """
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "lo": math.nan, "hi": math.nan}
    mean = float(x.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "std": math.nan, "lo": math.nan, "hi": math.nan}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "lo": mean - half, "hi": mean + half}


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs.

    ``only_a``: images that A classified correctly and B did not; ``only_b`` the reverse. Under the null
    hypothesis each discordant pair is a fair coin: the exact binomial test of ``only_a`` successes in
    ``only_a + only_b`` trials with p = 1/2 (scipy's, in log space: any number of pairs).
    """
    only_a, only_b = int(only_a), int(only_b)
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts must be >= 0, got {only_a} and {only_b}")
    n = only_a + only_b
    if n == 0:
        return 1.0
    return float(min(1.0, stats.binomtest(only_a, n, 0.5, alternative="two-sided").pvalue))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error rate control over all the comparisons given).

    The k-th smallest p (k = 1..m) is multiplied by m - k + 1; adjusted values are made non-decreasing in that
    order and capped at 1. A comparison is significant at level alpha when its adjusted p is < alpha. NaN
    p-values (no test) are kept as NaN and do not count in m.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    running = 0.0
    for k, i in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out.tolist()


def _crossed_variance(d: np.ndarray) -> tuple[float, float, dict[str, float]]:
    """Variance of the grand mean of an (S, N) seeds x images table and its Satterthwaite degrees of freedom."""
    s, n = d.shape
    grand = d.mean()
    seed_means, image_means = d.mean(axis=1), d.mean(axis=0)
    ms_seed = n * float(((seed_means - grand) ** 2).sum()) / (s - 1)
    if n < 2:
        return ms_seed / (s * n), float(s - 1), {"ms_seed": ms_seed}
    ms_image = s * float(((image_means - grand) ** 2).sum()) / (n - 1)
    resid = d - seed_means[:, None] - image_means[None, :] + grand
    ms_resid = float((resid**2).sum()) / ((s - 1) * (n - 1))
    parts = {"ms_seed": ms_seed, "ms_image": ms_image, "ms_residual": ms_resid}
    a, b, c = ms_seed / (s * n), ms_image / (s * n), -ms_resid / (s * n)
    if b + c <= 0:  # no image-to-image variation of the effect beyond noise: the seed-level paired t-test
        return a, float(s - 1), parts
    var = a + b + c
    denom = a**2 / (s - 1) + b**2 / (n - 1) + c**2 / ((s - 1) * (n - 1))
    return var, (var**2 / denom if denom > 0 else math.inf), parts


def _rows(correct: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    """Per-seed 0/1 rows from a (seeds, images) array, a 1-D array (one seed) or a list of arrays."""
    if isinstance(correct, np.ndarray) and correct.ndim <= 1:
        correct = [correct]
    return [np.asarray(x, dtype=float).ravel() for x in correct]


def paired_comparison(
    correct_a: Sequence[np.ndarray] | np.ndarray,
    correct_b: Sequence[np.ndarray] | np.ndarray,
    confidence: float = 0.95,
    same_images: bool = True,
    groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """Accuracy difference A - B over paired runs (one per seed) on the same test images: estimate, interval, p.

    ``correct_a``/``correct_b``: per seed, a 0/1 array over that seed's test images (A and B of one seed on the
    same images, in the same order). Returns ``diff`` (mean over seeds and images), ``se``, ``df``, ``lo``/``hi``
    (Student-t interval with ``df``), ``p`` (two-sided), ``method``, ``seeds``, ``images`` and ``mdd`` (the
    smallest true difference this comparison would detect with 80% power at alpha 0.05 two-sided, without
    multiplicity correction: (t_{1-alpha/2, df} + t_{power, df}) * se).

    - 2 or more seeds on identical images: the crossed seeds x images analysis of the module docstring.
    - 2 or more seeds whose test images differ (different split seeds; ``same_images=False`` or arrays of
      different lengths): a paired t-test over seeds of the per-seed accuracy differences (each seed's own test
      images, so test-set sampling is in their spread; df = seeds - 1).
    - 1 seed: McNemar's exact test on the discordant images, with the exact interval that matches it. Training
      noise is not measured: ``method`` says "1 seed" and a verdict from it covers this training run only.
    - ``groups`` (a unit id per image, the same images for every seed: several crops of one cell): each seed's
      differences are averaged per unit first, so that copies of one cell count once; one seed then gets a
      paired t-test over the units, several seeds the crossed seeds x units analysis. ``cells`` counts the units.
    """
    a_rows, b_rows = _rows(correct_a), _rows(correct_b)
    if len(a_rows) != len(b_rows) or any(x.shape != y.shape for x, y in zip(a_rows, b_rows, strict=False)):
        raise ValueError("paired arrays differ in shape: every seed needs A and B on the same images")
    if not a_rows or any(len(x) == 0 for x in a_rows):
        raise ValueError("paired_comparison needs at least one seed with at least one test image")
    d_rows = [x - y for x, y in zip(a_rows, b_rows, strict=True)]
    s = len(d_rows)
    alpha = 1 - confidence
    out: dict[str, Any] = {"seeds": s, "images": int(min(len(d) for d in d_rows))}
    if groups is not None:
        groups = np.asarray(groups)
        if any(len(d) != len(groups) for d in d_rows):
            raise ValueError("groups needs one unit id per image, the same images for every seed")
        _, unit = np.unique(groups, return_inverse=True)
        sizes = np.bincount(unit)
        d_rows = [np.bincount(unit, weights=d) / sizes for d in d_rows]
        out["cells"] = len(sizes)
        if s == 1:
            d = d_rows[0]
            n = len(d)
            diff = float(d.mean())
            se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
            df = float(max(n - 1, 1))
            t = float(stats.t.ppf(1 - alpha / 2, df))
            p = (1.0 if diff == 0 else 0.0) if se == 0 else float(2 * stats.t.sf(abs(diff) / se, df))
            return out | {
                "method": f"paired t over {n} cells, 1 seed (training noise not measured)",
                "diff": diff,
                "se": se,
                "df": df,
                "lo": diff - t * se,
                "hi": diff + t * se,
                "p": p,
                "mdd": (t + float(stats.t.ppf(POWER, df))) * se,
            }
    if s == 1:
        d = d_rows[0]
        n = len(d)
        only_a, only_b = int((d > 0).sum()), int((d < 0).sum())
        diff = float(d.mean())
        se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
        z = float(stats.norm.ppf(1 - alpha / 2))
        # the exact (Clopper-Pearson) interval of the share of discordant images that favour A, mapped onto the
        # accuracy difference (m/n)(2 pi - 1): it excludes 0 exactly when McNemar's exact p < 1 - confidence
        m = only_a + only_b
        lo = hi = 0.0
        if m:
            ci = stats.binomtest(only_a, m, 0.5).proportion_ci(confidence_level=confidence, method="exact")
            lo, hi = m / n * (2 * ci.low - 1), m / n * (2 * ci.high - 1)
        out |= {
            "method": "McNemar exact, 1 seed (training noise not measured)",
            "diff": diff,
            "se": se,
            "df": math.inf,
            "lo": lo,
            "hi": hi,
            "p": mcnemar_exact(only_a, only_b),
            "mdd": (z + float(stats.norm.ppf(POWER))) * se,
        }
        return out
    if same_images and len({len(d) for d in d_rows}) == 1:
        table = np.stack(d_rows)
        diff = float(table.mean())
        var, df, parts = _crossed_variance(table)
        units = "cells" if groups is not None else "images"
        out |= {"method": f"seeds x {units} ({s} seeds)", **parts}
    else:
        per_seed = np.array([d.mean() for d in d_rows])
        diff = float(per_seed.mean())
        var, df = float(per_seed.var(ddof=1)) / s, float(s - 1)
        out |= {"method": f"paired t over {s} seeds (different test images)"}
    se = math.sqrt(max(var, 0.0))
    if se == 0:
        p, half, mdd = (1.0 if diff == 0 else 0.0), 0.0, 0.0
    else:
        p = float(2 * stats.t.sf(abs(diff) / se, df))
        half = float(stats.t.ppf(1 - alpha / 2, df)) * se
        mdd = (float(stats.t.ppf(1 - alpha / 2, df)) + float(stats.t.ppf(POWER, df))) * se
    return out | {"diff": diff, "se": se, "df": df, "lo": diff - half, "hi": diff + half, "p": p, "mdd": mdd}


def pooled_std(groups: Sequence[Sequence[float]]) -> tuple[float, int]:
    """Pooled between-seed standard deviation over groups (each a list of one metric over seeds) and its degrees
    of freedom: sqrt(sum_g (n_g - 1) s_g^2 / sum_g (n_g - 1)). Groups with fewer than 2 values add nothing."""
    ss, df = 0.0, 0
    for values in groups:
        x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
        if len(x) >= 2:
            ss += float(((x - x.mean()) ** 2).sum())
            df += len(x) - 1
    return (math.sqrt(ss / df) if df else math.nan), df


def detectable_difference(std: float, seeds: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true accuracy difference between two methods that a comparison over ``seeds`` paired seeds
    detects with probability ``power`` (two-sided test at ``alpha``), given the between-seed standard deviation
    ``std`` of one method's accuracy:

        MDD = (t_{1 - alpha/2, S-1} + t_{power, S-1}) * sqrt(2) * std / sqrt(S)

    (sqrt(2) * std: the spread of a difference of two independently trained runs). NaN with fewer than 2 seeds or
    an unknown ``std``. Test-set sampling adds to this; the per-comparison ``mdd`` of :func:`paired_comparison`
    includes it.
    """
    if seeds < 2 or not math.isfinite(std):
        return math.nan
    q = float(stats.t.ppf(1 - alpha / 2, seeds - 1)) + float(stats.t.ppf(power, seeds - 1))
    return q * math.sqrt(2) * std / math.sqrt(seeds)


def verdict(diff: float, p_adjusted: float, alpha: float = ALPHA) -> str:
    """helped / hurt / no measurable difference, from the difference (method - baseline) and its adjusted p."""
    if math.isfinite(p_adjusted) and p_adjusted < alpha:
        return "helped" if diff > 0 else "hurt"
    return "no measurable difference"
