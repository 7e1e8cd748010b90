"""The cell outcomes over seeds: times to the target with censoring, and failure rates.

A cell that never reached the validation target has no time, only a time it was watched for
(censored). Averaging the reached cells alone would flatter a slow level, so times are summarized
by the Kaplan-Meier estimator (statsmodels' SurvfuncRight): its median, with the interval that
inverts a test on the log-log survival (Brookmeyer-Crowley as SAS computes it). The median is the
first time at which fewer than half the cells are still short of the target (statsmodels' strict
rule; SAS and R take a midpoint where the survival is exactly 0.5: with two seeds it is the later
one here); NaN while at least half never reached it, though its
interval may still bound it below. An upper limit of inf means the data do not bound it above.
The plain mean over seeds is given too, but only when every seed reached the target. Failure
rates get an exact (Clopper-Pearson) binomial interval.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from statsmodels.duration.survfunc import SurvfuncRight
from statsmodels.stats.proportion import proportion_confint

from stages.lib.reporting.stats import estimate

# Time outcome -> the cells-table column of how long a cell that never reached it was watched.
TIMES: dict[str, str] = {
    "epochs_to_target": "epochs_observed",
    "seconds_to_target": "seconds_observed",
}


def kaplan_meier(cells: pd.DataFrame, outcome: str) -> SurvfuncRight | None:
    """The Kaplan-Meier fit of `outcome` (a key of TIMES) over `cells`: a cell that reached the
    target is an event at its time, one that did not is censored at its observed time. None
    without a usable cell."""
    reached = cells["reached_target"].to_numpy(dtype=bool)
    times = np.where(reached, cells[outcome], cells[TIMES[outcome]]).astype(float)
    usable = np.isfinite(times)
    if not usable.any():
        return None
    return SurvfuncRight(times[usable], reached[usable].astype(float))


def median_time(cells: pd.DataFrame, outcome: str, confidence: float) -> tuple[float, ...]:
    """(median, ci_low, ci_high) of the Kaplan-Meier fit; NaN where undefined."""
    fit = kaplan_meier(cells, outcome)
    if fit is None or not cells["reached_target"].any():
        return math.nan, math.nan, math.nan
    with np.errstate(divide="ignore", invalid="ignore"):  # no spread: the interval is NaN
        low, high = fit.quantile_ci(0.5, alpha=1.0 - confidence)
    return float(fit.quantile(0.5)), float(low), float(high)


def reached_curve(cells: pd.DataFrame, outcome: str) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier fraction of `cells` that reached the target by each time: (times, fraction),
    starting at (0, 0) and stepping at each event time (hold each value until the next time)."""
    fit = kaplan_meier(cells, outcome)
    if fit is None or not len(fit.surv_times):
        return np.zeros(1), np.zeros(1)
    return np.r_[0.0, fit.surv_times], np.r_[0.0, 1.0 - fit.surv_prob]


def outcome_columns(group: pd.DataFrame, confidence: float) -> dict[str, Any]:
    """combinations.csv's columns of the time and failure outcomes for one combination's cells."""
    reached = int(group["reached_target"].sum())
    row: dict[str, Any] = {"reached": reached}
    for outcome in TIMES:
        median, low, high = median_time(group, outcome, confidence)
        row |= {
            f"{outcome}_median": median,
            f"{outcome}_median_ci_low": low,
            f"{outcome}_median_ci_high": high,
        }
        every = reached == len(group)
        result = estimate(group[outcome] if every else [], confidence)
        row |= {
            f"{outcome}_mean": result.mean,
            f"{outcome}_std": result.std,
            f"{outcome}_ci_low": result.ci_low,
            f"{outcome}_ci_high": result.ci_high,
        }
    failed = int(group["failed_to_train"].sum())
    low, high = proportion_confint(failed, len(group), alpha=1.0 - confidence, method="beta")
    return row | {
        "failed": failed,
        "failure_rate": failed / len(group),
        "failure_rate_ci_low": float(low),
        "failure_rate_ci_high": float(high),
    }
