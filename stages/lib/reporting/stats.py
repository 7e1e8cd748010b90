"""Student-t confidence intervals without scipy (not a dependency): the t quantile by bisection.

The t distribution's tail is a regularized incomplete beta function, evaluated with the classic
continued fraction (modified Lentz). A study has a handful of seeds per combination, so the normal
approximation (1.96) would make the intervals far too narrow: t(0.975, 2) is 4.30.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

_TINY = 1e-300
_EPSILON = 1e-15
_MAX_TERMS = 500


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b); converges fast for x < (a + 1) / (a + b + 2)."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    result = d
    for m in range(1, _MAX_TERMS):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            result *= d * c
        if abs(d * c - 1.0) < _EPSILON:
            return result
    raise ArithmeticError(f"incomplete beta I_{x}({a}, {b}): continued fraction did not converge")


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if a <= 0 or b <= 0:
        raise ValueError(f"incomplete beta: a={a} and b={b} must both be > 0")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"incomplete beta: x={x} must be within [0, 1]")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_upper_tail(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom, t >= 0."""
    if t < 0:
        raise ValueError(f"t_upper_tail: t={t} must be >= 0")
    return 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(probability: float, df: float) -> float:
    """The `probability` quantile of Student's t with `df` degrees of freedom.

    Bisection on the upper tail (not on the CDF), so quantiles near 1 keep full precision.
    """
    if not 0.0 < probability < 1.0:
        raise ValueError(f"t quantile: probability {probability} must be within (0, 1)")
    if df <= 0:
        raise ValueError(f"t quantile: {df} degrees of freedom; need > 0")
    if probability < 0.5:
        return -t_quantile(1.0 - probability, df)
    tail = 1.0 - probability
    if tail == 0.5:
        return 0.0
    low, high = 0.0, 1.0
    while t_upper_tail(high, df) > tail:
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        if t_upper_tail(middle, df) > tail:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


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
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: {confidence} must be within (0, 1)")
    sample = [float(value) for value in values if math.isfinite(float(value))]
    n = len(sample)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan, 0)
    mean = math.fsum(sample) / n
    if n == 1:
        return Estimate(mean, math.nan, math.nan, math.nan, 1)
    std = math.sqrt(math.fsum((value - mean) ** 2 for value in sample) / (n - 1))
    half_width = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return Estimate(mean, std, mean - half_width, mean + half_width, n)
