"""What each cell's training did beside its final accuracy: speed, failure, loss, gap, gradients.

Pure functions of one cell's files as train writes them (history.csv: one row per epoch, 1-based,
`accuracy` and `loss` of the training split; metrics.json; diagnostics.csv: epoch 0 at
initialization, one row per hidden layer `hidden_1..hidden_k`) and of the report's params:

- speed: the first epoch whose validation accuracy reaches `target_val_accuracy`, and the training
  seconds up to the end of it. A cell that never reaches it is *censored*: its time is NaN, never
  an invented number, and `epochs_observed` / `seconds_observed` say how long it was watched.
- failed to train: best validation accuracy below chance (0.10) + `failure_margin`, or none at all.
- the generalization gap in points, 100 x (training - validation accuracy) at the best epoch.
- diagnostics evidence: the first hidden layer's gradient norm over the last's, at initialization
  and at the last epoch (vanishing gradients show as a ratio far below 1), and the dead and
  saturated fractions at the last epoch, averaged over layers. NaN when diagnostics are off, when
  the measure does not apply (dead units of tanh, a single hidden layer) or a norm is zero.

A NaN in the history (a diverged cell) never reaches the target and never counts as a best.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from stages.lib.core.config import CHANCE_ACCURACY

# The columns `outcomes` adds to a cell's row, in order (and those logged to MLflow, see
# outcome_tracking.py).
OUTCOMES: tuple[str, ...] = (
    "epochs_to_target",
    "seconds_to_target",
    "reached_target",
    "epochs_observed",
    "seconds_observed",
    "failed_to_train",
    "best_val_loss",
    "generalization_gap",
    "grad_ratio_init",
    "grad_ratio_end",
    "dead_fraction_end",
    "saturated_fraction_end",
)
# The history.csv columns these need (train writes them all).
HISTORY_NEEDS: tuple[str, ...] = ("epoch", "accuracy", "val_accuracy", "epoch_seconds")


def outcomes(
    history: pd.DataFrame,
    metrics: Mapping[str, Any],
    diagnostics: pd.DataFrame | None,
    target: float,
    failure_margin: float,
) -> dict[str, Any]:
    """Every outcome of one cell (see OUTCOMES); `diagnostics` None when they are off."""
    epochs, seconds = time_to_target(history, target)
    return {
        "epochs_to_target": epochs,
        "seconds_to_target": seconds,
        "reached_target": not math.isnan(epochs),
        "epochs_observed": int(metrics["epochs_run"]),
        "seconds_observed": _seconds(history),
        "failed_to_train": failed_to_train(float(metrics["best_val_accuracy"]), failure_margin),
        "best_val_loss": float(metrics["best_val_loss"]),
        "generalization_gap": generalization_gap(history, int(metrics["best_epoch"])),
        **gradient_evidence(diagnostics),
    }


def time_to_target(history: pd.DataFrame, target: float) -> tuple[float, float]:
    """(epochs, seconds) until validation accuracy first reaches `target`; (NaN, NaN) if never.

    The seconds are the sum of epoch_seconds of the epochs up to and including that one (NaN if
    one of them has no time).
    """
    ordered = history.sort_values("epoch")
    reached = ordered["val_accuracy"].to_numpy(dtype=float) >= target  # NaN compares False
    if not reached.any():
        return math.nan, math.nan
    first = int(np.argmax(reached))
    return float(ordered["epoch"].iloc[first]), _seconds(ordered.iloc[: first + 1])


def failed_to_train(best_val_accuracy: float, failure_margin: float) -> bool:
    """True when the best validation accuracy is below chance + `failure_margin` (or NaN)."""
    threshold = round(CHANCE_ACCURACY + failure_margin, 12)  # 0.1 + 0.05 is 0.15000000000000002
    return not best_val_accuracy >= threshold


def generalization_gap(history: pd.DataFrame, best_epoch: int) -> float:
    """100 x (training - validation accuracy) at `best_epoch`, in points (NaN if absent)."""
    row = history[history["epoch"] == best_epoch]
    if row.empty:
        return math.nan
    return 100.0 * float(row["accuracy"].iloc[0] - row["val_accuracy"].iloc[0])


def gradient_evidence(diagnostics: pd.DataFrame | None) -> dict[str, float]:
    """grad_ratio_init, grad_ratio_end, dead_fraction_end, saturated_fraction_end (see above)."""
    if diagnostics is None or diagnostics.empty:
        return {
            "grad_ratio_init": math.nan,
            "grad_ratio_end": math.nan,
            "dead_fraction_end": math.nan,
            "saturated_fraction_end": math.nan,
        }
    last = diagnostics[diagnostics["epoch"] == diagnostics["epoch"].max()]
    return {
        "grad_ratio_init": _first_over_last(diagnostics[diagnostics["epoch"] == 0]),
        "grad_ratio_end": _first_over_last(last),
        "dead_fraction_end": _mean(last["dead_fraction"]),
        "saturated_fraction_end": _mean(last["saturated_fraction"]),
    }


def _first_over_last(rows: pd.DataFrame) -> float:
    """grad_norm of hidden_1 over that of the deepest hidden layer (NaN with one layer)."""
    depth = rows["layer"].str.removeprefix("hidden_").astype(int)
    if depth.nunique() < 2:
        return math.nan
    norms = rows["grad_norm"].to_numpy(dtype=float)
    first, last = norms[np.argmin(depth.to_numpy())], norms[np.argmax(depth.to_numpy())]
    if not (math.isfinite(first) and math.isfinite(last)) or last == 0.0:
        return math.nan
    return float(first / last)


def _mean(values: pd.Series) -> float:
    finite = values.to_numpy(dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if len(finite) else math.nan


def _seconds(history: pd.DataFrame) -> float:
    return float(history["epoch_seconds"].sum(skipna=False))
