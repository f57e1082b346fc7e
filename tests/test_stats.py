"""Statistics against values computed by hand, at sizes that used to crash, and under a simulated true null."""

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from wbc.stats import (
    detectable_difference,
    holm,
    mcnemar_exact,
    mean_interval,
    paired_comparison,
    pooled_std,
    verdict,
)


def _exact_two_sided(k: int, n: int) -> float:
    """min(1, 2 P(Binomial(n, 1/2) <= min(k, n-k))) in exact rational arithmetic."""
    low = min(k, n - k)
    tail = Fraction(sum(math.comb(n, i) for i in range(low + 1)), 2**n)
    return float(min(Fraction(1), 2 * tail))


def test_mcnemar_exact_by_hand():
    # b=1, c=6: n=7, P(X<=1) = (C(7,0) + C(7,1)) / 2^7 = 8/128; two-sided: 16/128 = 0.125
    assert mcnemar_exact(1, 6) == pytest.approx(0.125)
    assert mcnemar_exact(6, 1) == pytest.approx(0.125)
    # b=0, c=5: 2 * 1/32 = 0.0625
    assert mcnemar_exact(0, 5) == pytest.approx(0.0625)
    # balanced discordance: p capped at 1; no discordant pairs: 1
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    # b=2, c=10: n=12, (1 + 12 + 66) / 4096 * 2 = 158/4096
    assert mcnemar_exact(2, 10) == pytest.approx(158 / 4096)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


