"""The Keras callbacks of a training run: per-epoch history, resumable early stopping, MLflow.

Each keeps the state a resumed process needs and can restore it, so a run killed after epoch k
continues with the same history, the same early-stopping counters and the same MLflow run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
from mlflow.tracking import MlflowClient

from stages.lib.tracking import tracking_log

HISTORY_COLUMNS: tuple[str, ...] = (
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "epoch_seconds",
)
# Keras' log names -> the MLflow metric names (which say which split they come from).
MLFLOW_NAMES: dict[str, str] = {
    "loss": "train_loss",
    "accuracy": "train_accuracy",
    "val_loss": "val_loss",
    "val_accuracy": "val_accuracy",
    "epoch_seconds": "epoch_seconds",
}


class EpochRecorder(keras.callbacks.Callback):
    """One row per completed epoch (1-based `epoch`, the logs, wall seconds of the epoch).

    Other numeric values in the epoch's logs (e.g. from callbacks listed before this one) are
    kept in the row as well.
    """

    def __init__(self, rows: list[dict[str, float]] | None = None) -> None:
        super().__init__()
        self.rows: list[dict[str, float]] = [dict(row) for row in rows or []]
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = time.perf_counter() - self._started
        values = {key: float(value) for key, value in (logs or {}).items() if _is_number(value)}
        self.rows.append({"epoch": epoch + 1, **values, "epoch_seconds": seconds})


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) or (
        hasattr(value, "shape") and tuple(value.shape) == ()
    )


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping on val_loss, restoring the best weights, whose state survives a restart."""

    def __init__(
        self,
        patience: int,
        state: Mapping[str, Any] | None = None,
        best_weights: list[np.ndarray] | None = None,
    ) -> None:
        super().__init__(
            monitor="val_loss", mode="min", patience=patience, restore_best_weights=True
        )
        self._restored_state = dict(state or {})
        self._restored_weights = best_weights

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self._restored_state:
            self.wait = int(self._restored_state["wait"])
            self.best = self._restored_state["best"]
            self.best_epoch = int(self._restored_state["best_epoch"])
            self.stopped_epoch = int(self._restored_state["stopped_epoch"])
            self.best_weights = self._restored_weights

    def state(self) -> dict[str, Any]:
        best = None if self.best is None else float(self.best)
        return {
            "wait": self.wait,
            "best": best,
            "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch,
        }


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs each epoch's row (and values queued with :meth:`add`) into the run, step = epoch.

    List it after the checkpoint callback: an epoch is logged only once it is committed, and a
    committed epoch is never trained again, so no step is logged twice. Rows committed but not
    yet logged when a process was killed are logged when the next process starts. Values added
    while no epoch is left to train are logged when training ends.
    """

    def __init__(self, client: MlflowClient, run_id: str, recorder: EpochRecorder) -> None:
        super().__init__()
        self.client = client
        self.run_id = run_id
        self.recorder = recorder
        self._pending: dict[int, dict[str, float]] = {}

    def add(self, step: int, values: Mapping[str, float]) -> None:
        """Queue extra values (e.g. diagnostics) for `step`; they are logged with the next epoch."""
        self._pending.setdefault(step, {}).update(values)

    def on_train_begin(self, logs: dict | None = None) -> None:
        done = tracking_log.logged_steps(self.client, self.run_id, MLFLOW_NAMES["val_loss"])
        for row in self.recorder.rows:
            if int(row["epoch"]) not in done:
                self._log(int(row["epoch"]), mlflow_values(row))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        row = self.recorder.rows[-1]
        pending, self._pending = self._pending, {}
        for step in sorted(pending):
            if step != row["epoch"]:
                self._log(step, pending[step])
        self._log(int(row["epoch"]), {**pending.get(int(row["epoch"]), {}), **mlflow_values(row)})

    def on_train_end(self, logs: dict | None = None) -> None:
        pending, self._pending = self._pending, {}
        for step in sorted(pending):
            self._log(step, pending[step])

    def _log(self, step: int, values: Mapping[str, float]) -> None:
        tracking_log.log_metrics(self.client, self.run_id, step, values, int(time.time() * 1000))


def mlflow_values(row: Mapping[str, float]) -> dict[str, float]:
    """A history row under its MLflow metric names (other keys as they are, without `epoch`)."""
    return {MLFLOW_NAMES.get(key, key): value for key, value in row.items() if key != "epoch"}
