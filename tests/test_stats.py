"""Student-t quantiles and confidence intervals against published values (scipy is not used)."""

from __future__ import annotations

import math

import pytest

from stages.lib.reporting.stats import (
    estimate,
    regularized_incomplete_beta,
    t_quantile,
    t_upper_tail,
)

# Quantiles from standard t tables (and R's qt), to the digits printed there.
KNOWN_QUANTILES = [
    (0.975, 1, 12.706205),
    (0.975, 2, 4.302653),
    (0.975, 4, 2.776445),
    (0.975, 29, 2.045230),
    (0.975, 1000, 1.962339),
    (0.95, 10, 1.812461),
    (0.995, 1, 63.656741),
    (0.9995, 1, 636.619249),
    (0.995, 5, 4.032143),
    (0.6, 3, 0.276671),
]


@pytest.mark.parametrize(("probability", "df", "expected"), KNOWN_QUANTILES)
def test_t_quantile_matches_tables(probability: float, df: int, expected: float) -> None:
    assert t_quantile(probability, df) == pytest.approx(expected, abs=2e-6)


def test_t_quantile_is_symmetric_and_zero_at_the_median() -> None:
    assert t_quantile(0.025, 2) == pytest.approx(-4.302653, abs=2e-6)
    assert t_quantile(0.5, 7) == 0.0


def test_quantile_inverts_the_tail() -> None:
    for df in (1, 2, 3, 9, 50):
        for probability in (0.55, 0.9, 0.975, 0.999):
            assert t_upper_tail(t_quantile(probability, df), df) == pytest.approx(
                1 - probability, rel=1e-9
            )


def test_incomplete_beta_known_values() -> None:
    # I_x(1, 1) = x, I_x(a, 1) = x^a, I_0.5(a, a) = 0.5 by symmetry.
    assert regularized_incomplete_beta(1, 1, 0.3) == pytest.approx(0.3, rel=1e-12)
    assert regularized_incomplete_beta(3, 1, 0.4) == pytest.approx(0.4**3, rel=1e-12)
    assert regularized_incomplete_beta(2.5, 2.5, 0.5) == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: t_quantile(1.0, 3), "probability"),
        (lambda: t_quantile(0.9, 0), "degrees of freedom"),
        (lambda: regularized_incomplete_beta(1, 1, 1.5), "x=1.5"),
        (lambda: estimate([1, 2], 1.2), "confidence"),
    ],
)
def test_bad_arguments_say_what_is_allowed(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


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
