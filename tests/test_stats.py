"""Statistics against values computed by hand."""

import math

import numpy as np
import pytest

from wbc.stats import mcnemar_exact, mean_interval, paired_bootstrap, verdict


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


def test_mean_interval_by_hand():
    # [1, 2, 3]: mean 2, sd 1, t(0.975, 2) = 4.302653 -> half width 4.302653 / sqrt(3) = 2.484138
    r = mean_interval([1.0, 2.0, 3.0])
    assert r["mean"] == 2.0 and r["std"] == 1.0 and r["n"] == 3
    assert r["lo"] == pytest.approx(2 - 2.484138, abs=1e-5) and r["hi"] == pytest.approx(2 + 2.484138, abs=1e-5)
    one = mean_interval([0.5])
    assert one["mean"] == 0.5 and math.isnan(one["std"]) and math.isnan(one["lo"])
    assert mean_interval([None, float("nan")])["n"] == 0


def test_paired_bootstrap_brackets_the_difference():
    rng = np.random.default_rng(0)
    a = rng.random((3, 400)) < 0.9
    b = a.copy()
    b[:, :40] = False  # B misses 40 images A got right (where A was right): diff = mean of a[:, :40]
    r = paired_bootstrap(a, b, n_boot=1000)
    assert r["diff"] == pytest.approx(a[:, :40].sum() / (3 * 400))
    assert 0 < r["lo"] < r["diff"] < r["hi"]
    same = paired_bootstrap(a, a, n_boot=200)
    assert same == {"diff": 0.0, "lo": 0.0, "hi": 0.0}
    with pytest.raises(ValueError, match="shape"):
        paired_bootstrap(a, b[:, :10])


def test_verdict():
    assert verdict(0.01, 0.05) == "helped"
    assert verdict(-0.05, -0.01) == "hurt"
    assert verdict(-0.01, 0.02) == "no measurable difference"
