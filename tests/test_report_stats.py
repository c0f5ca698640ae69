"""Seed-to-seed intervals (vglab.report.stats): the t quantile against closed forms and
scipy, paired and Welch intervals against a worked example and scipy.stats, the bootstrap,
one seed, and the threshold check."""

import math

import numpy as np
import pytest

from vglab.report import stats


# ------------------------------------------------------------------ the t quantile
@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995, 0.9995])
def test_t_quantile_closed_forms(p):
    """df = 1 is Cauchy: tan(π(p − 1/2)); df = 2: (2p − 1) √(2 / (1 − (2p − 1)²))."""
    assert stats.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-12)
    u = 2 * p - 1
    assert stats.t_quantile(p, 2) == pytest.approx(u * math.sqrt(2 / (1 - u * u)), rel=1e-12)
    assert stats.t_quantile(1 - p, 2) == pytest.approx(-stats.t_quantile(p, 2), rel=1e-15)


def test_t_quantile_against_scipy():
    sst = pytest.importorskip("scipy.stats")
    for df in (1, 2, 2.5, 3, 4.7, 9, 30, 200, 1000):
        for p in (0.55, 0.9, 0.975, 0.995):
            assert stats.t_quantile(p, df) == pytest.approx(float(sst.t.ppf(p, df)), rel=1e-10), (df, p)
            assert stats.t_cdf(float(sst.t.ppf(p, df)), df) == pytest.approx(p, abs=1e-12)


# ------------------------------------------------------------------ intervals
def test_paired_worked_example():
    """d = (0.2, 0.05, 0.2): mean 0.15, sd √0.0075, se 0.05, t_{0.975, 2} = 0.95 √(2/0.0975) → ± 0.215133."""
    d = stats.difference({0: 0.9, 1: 0.8, 2: 0.85}, {2: 0.65, 0: 0.7, 1: 0.75})  # seed order does not matter
    assert d.paired and d.label == "paired t" and d.n == 3
    assert d.diff == pytest.approx(0.15, abs=1e-15)
    half = 0.95 * math.sqrt(2 / 0.0975) * 0.05
    assert (d.low, d.high) == (pytest.approx(0.15 - half, rel=1e-12), pytest.approx(0.15 + half, rel=1e-12))
    assert d.text() == "+0.150 (95 % interval -0.065 to +0.365; paired t over 3 paired seeds)"


def test_intervals_against_scipy():
    sst = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 12):
        a, b = rng.normal(0.8, 0.05, n), rng.normal(0.7, 0.1, n)
        paired = stats.difference(dict(enumerate(a)), dict(enumerate(b)))
        ref = sst.ttest_rel(a, b).confidence_interval(0.95)
        assert paired.paired and (paired.low, paired.high) == (pytest.approx(ref.low, rel=1e-10),
                                                               pytest.approx(ref.high, rel=1e-10))
        b2 = rng.normal(0.7, 0.1, n + 3)
        welch = stats.difference(a, b2)  # sequences: unpaired
        ref = sst.ttest_ind(a, b2, equal_var=False).confidence_interval(0.95)
        assert welch.label == "Welch t" and (welch.low, welch.high) == (pytest.approx(ref.low, rel=1e-10),
                                                                         pytest.approx(ref.high, rel=1e-10))
        assert welch.n_a == n and welch.n_b == n + 3
        for level in (0.9, 0.99):
            d = stats.difference(dict(enumerate(a)), dict(enumerate(b)), level=level)
            ref = sst.ttest_rel(a, b).confidence_interval(level)
            assert d.low == pytest.approx(ref.low, rel=1e-10) and d.high == pytest.approx(ref.high, rel=1e-10)


def test_pairing_needs_the_same_seeds_and_uses_it():
    """Arms that share each seed's common part: pairing removes it and the interval narrows."""
    common = np.array([0.1, -0.2, 0.3, 0.0])
    a = {s: 0.8 + c + 0.01 * s for s, c in enumerate(common)}
    b = {s: 0.7 + c for s, c in enumerate(common)}
    paired = stats.difference(a, b)
    unpaired = stats.difference(list(a.values()), list(b.values()))
    assert paired.paired and not unpaired.paired
    assert paired.diff == pytest.approx(unpaired.diff)
    assert paired.high - paired.low < 0.1 * (unpaired.high - unpaired.low)
    other = stats.difference(a, {s + 10: v for s, v in b.items()})  # different seeds: Welch
    assert other.label == "Welch t" and other.low == pytest.approx(unpaired.low)
    pd = pytest.importorskip("pandas")
    series = stats.difference(pd.Series(a), pd.Series(b))
    assert series.paired and series.low == pytest.approx(paired.low)


def test_one_seed_gives_no_interval_and_says_so():
    d = stats.difference({0: 0.8}, {0: 0.7})
    assert not d.has_interval and d.diff == pytest.approx(0.1)
    assert d.text(scale=100, digits=1, unit=" points") == "+10.0 points (1 seed per arm: no interval)"
    assert "±" not in d.text() and "0.000" not in d.text()
    for method in ("t", "bootstrap"):
        assert not stats.difference([0.8], [0.7, 0.6], method=method).has_interval
    assert stats.difference([0.8], [0.7, 0.6]).text() == "+0.150 (1 and 2 seeds: no interval)"


