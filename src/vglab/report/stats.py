"""Seed-to-seed uncertainty of a compared difference between two arms.

A claim compares two arms (e.g. final accuracy at N(0, std=10) and at N(0, std=1)), each
measured over seeds. `difference(a, b)` returns mean(a) − mean(b) with a 95 % interval:

- paired, when both arms are given per seed ({seed: value}, or a pandas Series indexed by
  seed) over the same seeds: arms that share a seed share the base draw of their
  initialization and the data order (`vglab.nn.init`), so the per-seed differences
  d_s = a_s − b_s cancel that common part. Student t: mean(d) ± t_{n−1} sd(d)/√n.
- unpaired otherwise (different seeds, or plain sequences): Welch's t, with the
  Welch–Satterthwaite degrees of freedom (the two arms' variances are not assumed equal).
- one-sample, when `b` is a number (a known reference such as chance, 1/n_classes):
  mean(a) − b ± t_{n−1} sd(a)/√n.
- `method="bootstrap"`: the percentile interval of the mean difference over resamples of
  the seeds (pairs when paired, each arm on its own otherwise), from a fixed seed. With the
  presets' 3 seeds a resample takes one of only 10 distinct means per arm and the percentile
  interval is narrower than the t interval (it under-covers); t is the default.

One seed per arm (or one pair) gives no interval: `Difference.has_interval` is False and the
text says so, never "± 0.000". Non-finite values (a diverged run's NaN) are dropped, with
their pair when paired; `n_a`, `n_b` count what was used.

`check(d, low=..., high=...)` tells whether a threshold rule on the difference is met by
the means, by the whole interval, or neither, so a claim whose threshold is met by the means
but not by the interval can say so.

The Student t quantile is computed here (regularized incomplete beta by its continued
fraction, then bisection), so this module needs only numpy; the tests compare it with
scipy.stats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
N_BOOT = 10_000
BOOT_SEED = 0
METHODS = ("t", "bootstrap")


# ------------------------------------------------------------------ the t quantile
def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def betainc(a: float, b: float, x: float, y: float | None = None) -> float:
    """The regularized incomplete beta function I_x(a, b). `y` = 1 − x when the caller has
    it more accurately than 1 − x (Student t at large df has x within 1e-7 of 1)."""
    y = 1.0 - x if y is None else y
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, y) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` (> 0, not necessarily integer) degrees of freedom."""
    tail = 0.5 * betainc(0.5 * df, 0.5, df / (df + t * t), t * t / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom (bisection on `t_cdf` to a
    relative 1e-14). Matches scipy.stats.t.ppf to 1e-12 up to df = 3000; beyond, the lgamma
    difference in `betainc` loses digits (2e-11 at df = 1e4), far below what a seed interval needs."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if not df > 0:
        raise ValueError(f"df must be > 0, got {df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-14 * hi:
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# ------------------------------------------------------------------ the difference
@dataclass(frozen=True)
class Difference:
    """mean(a) − mean(b) over seeds, with its interval (NaN bounds when there is none)."""

    diff: float
    low: float
    high: float
    n_a: int  # seeds used in arm a (pairs, when paired)
    n_b: int  # seeds used in arm b (0: b is a fixed reference value)
    design: str  # "paired" | "unpaired" | "one-sample"
    method: str  # "t" | "bootstrap"
    level: float = LEVEL

    @property
    def paired(self) -> bool:
        return self.design == "paired"

    @property
    def label(self) -> str:
        """'paired t', 'Welch t', 'one-sample t', 'paired bootstrap', 'unpaired bootstrap', ..."""
        return "Welch t" if (self.design, self.method) == ("unpaired", "t") else f"{self.design} {self.method}"

    @property
    def n(self) -> int:
        """Seeds behind the interval: the pairs when paired, arm a's against a reference value,
        else the smaller arm."""
        return self.n_a if self.design == "one-sample" else min(self.n_a, self.n_b)

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def text(self, scale: float = 1.0, digits: int = 3, unit: str = "") -> str:
        """e.g. '+0.052 (95 % interval +0.010 to +0.094; paired t over 3 paired seeds)', or
        '+0.052 (1 seed per arm: no interval)'. `scale` and `unit` express it in other units
        (scale=100, digits=1, unit=' points')."""
        f = lambda v: f"{v * scale:+.{digits}f}{unit}"  # noqa: E731
        if not self.has_interval:
            return f"{f(self.diff)} ({_seeds(self)}: no interval)"
        return f"{f(self.diff)} ({_level(self)} interval {f(self.low)} to {f(self.high)}; {self.label} over {_seeds(self)})"


def _level(d: Difference) -> str:
    return f"{d.level * 100:g} %"


def _seeds(d: Difference) -> str:
    if d.design == "one-sample":
        return f"{d.n_a} seed{'s' if d.n_a != 1 else ''}"
    if d.n_a == 1 and d.n_b == 1:
        return "1 seed per arm"
    if d.paired:
        return f"{d.n_a} paired seeds"
    return f"{d.n_a} seeds per arm" if d.n_a == d.n_b else f"{d.n_a} and {d.n_b} seeds"


def _values(x):
    """(seeds or None, float values) of one arm: a mapping (dict, pandas Series) or a sequence."""
    if hasattr(x, "items") and not isinstance(x, np.ndarray):
        items = list(x.items())
        seeds = [k for k, _ in items]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"an arm lists a seed twice ({seeds}); give one value per seed (average runs first)")
        return seeds, np.array([v for _, v in items], dtype=float)
    return None, np.asarray(x, dtype=float).ravel()


def difference(a, b, *, method: str = "t", level: float = LEVEL, n_boot: int = N_BOOT,
               seed: int = BOOT_SEED) -> Difference:
    """mean(a) − mean(b) over seeds with a `level` interval (see the module docstring).

    `a`, `b`: per-seed values, as {seed: value} / a pandas Series indexed by seed (paired
    when both give the same seeds) or plain sequences (unpaired); `b` may also be a number,
    a fixed reference (one-sample). `method`: "t" or "bootstrap" (percentile, `n_boot`
    resamples drawn from `seed`)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95, got {level}")
    if not (isinstance(n_boot, int) and n_boot >= 100):
        raise ValueError(f"n_boot must be an integer >= 100 (resamples of the seeds), got {n_boot!r}")
    sa, va = _values(a)
    if np.ndim(b) == 0 and not hasattr(b, "items"):  # a fixed reference value
        if not math.isfinite(float(b)):
            raise ValueError(f"the reference value b must be finite, got {b}")
        design, sb, vb = "one-sample", None, np.full(1, float(b))
    else:
        sb, vb = _values(b)
        design = "paired" if sa is not None and sb is not None and set(sa) == set(sb) else "unpaired"
    paired, one = design == "paired", design == "one-sample"
    if paired:
        vb = vb[[sb.index(s) for s in sa]]  # b in a's seed order
        keep = np.isfinite(va) & np.isfinite(vb)
        va, vb = va[keep], vb[keep]
    else:
        va, vb = va[np.isfinite(va)], vb[np.isfinite(vb)]
    if va.size == 0 or vb.size == 0:
        raise ValueError("an arm has no finite value to compare; check that its runs completed and did not diverge")
    diff = float(va.mean() - vb.mean())
    lo = hi = float("nan")
    q = (0.5 - level / 2, 0.5 + level / 2)
    if paired or one:  # per-seed differences (against the fixed reference when one-sample)
        d = va - vb
        if d.size >= 2 and method == "t":
            half = t_quantile(q[1], d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
            lo, hi = diff - half, diff + half
        elif d.size >= 2:
            boot = d[np.random.default_rng(seed).integers(0, d.size, (n_boot, d.size))].mean(1)
            lo, hi = np.quantile(boot, q)
    elif va.size >= 2 and vb.size >= 2 and method == "t":  # Welch
        ua, ub = va.var(ddof=1) / va.size, vb.var(ddof=1) / vb.size
        if ua + ub == 0.0:
            lo = hi = diff
        else:
            df = (ua + ub) ** 2 / (ua ** 2 / (va.size - 1) + ub ** 2 / (vb.size - 1))
            half = t_quantile(q[1], df) * math.sqrt(ua + ub)
            lo, hi = diff - half, diff + half
    elif va.size >= 2 and vb.size >= 2:
        rng = np.random.default_rng(seed)
        boot = (va[rng.integers(0, va.size, (n_boot, va.size))].mean(1)
                - vb[rng.integers(0, vb.size, (n_boot, vb.size))].mean(1))
        lo, hi = np.quantile(boot, q)
    return Difference(diff, float(lo), float(hi), int(va.size), 0 if one else int(vb.size), design, method, level)


# ------------------------------------------------------------------ thresholds
@dataclass(frozen=True)
class ThresholdCheck:
    """Whether `low <= difference <= high` (either bound may be open) holds."""

    by_means: bool  # the mean difference satisfies the rule
    by_interval: bool | None  # the whole interval does (None: no interval)
    text: str

    @property
    def met_by(self) -> str:
        """'interval' (the whole interval meets it), 'means' (only the mean difference does), or 'neither'."""
        return "interval" if self.by_interval else ("means" if self.by_means else "neither")


def check(d: Difference, low: float | None = None, high: float | None = None, *, scale: float = 1.0,
          digits: int = 3, unit: str = "") -> ThresholdCheck:
    """Check the rule low <= difference <= high against the means and the whole interval.

    `difference >= threshold` is check(d, low=threshold); `difference <= threshold` is
    check(d, high=threshold); `|difference| <= margin` is check(d, low=-margin, high=margin).
    The text says which: 'met by the whole 95 % interval', 'met by the means but not by the
    whole 95 % interval (…)', 'not met by the means', with '(n seeds: no interval)' when
    there is none."""
    if low is None and high is None:
        raise ValueError("give the rule's low and/or high bound on the difference")

    def inside(v: float) -> bool:
        return (low is None or v >= low) and (high is None or v <= high)

    by_means = inside(d.diff)
    f = lambda v: f"{v * scale:+.{digits}f}{unit}"  # noqa: E731
    lvl = _level(d)
    if not d.has_interval:
        return ThresholdCheck(by_means, None, f"{'met' if by_means else 'not met'} by the means ({_seeds(d)}: no interval)")
    by_interval = inside(d.low) and inside(d.high)
    if by_interval:
        text = f"met by the whole {lvl} interval ({f(d.low)} to {f(d.high)})"
    elif by_means:
        text = f"met by the means but not by the whole {lvl} interval ({f(d.low)} to {f(d.high)})"
    else:
        reaches = (low is None or d.high >= low) and (high is None or d.low <= high)
        text = (f"not met by the means; the {lvl} interval ({f(d.low)} to {f(d.high)}) "
                f"{'reaches' if reaches else 'excludes'} it")
    return ThresholdCheck(by_means, by_interval, text)
