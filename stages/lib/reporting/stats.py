"""The report's statistics, from scipy and statsmodels: Student-t intervals, paired t-tests,
Holm's correction, rank and sign tests over matched blocks, equivalence (TOST), heterogeneity of
an effect across another factor's levels, and the number of pairs that would decide a question.

A study has a handful of seeds per combination, so the normal approximation (1.96) would make the
intervals far too narrow: t(0.975, 2) is 4.30. NaN values (a cell without a number) are skipped;
a pair is skipped when either side is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import ttost_paired


def _check(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: {confidence} must be within (0, 1)")


@dataclass(frozen=True)
class Estimate:
    """Mean of a sample with its standard deviation (n - 1) and a Student-t confidence interval.

    With one value the spread and the interval are undefined: std, ci_low and ci_high are NaN.
    """

    mean: float
    std: float
    ci_low: float
    ci_high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2.0


def estimate(values: Iterable[float], confidence: float) -> Estimate:
    """Mean, std and the two-sided `confidence` interval of the finite `values` (NaN skipped)."""
    _check(confidence)
    sample = np.array([float(value) for value in values], dtype=float)
    sample = sample[np.isfinite(sample)]
    n = len(sample)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(sample.mean())
    if n == 1:
        return Estimate(mean, math.nan, math.nan, math.nan, 1)
    std = float(sample.std(ddof=1))
    half_width = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * std / math.sqrt(n)
    return Estimate(mean, std, mean - half_width, mean + half_width, n)


@dataclass(frozen=True)
class Paired:
    """A paired t-test of a - b: the mean difference, its t interval, t, the two-sided p, n pairs.

    With fewer than two pairs there is no spread: interval, t and p are NaN. With differences that
    are all equal the spread is zero: the interval is that one value and p is 0 (or 1 when the
    differences are all 0).
    """

    mean: float
    ci_low: float
    ci_high: float
    t: float
    p: float
    n: int


def paired(a: Sequence[float], b: Sequence[float], confidence: float) -> Paired:
    """Paired t-test (scipy.stats.ttest_rel) of `a` against `b`, pairs with a NaN dropped."""
    _check(confidence)
    first, second = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if first.shape != second.shape:
        raise ValueError(f"paired: {len(first)} values against {len(second)}; need equal lengths")
    keep = np.isfinite(first) & np.isfinite(second)
    first, second = first[keep], second[keep]
    n = len(first)
    if n == 0:
        return Paired(math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    differences = first - second
    mean = float(differences.mean())
    if n == 1:
        return Paired(mean, math.nan, math.nan, math.nan, math.nan, 1)
    if np.ptp(differences) == 0.0:  # no spread: scipy's t is undefined
        return Paired(mean, mean, mean, math.copysign(math.inf, mean), float(mean == 0.0), n)
    result = stats.ttest_rel(first, second)
    interval = result.confidence_interval(confidence)
    return Paired(
        mean,
        float(interval.low),
        float(interval.high),
        float(result.statistic),
        float(result.pvalue),
        n,
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order; NaN stays NaN and is not counted.

    Sorted ascending, the i-th smallest of m p-values becomes max over j <= i of (m - j) * p_j,
    capped at 1 (Holm 1979; the same as statsmodels' multipletests(method="holm")).
    """
    values = np.asarray(p_values, dtype=float)
    adjusted = np.full(len(values), math.nan)
    finite = np.flatnonzero(np.isfinite(values))
    order = finite[np.argsort(values[finite], kind="stable")]
    m = len(order)
    scaled = (m - np.arange(m)) * values[order]
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted.tolist()