@pytest.mark.parametrize("n", [10, 1025, 100_000])
def test_mcnemar_exact_at_any_size(n):
    """n = 10, just past the old 2.0**n overflow (1,023 pairs) and 100,000 pairs: exact, finite, in [0, 1]."""
    for k in sorted({0, 1, n // 10, n // 2 - n // 50, n // 2, n - 3}):
        p = mcnemar_exact(k, n - k)
        assert 0.0 <= p <= 1.0 and math.isfinite(p)
        if n <= 1025:  # exact rational arithmetic is affordable here
            assert p == pytest.approx(_exact_two_sided(k, n), rel=1e-9, abs=1e-300)
    assert mcnemar_exact(n // 2, n - n // 2) == 1.0
    if n == 100_000:
        # 49,000 vs 51,000: the normal approximation with continuity correction agrees closely
        z = (abs(49_000 - 50_000) - 0.5) / math.sqrt(n / 4)
        assert mcnemar_exact(49_000, 51_000) == pytest.approx(2 * stats.norm.sf(z), rel=0.02)
        assert mcnemar_exact(0, n) == 0.0  # 2 * 2^-100000 underflows to 0, no OverflowError


def test_mean_interval_by_hand():
    # [1, 2, 3]: mean 2, sd 1, t(0.975, 2) = 4.302653 -> half width 4.302653 / sqrt(3) = 2.484138
    r = mean_interval([1.0, 2.0, 3.0])
    assert r["mean"] == 2.0 and r["std"] == 1.0 and r["n"] == 3
    assert r["lo"] == pytest.approx(2 - 2.484138, abs=1e-5) and r["hi"] == pytest.approx(2 + 2.484138, abs=1e-5)
    one = mean_interval([0.5])
    assert one["mean"] == 0.5 and math.isnan(one["std"]) and math.isnan(one["lo"])
    assert mean_interval([None, float("nan")])["n"] == 0


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04, 0.5 -> x4 = 0.04, x3 = 0.09, x2 = 0.08 (raised to 0.09: monotone), x1 = 0.5
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.2, 0.9]) == pytest.approx([0.4, 0.9])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = holm([0.01, math.nan, 0.02])  # NaN (no test) keeps NaN and does not count in m
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert holm([]) == []


def test_crossed_analysis_by_hand():
    # 2 seeds x 3 images of differences: d = [[1, 0, 1], [0, 0, 1]]
    # grand 0.5; seed means 2/3, 1/3; image means 0.5, 0, 1
    # MS_seed = 3 * ((1/6)^2 + (1/6)^2) / 1 = 1/6; MS_image = 2 * (0 + 0.25 + 0.25) / 2 = 0.5
    # residuals: d - seed - image + grand = [[1/3, -1/6, -1/6], [-1/3, 1/6, 1/6]] -> MS_resid = (1/3) / 2 = 1/6
    # Var = (MS_seed + MS_image - MS_resid) / (S N) = (1/6 + 1/2 - 1/6) / 6 = 1/12
    a = np.array([[1, 1, 1], [1, 1, 1]])
    b = np.array([[0, 1, 0], [1, 1, 0]])
    r = paired_comparison(a, b)
    assert r["diff"] == pytest.approx(0.5)
    assert r["ms_seed"] == pytest.approx(1 / 6) and r["ms_image"] == pytest.approx(0.5)
    assert r["ms_residual"] == pytest.approx(1 / 6)
    assert r["se"] == pytest.approx(math.sqrt(1 / 12))
    # Satterthwaite: (a + b + c)^2 / (a^2/1 + b^2/2 + c^2/2) with a, b, c = 1/36, 1/12, -1/36
    a_, b_, c_ = 1 / 36, 1 / 12, -1 / 36
    assert r["df"] == pytest.approx((a_ + b_ + c_) ** 2 / (a_**2 + b_**2 / 2 + c_**2 / 2))
    assert r["lo"] < 0.5 < r["hi"] and r["seeds"] == 2 and r["images"] == 3


def test_two_seeds_that_disagree_are_not_a_finding():
    """The S=128 case: one seed where the method fixes 60 of 1,300 images, one where it changes nothing. An
    images-only interval calls this a clear gain; over seeds it is not one."""
    n = 1300
    base = np.zeros((2, n))
    base[:, 100:] = 1
    method = base.copy()
    method[0, :60] = 1  # seed 0: +60 images; seed 1: identical
    r = paired_comparison(method, base)
    assert r["diff"] == pytest.approx(30 / n)
    assert r["lo"] < 0 < r["hi"] and r["p"] > 0.05
    assert verdict(r["diff"], r["p"]) == "no measurable difference"
    # the same gain on both seeds is a finding
    both = base.copy()
    both[:, :60] = 1
    r = paired_comparison(both, base)
    assert r["p"] < 1e-6 and r["lo"] > 0 and verdict(r["diff"], r["p"]) == "helped"


def test_paired_comparison_cases():
    rng = np.random.default_rng(0)
    a = (rng.random((3, 400)) < 0.9).astype(int)
    same = paired_comparison(a, a)
    assert same["diff"] == 0 and same["p"] == 1.0 and same["se"] == 0
    # one seed: McNemar's exact test, flagged
    b = a.copy()
    b[0, :40] = 0
    one = paired_comparison(a[:1], b[:1])
    assert "1 seed" in one["method"]
    assert one["p"] == pytest.approx(mcnemar_exact(int(a[0, :40].sum()), 0))
    assert 0 < one["lo"] < one["diff"] <= one["hi"]  # every discordant image favours A: hi = diff
    # its interval is the exact one of McNemar's test: it excludes 0 exactly when p < 0.05
    for only_a, only_b in ((0, 0), (0, 6), (1, 8), (2, 9), (12, 28), (40, 60), (59, 100), (60, 100)):
        a1 = np.r_[np.ones(only_a), np.zeros(only_b), np.ones(200)]
        b1 = np.r_[np.zeros(only_a), np.ones(only_b), np.ones(200)]
        r = paired_comparison(a1, b1)
        assert (r["lo"] > 0 or r["hi"] < 0) == (r["p"] < 0.05), (only_a, only_b, r)
        assert r["lo"] <= r["diff"] <= r["hi"]
    # seeds with different test images (different split seeds): a paired t over seeds
    diff_images = paired_comparison([a[0], a[1, :300]], [b[0], b[1, :300]])
    per_seed = np.array([(a[0] - b[0]).mean(), 0.0])
    assert "paired t" in diff_images["method"]
    assert diff_images["diff"] == pytest.approx(per_seed.mean())
    assert diff_images["se"] == pytest.approx(per_seed.std(ddof=1) / math.sqrt(2)) and diff_images["df"] == 1
    with pytest.raises(ValueError, match="shape"):
        paired_comparison(a, b[:, :10])
    with pytest.raises(ValueError):
        paired_comparison([], [])


def test_detectable_difference_and_pooled_std():
    # (t(0.975, 2) + t(0.8, 2)) * sqrt(2) * 0.01 / sqrt(3) = (4.302653 + 1.060660) * 0.0081650
    assert detectable_difference(0.01, 3) == pytest.approx((4.302653 + 1.060660) * math.sqrt(2) * 0.01 / math.sqrt(3))
    assert detectable_difference(0.01, 10) < detectable_difference(0.01, 3)
    assert math.isnan(detectable_difference(0.01, 1)) and math.isnan(detectable_difference(math.nan, 3))
    # groups [1, 2, 3] (SS 2, df 2) and [5, 7] (SS 2, df 1), [9] adds nothing: sqrt(4 / 3)
    sd, df = pooled_std([[1, 2, 3], [5, 7], [9]])
    assert sd == pytest.approx(math.sqrt(4 / 3)) and df == 3
    assert math.isnan(pooled_std([[1.0]])[0])


def test_verdict():
    assert verdict(0.02, 0.01) == "helped"
    assert verdict(-0.02, 0.01) == "hurt"
    assert verdict(0.02, 0.2) == "no measurable difference"
    assert verdict(0.02, math.nan) == "no measurable difference"


def _simulated_reports(rng, reps, seeds, images, seed_sd, image_sd=0.0, effect=0.0, methods=2):
    """Per repetition: a baseline and ``methods`` methods, ``seeds`` training runs each, on ``images`` test
    images. Each image has its own chance of being right, shared by every method (identical per-image accuracy
    under the null); each run shifts all its images' log-odds by N(0, seed_sd) (training noise); ``effect`` shifts
    the first method's log-odds. ``image_sd`` > 0 (one method): per-image effects that every seed shares but that
    cancel over cells: on each image one of the two (drawn at random) gets +N(0, image_sd) log-odds."""
    logit = rng.normal(2.2, 1.5, (reps, 1, images))
    shape = (reps, seeds, images)

    def runs(shift):
        u = rng.normal(0.0, seed_sd, (reps, seeds, 1)) + shift
        return (rng.random(shape) < 1 / (1 + np.exp(-(logit + u)))).astype(np.int8)

    if image_sd:
        bonus = np.abs(rng.normal(0.0, image_sd, (reps, 1, images)))
        to_method = rng.random((reps, 1, images)) < 0.5
        return runs(np.where(to_method, 0.0, bonus)), [runs(np.where(to_method, bonus, 0.0))]
    base = runs(0.0)
    return base, [runs(effect if m == 0 else 0.0) for m in range(methods)]


def _claims(base, methods):
    """Per repetition: did the report (Holm over its comparisons) say helped or hurt for any method?"""
    claims = []
    for r in range(base.shape[0]):
        results = [paired_comparison(m[r], base[r]) for m in methods]
        adjusted = holm([x["p"] for x in results])
        claims.append(
            [verdict(x["diff"], p) != "no measurable difference" for x, p in zip(results, adjusted, strict=True)]
        )
    return np.array(claims)


@pytest.mark.parametrize(
    "seeds, seed_sd, image_sd",
    [(3, 0.3, 0.0), (5, 0.6, 0.0), (3, 0.1, 1.5), (5, 0.0, 2.0)],
    ids=["3seeds", "5seeds-noisy", "3seeds-image-effects", "5seeds-image-effects"],
)
def test_true_null_is_reported_as_no_difference(seeds, seed_sd, image_sd):
    """Methods no better than the baseline (identical per-image accuracy and training noise per seed; in two cases
    one method with per-image effects that cancel over cells): the report says helped or hurt for any method in at
    most about 5% of 300 repetitions (family-wise, with Holm)."""
    rng = np.random.default_rng(seeds * 1000 + int(10 * image_sd))
    base, methods = _simulated_reports(rng, 300, seeds, 300, seed_sd, image_sd)
    any_claim = _claims(base, methods).any(axis=1).mean()
    assert any_claim <= 0.08, f"false helped/hurt in {any_claim:.1%} of reports"


def test_a_real_gain_is_found():
    """The same design with the first method better (+1 log-odds on every image, about +6 points): it is found
    in most repetitions, and the null method still rarely."""
    rng = np.random.default_rng(7)
    base, methods = _simulated_reports(rng, 200, 5, 300, 0.2, effect=1.0)
    claims = _claims(base, methods)
    assert claims[:, 0].mean() >= 0.8 and claims[:, 1].mean() <= 0.08


def test_grouped_comparison_counts_copies_of_a_cell_once():
    # 60 cells, each seen in 5 crops; A right on 12 cells B gets wrong, B right on 3 that A gets wrong
    cell_a = np.r_[np.ones(12), np.zeros(3), np.ones(45)]
    cell_b = np.r_[np.zeros(12), np.ones(3), np.ones(45)]
    groups = np.repeat(np.arange(60), 5)
    a, b = cell_a[groups], cell_b[groups]
    crops = paired_comparison(a, b)  # McNemar on 60 + 15 discordant crops: five times the evidence there is
    cells = paired_comparison(a, b, groups=groups)
    d = cell_a - cell_b  # by hand: a paired t over the 60 cells
    assert cells["cells"] == 60 and "paired t over 60 cells" in cells["method"]
    assert cells["diff"] == pytest.approx(d.mean()) == pytest.approx(crops["diff"])
    assert cells["se"] == pytest.approx(d.std(ddof=1) / math.sqrt(60))
    assert cells["p"] == pytest.approx(2 * stats.t.sf(d.mean() / (d.std(ddof=1) / math.sqrt(60)), 59))
    assert crops["p"] < 0.001 < cells["p"]
    # two seeds: the crossed analysis over seeds x cells, the same as on the cell means by hand
    two = paired_comparison([a, a], [b, b[::-1]], groups=groups)
    by_hand = paired_comparison([cell_a, cell_a], [cell_b, b[::-1].reshape(60, 5).mean(1)])
    assert "seeds x cells" in two["method"]
    assert (two["diff"], two["se"]) == pytest.approx((by_hand["diff"], by_hand["se"]))
    with pytest.raises(ValueError, match="one unit id per image"):
        paired_comparison(a, b, groups=groups[:10])
