"""How the report writes numbers: percentages, intervals, display tables, one-line rankings.

An undefined number (the CI of a single seed) is written as MISSING, never as "nan".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from stages.lib.reporting.cell_results import DIGITS, FACTORS
from stages.lib.reporting.study_table import combination_label

MISSING = "—"


def percent(value: float, digits: int = 2) -> str:
    return MISSING if value is None or math.isnan(value) else f"{value * 100:.{digits}f}%"


def number(value: float, digits: int = 1) -> str:
    return MISSING if value is None or math.isnan(value) else f"{value:.{digits}f}"


def interval(low: float, high: float) -> str:
    return interval_of(low, high, percent)


def interval_of(low: float, high: float, form: Callable[[float], str]) -> str:
    """`low to high`, each written by `form`; MISSING where the interval is undefined."""
    return MISSING if math.isnan(low) or math.isnan(high) else f"{form(low)} to {form(high)}"


def tied(value: object) -> str:
    """The tied-with-best column: yes, no, or MISSING where it could not be tested."""
    if isinstance(value, float) and math.isnan(value):
        return MISSING
    return "yes" if value else "no"


def describe(row: pd.Series, confidence: float) -> str:
    """`relu / he_normal / adam`: 97.85% (95% CI 97.60% to 98.10%, n = 3 seeds)."""
    ci = interval(row["test_accuracy_ci_low"], row["test_accuracy_ci_high"])
    return (
        f"`{combination_label(row)}`: **{percent(row['test_accuracy_mean'])}** "
        f"({confidence:.0%} CI {ci}, n = {count(int(row['n']), 'seed')})"
    )


def combinations_display(combinations: pd.DataFrame, confidence: float) -> pd.DataFrame:
    rows = combinations
    return pd.DataFrame(
        {
            "rank": rows["rank"].astype(int).astype(str),
            **{factor: rows[factor] for factor in FACTORS},
            "n": rows["n"].astype(int).astype(str),
            "test accuracy": rows["test_accuracy_mean"].map(percent),
            f"{confidence:.0%} CI": [
                interval(low, high)
                for low, high in zip(
                    rows["test_accuracy_ci_low"], rows["test_accuracy_ci_high"], strict=True
                )
            ],
            "std": rows["test_accuracy_std"].map(percent),
            "not shown worse than best": [
                "too few seeds (behind in every seed)"
                if tied(value) == "yes" and behind
                else tied(value)
                for value, behind in zip(
                    rows["tied_with_best"], rows["behind_in_every_seed"], strict=True
                )
            ],
            "failed": [
                f"{int(f)}/{int(n)}" for f, n in zip(rows["failed"], rows["n"], strict=True)
            ],
            "reached target": [
                f"{int(r)}/{int(n)}" for r, n in zip(rows["reached"], rows["n"], strict=True)
            ],
            "epochs to target (median)": rows["epochs_to_target_median"].map(number),
            "epochs to best": rows["best_epoch_mean"].map(number),
            "gap (points)": rows["generalization_gap_mean"].map(lambda v: number(v, 2)),
            "training s": rows["train_seconds_mean"].map(number),
        }
    )


def cells_display(cells: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            **{factor: cells[factor] for factor in FACTORS},
            "seed": cells["seed"].astype(str),
            "test accuracy": cells["test_accuracy"].map(percent),
            "best val. accuracy": cells["best_val_accuracy"].map(percent),
            "epochs to target": cells["epochs_to_target"].map(
                lambda v: "never" if math.isnan(v) else f"{v:.0f}"
            ),
            "failed": cells["failed_to_train"].map(lambda v: "yes" if v else "no"),
            "epochs to best": cells["best_epoch"].astype(str),
            "epochs run": cells["epochs_run"].astype(str),
            "training s": cells["train_seconds"].map(number),
            **{digit: cells[digit].map(lambda v: percent(v, 1)) for digit in DIGITS},
        }
    )


def ranking(effects: pd.DataFrame, factor: str) -> str:
    """`activation: relu 97.1% > tanh 96.0% > sigmoid 92.4%`."""
    rows = effects[effects["factor"] == factor].sort_values("mean", ascending=False)
    return f"{factor}: " + " > ".join(
        f"{level} {percent(mean)}" for level, mean in zip(rows["level"], rows["mean"], strict=True)
    )


def count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
