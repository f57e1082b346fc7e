"""Statistics of the SR study: intervals over seeds, McNemar's exact test, paired bootstrap over test images."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


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
    hypothesis each discordant pair is a fair coin: p = min(1, 2 * P(Binomial(n, 1/2) <= min(only_a, only_b))).
    """
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    return min(1.0, 2.0 * sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n)


def paired_bootstrap(
    correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Accuracy difference A - B on the same test images, with a percentile bootstrap interval.

    ``correct_a``/``correct_b`` are (seeds, images) 0/1 arrays: the images are resampled (the same resample
    for every seed and both methods, which keeps the pairing), and the difference is averaged over seeds.
    """
    a = np.atleast_2d(np.asarray(correct_a, dtype=float))
    b = np.atleast_2d(np.asarray(correct_b, dtype=float))
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    per_image = (a - b).mean(axis=0)  # seed-averaged difference per image
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(per_image), size=(n_boot, len(per_image)))
    boots = per_image[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    return {
        "diff": float(per_image.mean()),
        "lo": float(np.quantile(boots, alpha)),
        "hi": float(np.quantile(boots, 1 - alpha)),
    }


def verdict(lo: float, hi: float) -> str:
    """helped / hurt / no measurable difference, from an interval of (method - baseline)."""
    if lo > 0:
        return "helped"
    if hi < 0:
        return "hurt"
    return "no measurable difference"