# ------------------------------------------------------------------ rank tests over matched blocks
def signed_rank(differences: Sequence[float]) -> float:
    """Two-sided p of the Wilcoxon signed-rank test of matched differences (NaN dropped).

    scipy picks the exact null distribution for small samples without ties or zeros, else the
    normal approximation; zeros are dropped (Wilcoxon's treatment). NaN with no non-zero
    difference to rank, 1.0 when every difference is zero.
    """
    values = np.asarray(differences, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return math.nan
    if not np.any(values != 0.0):
        return 1.0
    return float(stats.wilcoxon(values, zero_method="wilcox").pvalue)


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign test (binomial, p = 1/2) of `wins` against `losses`; ties left out.

    NaN when no pair is decided."""
    decided = wins + losses
    if decided == 0:
        return math.nan
    return float(stats.binomtest(wins, decided, 0.5).pvalue)


def equivalence(differences: Sequence[float], tolerance: float) -> float:
    """p of the paired two one-sided t-tests (TOST) that the mean difference lies within
    ±`tolerance` (statsmodels' ttost_paired); small p: practically the same.

    NaN with fewer than two differences. With no spread the answer is certain: 0.0 when the one
    value lies inside the bounds, 1.0 when it does not.
    """
    values = np.asarray(differences, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2 or tolerance <= 0:
        return math.nan
    if np.ptp(values) == 0.0:
        return 0.0 if abs(values[0]) < tolerance else 1.0
    p, _, _ = ttost_paired(values, np.zeros_like(values), -tolerance, tolerance)
    return float(p)


def fewest_pairs_to_decide(alpha: float) -> int:
    """The fewest matched pairs with which an exact two-sided rank or sign test can reach
    `alpha` at all (every pair one way: p = 2 / 2^n)."""
    return max(1, math.ceil(math.log2(2.0 / alpha)))


def pairs_to_detect(mean: float, std: float, alpha: float, power: float = 0.8) -> float:
    """Matched pairs the signed-rank test needs to detect a mean difference `mean` with spread
    `std` at `alpha` with `power`: the paired t-test's sample size (statsmodels' TTestPower)
    over the signed-rank test's asymptotic relative efficiency to it, 3/pi, and never fewer than
    `fewest_pairs_to_decide`. inf when the mean is 0; NaN when either is undefined."""
    if not (math.isfinite(mean) and math.isfinite(std)):
        return math.nan
    floor = float(fewest_pairs_to_decide(alpha))
    if mean == 0.0:
        return math.inf
    if std == 0.0:
        return floor
    effect = abs(mean) / std
    if effect >= 4.0:  # the spread is noise beside the mean: the fewest pairs decide it
        return floor
    n = float(TTestPower().solve_power(effect_size=effect, alpha=alpha, power=power))
    if not math.isfinite(n):  # the solver found no size (a vanishing effect)
        return math.inf
    return max(floor, math.ceil(n / (3.0 / math.pi)))


def pairs_for_sign_test(share: float, alpha: float, power: float = 0.8) -> float:
    """Decided pairs an exact sign test needs when a share `share` of them go one way (normal
    approximation of the binomial's power), never fewer than `fewest_pairs_to_decide`."""
    floor = float(fewest_pairs_to_decide(alpha))
    if not math.isfinite(share):
        return math.nan
    if share == 0.5:
        return math.inf
    if share in (0.0, 1.0):
        return floor
    z_alpha = float(stats.norm.ppf(1 - alpha / 2))
    z_power = float(stats.norm.ppf(power))
    n = ((0.5 * z_alpha + z_power * math.sqrt(share * (1 - share))) / (share - 0.5)) ** 2
    return max(floor, math.ceil(n))


def pairs_to_show_equivalence(
    mean: float, std: float, tolerance: float, alpha: float, power: float = 0.8
) -> float:
    """Matched pairs with which TOST would show |difference| < `tolerance` when the true mean
    difference is `mean` with spread `std` (normal approximation); inf when |mean| >= tolerance."""
    if not (math.isfinite(mean) and math.isfinite(std)) or tolerance <= 0:
        return math.nan
    margin = tolerance - abs(mean)
    if margin <= 0:
        return math.inf
    if std == 0.0:
        return 2.0
    z_alpha = float(stats.norm.ppf(1 - alpha))
    z_power = float(stats.norm.ppf(1 - (1 - power) / 2))
    return max(2.0, math.ceil(((z_alpha + z_power) * std / margin) ** 2))


def heterogeneity(groups: Sequence[Sequence[float]]) -> float:
    """p of a one-way ANOVA (scipy's f_oneway) that the mean matched difference is the same in
    every group: does an effect depend on another factor's level? Groups with no finite value
    are dropped; NaN with fewer than two groups or no residual degrees of freedom. Groups without
    spread are decided exactly: 0.0 when their means differ, 1.0 when they are equal."""
    kept = [np.asarray(g, dtype=float) for g in groups]
    kept = [g[np.isfinite(g)] for g in kept]
    kept = [g for g in kept if len(g)]
    total = sum(len(g) for g in kept)
    if len(kept) < 2 or total - len(kept) < 1:
        return math.nan
    if all(np.ptp(g) == 0.0 for g in kept):
        means = {float(g[0]) for g in kept}
        return 1.0 if len(means) == 1 else 0.0
    return float(stats.f_oneway(*kept).pvalue)
