"""The report's statistics, from scipy: Student-t intervals, paired t-tests and Holm's correction.

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
