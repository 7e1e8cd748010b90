"""The study as tables over the cells table (cell_results.read_study): one row per combination
(over seeds), one per factor level, the summary metrics.

Every interval is a Student-t interval over seeds, the study's independent replicates; with one
seed there is no spread to estimate, so intervals are NaN (shown as "—"). Times to the validation
target, which some cells never reach, and failure rates are summarized in outcome_summaries.py.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from stages.lib.reporting.cell_results import DIGITS, FACTORS
from stages.lib.reporting.outcome_summaries import outcome_columns
from stages.lib.reporting.stats import estimate

# Metrics aggregated over seeds with mean, std and CI (the per-digit accuracies get means).
SUMMARIZED: tuple[str, ...] = (
    "test_accuracy",
    "best_val_accuracy",
    "best_val_loss",
    "generalization_gap",
    "best_epoch",
    "train_seconds",
)


def combination_label(row: Any) -> str:
    """`relu / he_normal / adam`: how figures and tables name a combination (a row of
    `combinations_table` names only the factors that vary in the study)."""
    if "combination" in row:
        return str(row["combination"])
    return " / ".join(str(row[factor]) for factor in FACTORS)


def combinations_table(cells: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """One row per combination, best mean test accuracy first, ranked 1..n."""
    rows = []
    for levels, group in cells.groupby(list(FACTORS), sort=False):
        row: dict[str, Any] = dict(zip(FACTORS, levels, strict=True))
        row["n"] = len(group)
        for metric in SUMMARIZED:
            result = estimate(group[metric], confidence)
            row |= {
                f"{metric}_mean": result.mean,
                f"{metric}_std": result.std,
                f"{metric}_ci_low": result.ci_low,
                f"{metric}_ci_high": result.ci_high,
            }
        row |= outcome_columns(group, confidence)  # times to target (censored), failures
        row |= {digit: float(group[digit].mean()) for digit in DIGITS}
        rows.append(row)
    table = pd.DataFrame(rows).sort_values("test_accuracy_mean", ascending=False, kind="stable")
    table.insert(0, "rank", range(1, len(table) + 1))
    varied = [factor for factor in FACTORS if cells[factor].nunique() > 1] or list(FACTORS)
    table.insert(
        1, "combination", [" / ".join(str(row[f]) for f in varied) for _, row in table.iterrows()]
    )
    return table.reset_index(drop=True)


def main_effects(cells: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Mean test accuracy per level of each factor, with a CI over seeds.

    Per seed, the level's accuracy is the mean over every cell at that level (the other factors
    averaged out); those per-seed means are the replicates of the interval.
    """
    rows = []
    for factor in FACTORS:
        for level, group in cells.groupby(factor, sort=False):
            per_seed = group.groupby("seed")["test_accuracy"].mean()
            result = estimate(per_seed, confidence)
            rows.append(
                {
                    "factor": factor,
                    "level": level,
                    "mean": result.mean,
                    "ci_low": result.ci_low,
                    "ci_high": result.ci_high,
                    "n": result.n,
                    "cells": len(group),
                }
            )
    return pd.DataFrame(rows)


def level_curves(histories: pd.DataFrame, factor: str) -> pd.DataFrame:
    """Mean validation accuracy per epoch (rows) and level of `factor` (columns).

    A cell stopped early leaves the mean after its last epoch; the mean is over the cells still
    training.
    """
    return histories.pivot_table(
        index="epoch", columns=factor, values="val_accuracy", aggfunc="mean", sort=False
    )


def start_and_end(diagnostics: pd.DataFrame) -> pd.DataFrame:
    """Per combination: dead and saturated fractions at epoch 0 and at each cell's last epoch,
    averaged over hidden layers, then over seeds (NaN where the measure does not apply)."""
    last = diagnostics.groupby("key")["epoch"].transform("max")
    rows = []
    for moment, mask in (
        ("start", diagnostics["epoch"] == 0),
        ("end", diagnostics["epoch"] == last),
    ):
        per_cell = diagnostics[mask].groupby([*FACTORS, "key"], sort=False)[
            ["dead_fraction", "saturated_fraction"]
        ]
        means = per_cell.mean().groupby(list(FACTORS), sort=False).mean()
        rows.append(means.add_suffix(f"_{moment}"))
    return pd.concat(rows, axis=1).reset_index()


def best_and_worst(combinations: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """The first and last rows of the ranked combinations table."""
    return combinations.iloc[0], combinations.iloc[-1]


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN: an undefined number is written as null."""
    return float(value) if value is not None and math.isfinite(value) else None


def summary_metrics(cells: pd.DataFrame, combinations: pd.DataFrame, confidence: float) -> dict:
    """summary.json, DVC's metrics file of the study: small and flat enough for `dvc metrics`."""

    def describe(row: pd.Series) -> dict[str, Any]:
        return {
            **{factor: str(row[factor]) for factor in FACTORS},
            "test_accuracy_mean": finite_or_none(row["test_accuracy_mean"]),
            "test_accuracy_ci_low": finite_or_none(row["test_accuracy_ci_low"]),
            "test_accuracy_ci_high": finite_or_none(row["test_accuracy_ci_high"]),
            "n": int(row["n"]),
        }

    best, worst = best_and_worst(combinations)
    failed = int(cells["failed_to_train"].sum()) if "failed_to_train" in cells else None
    return {
        "cells": len(cells),
        "combinations": len(combinations),
        "failed_cells": failed,
        "epochs_total": int(cells["epochs_run"].sum()),
        "train_minutes_total": round(float(cells["train_seconds"].sum()) / 60.0, 1),
        "confidence": confidence,
        "best": describe(best),
        "worst": describe(worst),
    }