def test_one_sample_against_a_reference_value():
    """b a number (e.g. chance): the interval of mean(a) − b is arm a's one-sample t interval."""
    sst = pytest.importorskip("scipy.stats")
    a = {0: 0.12, 1: 0.09, 2: 0.14, 3: 0.11}
    d = stats.difference(a, 0.1)
    ref = sst.ttest_1samp(list(a.values()), 0.1).confidence_interval(0.95)
    assert d.label == "one-sample t" and d.n == 4 and d.n_b == 0
    assert d.diff == pytest.approx(0.115 - 0.1)
    assert (d.low, d.high) == (pytest.approx(ref.low - 0.1, rel=1e-10), pytest.approx(ref.high - 0.1, rel=1e-10))
    boot = stats.difference(a, 0.1, method="bootstrap")
    assert boot.label == "one-sample bootstrap" and -0.01 - 1e-12 <= boot.low <= d.diff <= boot.high <= 0.04 + 1e-12
    assert stats.difference([0.12], 0.1).text() == "+0.020 (1 seed: no interval)"
    with pytest.raises(ValueError, match="reference value b must be finite"):
        stats.difference(a, float("nan"))


def test_non_finite_values_are_dropped_with_their_pair():
    d = stats.difference({0: 0.9, 1: float("nan"), 2: 0.8, 3: 0.85}, {0: 0.7, 1: 0.6, 2: 0.75, 3: 0.65})
    ref = stats.difference({0: 0.9, 2: 0.8, 3: 0.85}, {0: 0.7, 2: 0.75, 3: 0.65})
    assert d.n == 3 and (d.diff, d.low, d.high) == (ref.diff, ref.low, ref.high)
    with pytest.raises(ValueError, match="no finite value"):
        stats.difference([float("nan")], [0.5])


def test_bootstrap():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 1.0, 400), rng.normal(0.5, 1.0, 400)
    one = stats.difference(dict(enumerate(a)), dict(enumerate(b)), method="bootstrap")
    assert one == stats.difference(dict(enumerate(a)), dict(enumerate(b)), method="bootstrap")  # fixed seed
    assert one.label == "paired bootstrap"
    # with many seeds the percentile bootstrap and the t interval agree (to a few % of the width)
    t = stats.difference(dict(enumerate(a)), dict(enumerate(b)))
    assert abs(one.low - t.low) < 0.05 * (t.high - t.low) and abs(one.high - t.high) < 0.05 * (t.high - t.low)
    u = stats.difference(a, b[:300], method="bootstrap")
    w = stats.difference(a, b[:300])
    assert u.label == "unpaired bootstrap"
    assert abs(u.low - w.low) < 0.05 * (w.high - w.low) and abs(u.high - w.high) < 0.05 * (w.high - w.low)
    # the percentile interval of a mean stays inside the range of the per-seed differences
    small = stats.difference({0: 0.9, 1: 0.8, 2: 0.85}, {0: 0.7, 1: 0.75, 2: 0.65}, method="bootstrap")
    assert 0.05 - 1e-12 <= small.low <= 0.15 <= small.high <= 0.2 + 1e-12


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="unknown method 'z'"):
        stats.difference([1, 2], [1, 2], method="z")
    with pytest.raises(ValueError, match="level must be in"):
        stats.difference([1, 2], [1, 2], level=95)
    with pytest.raises(ValueError, match="n_boot must be an integer >= 100"):
        stats.difference([1, 2], [1, 2], method="bootstrap", n_boot=10)
    with pytest.raises(ValueError, match="seed twice"):
        stats.difference(__import__("pandas").Series([1.0, 2.0], index=[0, 0]), [1.0, 2.0])


# ------------------------------------------------------------------ thresholds
def test_threshold_met_by_interval_means_or_neither():
    sure = stats.difference({0: 0.90, 1: 0.91, 2: 0.92}, {0: 0.70, 1: 0.71, 2: 0.72})  # +0.20, tight
    c = stats.check(sure, low=0.10)
    assert c.met_by == "interval" and c.by_means and c.by_interval
    assert c.text.startswith("met by the whole 95 % interval")

    loose = stats.difference({0: 0.9, 1: 0.8, 2: 0.85}, {0: 0.7, 1: 0.75, 2: 0.65})  # +0.15, [-0.065, +0.365]
    c = stats.check(loose, low=0.10, scale=100, digits=1, unit=" points")
    assert c.met_by == "means" and c.by_means and c.by_interval is False
    assert c.text == "met by the means but not by the whole 95 % interval (-6.5 points to +36.5 points)"

    c = stats.check(loose, low=0.20)
    assert c.met_by == "neither" and "reaches it" in c.text
    c = stats.check(sure, high=0.05)
    assert c.met_by == "neither" and "excludes it" in c.text

    # two-sided: "within 5 points"
    same = stats.difference({0: 0.50, 1: 0.52, 2: 0.51}, {0: 0.51, 1: 0.50, 2: 0.52})
    assert stats.check(same, low=-0.05, high=0.05).met_by == "interval"
    assert stats.check(loose, low=-0.05, high=0.05).met_by == "neither"


def test_threshold_with_one_seed():
    d = stats.difference([0.8], [0.6])
    c = stats.check(d, low=0.1)
    assert c.met_by == "means" and c.by_interval is None
    assert c.text == "met by the means (1 seed per arm: no interval)"
    assert stats.check(d, low=0.3).text == "not met by the means (1 seed per arm: no interval)"
    with pytest.raises(ValueError, match="low and/or high"):
        stats.check(d)
