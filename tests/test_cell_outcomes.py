"""The outcomes of a cell beside its accuracy (speed to a target, failure, loss, gap, gradients) on
hand-made histories, and their summaries over seeds (Kaplan-Meier medians with censoring, exact
failure-rate intervals) against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from stages.lib.reporting.cell_outcomes import (
    OUTCOMES,
    failed_to_train,
    generalization_gap,
    gradient_evidence,
    outcomes,
    time_to_target,
)
from stages.lib.reporting.outcome_summaries import outcome_columns, reached_curve

TARGET = 0.97


def history(val_accuracy: list[float], accuracy: list[float] | None = None) -> pd.DataFrame:
    """One row per epoch (1-based), epoch k taking k seconds so sums are easy to check."""
    epochs = np.arange(1, len(val_accuracy) + 1)
    return pd.DataFrame(
        {
            "epoch": epochs,
            "loss": 0.1,
            "accuracy": accuracy if accuracy is not None else val_accuracy,
            "val_loss": 0.1,
            "val_accuracy": val_accuracy,
            "epoch_seconds": epochs.astype(float),
        }
    )


def metrics(rows: pd.DataFrame, best_epoch: int, best_val_accuracy: float) -> dict:
    return {
        "best_epoch": best_epoch,
        "best_val_accuracy": best_val_accuracy,
        "best_val_loss": 0.08,
        "epochs_run": len(rows),
    }


def diagnostics(norms: dict[int, list[float]], dead: float = math.nan) -> pd.DataFrame:
    """epoch -> grad_norm per hidden layer (hidden_1 first)."""
    return pd.DataFrame(
        [
            {
                "epoch": epoch,
                "layer": f"hidden_{index}",
                "grad_norm": norm,
                "dead_fraction": dead,
                "saturated_fraction": 0.1 * index,
            }
            for epoch, layer_norms in norms.items()
            for index, norm in enumerate(layer_norms, start=1)
        ]
    )


def test_the_first_epoch_at_the_target_and_the_seconds_up_to_its_end() -> None:
    rows = history([0.90, 0.95, 0.97, 0.96, 0.98])  # reached at epoch 3, dips, then again
    assert time_to_target(rows, TARGET) == (3.0, 1.0 + 2.0 + 3.0)
    assert time_to_target(rows.iloc[::-1], TARGET) == (3.0, 6.0)  # row order does not matter
    assert time_to_target(rows, 0.98) == (5.0, 15.0)
    result = outcomes(rows, metrics(rows, 5, 0.98), None, TARGET, 0.05)
    assert result["reached_target"] is True
    assert (result["epochs_observed"], result["seconds_observed"]) == (5, 15.0)
    assert list(result) == list(OUTCOMES)


def test_a_cell_that_never_reaches_the_target_is_censored_not_given_a_number() -> None:
    rows = history([0.90, 0.95, 0.969])
    result = outcomes(rows, metrics(rows, 3, 0.969), None, TARGET, 0.05)
    assert math.isnan(result["epochs_to_target"]) and math.isnan(result["seconds_to_target"])
    assert result["reached_target"] is False
    assert (result["epochs_observed"], result["seconds_observed"]) == (3, 6.0)
    assert result["failed_to_train"] is False  # slow, not failed


def test_a_diverged_history_never_reaches_the_target_and_keeps_its_times_honest() -> None:
    rows = history([0.95, math.nan, math.nan])
    rows.loc[1:, "loss"] = math.nan
    epochs, seconds = time_to_target(rows, TARGET)
    assert math.isnan(epochs) and math.isnan(seconds)
    assert time_to_target(rows, 0.9) == (1.0, 1.0)
    timeless = rows.assign(epoch_seconds=[1.0, math.nan, 3.0])
    result = outcomes(timeless, metrics(rows, 1, 0.95), None, TARGET, 0.05)
    assert math.isnan(result["seconds_observed"])  # a missing epoch time does not count as 0
    assert math.isnan(time_to_target(timeless.assign(val_accuracy=[0.9, 0.98, 0.5]), TARGET)[1])


@pytest.mark.parametrize(
    ("best", "margin", "failed"),
    [
        (0.106, 0.05, True),
        (0.149, 0.05, True),
        (0.15, 0.05, False),
        (0.97, 0.05, False),
        (0.12, 0.0, False),
        (math.nan, 0.05, True),
    ],
)
def test_failed_to_train_is_best_validation_accuracy_below_chance_plus_the_margin(
    best: float, margin: float, failed: bool
) -> None:
    assert failed_to_train(best, margin) is failed


def test_the_generalization_gap_is_taken_at_the_best_epoch_in_points() -> None:
    rows = history([0.90, 0.95, 0.94], accuracy=[0.91, 0.97, 0.99])
    assert generalization_gap(rows, 2) == pytest.approx(2.0)  # not 5.0 at the last epoch
    assert generalization_gap(rows, 3) == pytest.approx(5.0)
    assert math.isnan(generalization_gap(rows, 7))
    result = outcomes(rows, metrics(rows, 2, 0.95), None, TARGET, 0.05)
    assert result["generalization_gap"] == pytest.approx(2.0)
    assert result["best_val_loss"] == 0.08


def test_gradient_ratios_first_over_last_hidden_layer_at_start_and_end() -> None:
    # Vanishing gradients: hidden_1 gets 1/100 of hidden_3's norm at initialization.
    probes = diagnostics({0: [0.01, 0.1, 1.0], 1: [0.5, 0.5, 0.5], 2: [0.2, 0.3, 0.4]}, dead=0.3)
    evidence = gradient_evidence(probes.sample(frac=1.0, random_state=0))  # order-free
    assert evidence["grad_ratio_init"] == pytest.approx(0.01)
    assert evidence["grad_ratio_end"] == pytest.approx(0.5)  # the last epoch, 2
    assert evidence["dead_fraction_end"] == pytest.approx(0.3)
    assert evidence["saturated_fraction_end"] == pytest.approx(0.2)  # mean of 0.1, 0.2, 0.3
    # Ten layers: hidden_10 is the last one, not hidden_9 (names do not sort as numbers).
    deep = diagnostics({0: [1.0] * 9 + [4.0]})
    assert gradient_evidence(deep)["grad_ratio_init"] == pytest.approx(0.25)


def test_gradient_evidence_is_nan_where_it_does_not_apply() -> None:
    off = gradient_evidence(None)
    assert set(off) == {
        "grad_ratio_init",
        "grad_ratio_end",
        "dead_fraction_end",
        "saturated_fraction_end",
    }
    assert all(math.isnan(value) for value in off.values())
    single = gradient_evidence(diagnostics({0: [0.3], 1: [0.2]}))
    assert math.isnan(single["grad_ratio_init"]) and math.isnan(single["grad_ratio_end"])
    assert math.isnan(single["dead_fraction_end"])  # tanh/sigmoid: no dead units measured
    zero = gradient_evidence(diagnostics({0: [0.3, 0.0]}))
    assert math.isnan(zero["grad_ratio_init"])


def cells(reached: list[bool], epochs: list[float], failed: list[bool] | None = None):
    """Cells of one combination: a reached cell's time is `epochs`, a censored one's is its
    observed epochs; every epoch takes 2 seconds."""
    epochs_array = np.array(epochs, dtype=float)
    mask = np.array(reached)
    return pd.DataFrame(
        {
            "reached_target": mask,
            "epochs_to_target": np.where(mask, epochs_array, math.nan),
            "epochs_observed": np.where(mask, epochs_array + 3, epochs_array),
            "seconds_to_target": np.where(mask, 2 * epochs_array, math.nan),
            "seconds_observed": np.where(mask, 2 * epochs_array + 6, 2 * epochs_array),
            "failed_to_train": failed or [False] * len(reached),
        }
    )


def test_the_kaplan_meier_median_counts_censored_cells_as_not_yet() -> None:
    # Reached at 3, 5 and 8; censored (never reached) after 4 and 10 epochs. By hand:
    # S(3) = 4/5 = 0.8; at 5, 3 at risk: S = 0.8 * 2/3 = 0.533; at 8, 2 at risk: S = 0.267 < 0.5,
    # so the median is 8, not 5, the median of the reached cells alone.
    group = cells([True, True, False, True, False], [3, 5, 4, 8, 10])
    row = outcome_columns(group, 0.95)
    assert row["reached"] == 3
    assert row["epochs_to_target_median"] == 8.0
    # Brookmeyer-Crowley on log(-log S), Greenwood variances: |z| at 3, 5, 8 is 1.13, 0.13, 1.01,
    # all within 1.96, so the interval runs from the first event time and is open above.
    assert (row["epochs_to_target_median_ci_low"], row["epochs_to_target_median_ci_high"]) == (
        3.0,
        math.inf,
    )
    assert row["seconds_to_target_median"] == 16.0
    # Not every seed reached the target: no mean (a mean of the fast ones would flatter).
    assert math.isnan(row["epochs_to_target_mean"]) and math.isnan(row["seconds_to_target_mean"])
    times, fraction = reached_curve(group, "epochs_to_target")
    assert times.tolist() == [0.0, 3.0, 5.0, 8.0]
    assert fraction == pytest.approx([0.0, 0.2, 1 - 0.8 * 2 / 3, 1 - 0.8 * 2 / 3 * 1 / 2])


def test_when_every_seed_reaches_the_target_the_mean_is_given_beside_the_median() -> None:
    row = outcome_columns(cells([True, True, True], [3, 4, 8]), 0.95)
    assert row["epochs_to_target_median"] == 4.0
    assert row["epochs_to_target_mean"] == pytest.approx(5.0)
    half = 4.302653 * np.std([3, 4, 8], ddof=1) / math.sqrt(3)  # t(0.975, 2)
    assert row["epochs_to_target_ci_high"] == pytest.approx(5.0 + half, rel=1e-5)
    assert row["seconds_to_target_mean"] == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("reached", "epochs"),
    [([False, False, False], [10, 10, 12]), ([True, False], [3, 10]), ([False], [5])],
    ids=["every cell censored", "half reached", "one censored seed"],
)
def test_the_median_is_undefined_while_half_or_more_never_reached(reached, epochs) -> None:
    row = outcome_columns(cells(reached, epochs), 0.95)
    assert row["reached"] == sum(reached)
    for key in ("median", "mean", "std", "ci_low", "ci_high"):
        assert math.isnan(row[f"epochs_to_target_{key}"]), key
    if any(reached):  # the median is at least the first event time: the interval says so
        low, high = row["epochs_to_target_median_ci_low"], row["epochs_to_target_median_ci_high"]
        assert (low, high) == (3.0, math.inf)
    else:
        assert math.isnan(row["epochs_to_target_median_ci_low"])


def test_one_seed_that_reached_has_a_median_without_an_interval() -> None:
    row = outcome_columns(cells([True], [6]), 0.95)
    assert row["epochs_to_target_median"] == 6.0 and row["epochs_to_target_mean"] == 6.0
    assert math.isnan(row["epochs_to_target_median_ci_low"])
    assert math.isnan(row["epochs_to_target_std"])


def test_failure_rates_get_an_exact_clopper_pearson_interval() -> None:
    none = outcome_columns(cells([True] * 3, [3, 4, 5]), 0.95)
    assert (none["failed"], none["failure_rate"], none["failure_rate_ci_low"]) == (0, 0.0, 0.0)
    assert none["failure_rate_ci_high"] == pytest.approx(1 - 0.025 ** (1 / 3))  # 0.708
    every = outcome_columns(cells([False] * 2, [10, 10], failed=[True, True]), 0.9)
    assert (every["failed"], every["failure_rate"]) == (2, 1.0)
    assert every["failure_rate_ci_low"] == pytest.approx(0.05 ** (1 / 2))  # 0.224
    assert every["failure_rate_ci_high"] == 1.0
