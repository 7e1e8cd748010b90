"""Student-t intervals, paired t-tests and Holm's correction against published values and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from stages.lib.reporting.stats import estimate, holm, paired

# Quantiles from standard t tables (and R's qt), to the digits printed there: the intervals use
# these through scipy.
KNOWN_QUANTILES = [(0.975, 2, 4.302653), (0.975, 4, 2.776445), (0.95, 10, 1.812461)]


@pytest.mark.parametrize(("probability", "df", "expected"), KNOWN_QUANTILES)
def test_intervals_use_the_t_quantile_of_the_tables(
    probability: float, df: int, expected: float
) -> None:
    sample = np.arange(df + 1, dtype=float)
    result = estimate(sample, confidence=2 * probability - 1)
    standard_error = sample.std(ddof=1) / math.sqrt(len(sample))
    assert result.half_width == pytest.approx(expected * standard_error, abs=1e-6)


def test_bad_arguments_say_what_is_allowed() -> None:
    with pytest.raises(ValueError, match="confidence"):
        estimate([1, 2], 1.2)
    with pytest.raises(ValueError, match="confidence"):
        paired([1, 2], [1, 2], 0.0)
    with pytest.raises(ValueError, match="equal lengths"):
        paired([1, 2, 3], [1, 2], 0.95)


def test_interval_of_a_known_sample() -> None:
    # 1..5: mean 3, sd sqrt(2.5); half width t(0.975, 4) * sd / sqrt(5) = 1.963243.
    result = estimate([1.0, 2.0, 3.0, 4.0, 5.0], confidence=0.95)
    assert result.n == 5
    assert result.mean == pytest.approx(3.0)
    assert result.std == pytest.approx(math.sqrt(2.5))
    assert result.ci_low == pytest.approx(3.0 - 1.963243, abs=1e-6)
    assert result.ci_high == pytest.approx(3.0 + 1.963243, abs=1e-6)
    assert result.half_width == pytest.approx(1.963243, abs=1e-6)
    # A 90% interval is narrower: t(0.95, 4) = 2.131847.
    assert estimate([1.0, 2.0, 3.0, 4.0, 5.0], 0.90).half_width == pytest.approx(
        2.131847 * math.sqrt(2.5) / math.sqrt(5), abs=1e-6
    )


def test_interval_is_undefined_for_one_value_and_skips_nan() -> None:
    single = estimate([0.97], 0.95)
    assert (single.mean, single.n) == (0.97, 1)
    assert math.isnan(single.std) and math.isnan(single.ci_low) and math.isnan(single.ci_high)
    assert estimate([1.0, math.nan, 3.0], 0.95).n == 2
    assert estimate([], 0.95).n == 0


def test_paired_test_is_scipys_ttest_rel_and_drops_pairs_with_nan() -> None:
    a = [0.981, 0.975, 0.979, 0.983, math.nan, 0.977]
    b = [0.978, 0.974, 0.975, 0.979, 0.970, math.nan]
    result = paired(a, b, 0.95)
    kept_a, kept_b = [0.981, 0.975, 0.979, 0.983], [0.978, 0.974, 0.975, 0.979]
    expected = stats.ttest_rel(kept_a, kept_b)
    differences = np.subtract(kept_a, kept_b)
    half = stats.t.ppf(0.975, 3) * differences.std(ddof=1) / 2.0
    assert result.n == 4
    assert result.mean == pytest.approx(differences.mean())
    assert result.t == pytest.approx(expected.statistic)
    assert result.p == pytest.approx(expected.pvalue)
    assert (result.ci_low, result.ci_high) == pytest.approx(
        (differences.mean() - half, differences.mean() + half)
    )


def test_paired_test_without_spread_or_pairs() -> None:
    one = paired([0.98], [0.97], 0.95)
    assert one.n == 1 and one.mean == pytest.approx(0.01)
    assert math.isnan(one.ci_low) and math.isnan(one.p)
    constant = paired([0.98, 0.99], [0.97, 0.98], 0.95)  # both differences 0.01
    assert constant.p == 0.0 and constant.ci_low == pytest.approx(0.01)
    assert paired([0.98, 0.99], [0.98, 0.99], 0.95).p == 1.0
    assert paired([math.nan], [0.5], 0.95).n == 0


def test_holm_matches_a_worked_example() -> None:
    # Sorted 0.01, 0.02, 0.03, 0.04 of m = 4: 4*0.01, 3*0.02, max(2*0.03, .06), 1*0.04 -> .06.
    assert holm([0.04, 0.01, 0.03, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    # Capped at 1; NaN is kept and not counted in m.
    adjusted = holm([0.5, math.nan, 0.001])
    assert adjusted[0] == pytest.approx(0.5) and adjusted[2] == pytest.approx(0.002)
    assert math.isnan(adjusted[1])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []
