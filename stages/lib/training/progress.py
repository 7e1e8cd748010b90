"""Progress of a long `dvc repro` that a person can follow: one line per epoch and per cell.

    train relu-he_normal-adam-base-256-0.0-0 epoch 5/50: loss 0.0412 val_accuracy 0.9771 \
val_loss 0.0804 (0.41 s)
    train [10/54] relu-he_normal-adam-base-256-0.0-0: 7 epochs, best val_accuracy 0.9771 \
(41 s) | ~6.5 min left

Workers publish their epochs as Dask events (`EpochEvents`; a worker's restart is printed by
stages/lib/cluster/engine.py); the stage prints them as they come and, for each finished cell,
the time left: the cells still to train times the mean wall time of the cells finished so far,
divided by the cells that train at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import mean
from typing import Any

import keras

from stages.lib.core.stopwatch import duration
from stages.lib.training.cell_job import CellJob, CellResult

SHOWN = ("loss", "val_accuracy", "val_loss")


class EpochEvents(keras.callbacks.Callback):
    """On a worker: publishes each finished epoch (and a resumed start) to the stage."""

    def __init__(self, publish: Callable[[dict[str, Any]], None], job: CellJob) -> None:
        super().__init__()
        self.publish = publish  # to the stage: the worker's events (stages/lib/cluster/engine.py)
        self.key, self.epochs = job.key, job.params.train.epochs
        self._started = 0.0
        self._resumed: dict[str, Any] | None = None

    def resume(self, rows: list[dict[str, float]], stopped: bool) -> None:
        """The cell continues from a checkpoint holding `rows`; `stopped`: it has ended."""
        if rows:
            self._resumed = {"epochs_before": len(rows), "stopped": stopped}

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self._resumed:
            self._publish(self._resumed)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        values = {name: float(value) for name, value in (logs or {}).items() if name in SHOWN}
        self._publish(
            {"epoch": epoch + 1, "values": values, "seconds": time.monotonic() - self._started}
        )

    def _publish(self, message: dict[str, Any]) -> None:
        self.publish({"cell": self.key, "epochs": self.epochs, **message})


def epoch_line(event: dict[str, Any]) -> str:
    """What the stage prints for a worker's event: an epoch, or a resumed cell."""
    where = f"train {event['cell']}"
    if "epochs_before" in event:
        before = event["epochs_before"]
        rest = "stopped early" if event["stopped"] else f"training on, up to {event['epochs']}"
        return f"{where}: {before} epoch{'' if before == 1 else 's'} trained before; {rest}"
    shown = " ".join(f"{name} {value:.4f}" for name, value in event["values"].items())
    return f"{where} epoch {event['epoch']}/{event['epochs']}: {shown} ({event['seconds']:.2f} s)"


@dataclass
class GridProgress:
    """The cells of this run: how many are done, and the time left."""

    total: int  # cells to train in this run
    parallel: int  # cells training at once
    finished: list[float] = field(default_factory=list)  # wall seconds per finished cell

    def cell_line(self, result: CellResult) -> str:
        self.finished.append(result.seconds)
        metrics = result.metrics
        epochs = metrics["epochs_run"]
        left = (self.total - len(self.finished)) * mean(self.finished) / max(self.parallel, 1)
        return (
            f"train [{len(self.finished)}/{self.total}] {result.key}: {epochs} "
            f"epoch{'' if epochs == 1 else 's'}, best val_accuracy "
            f"{metrics['best_val_accuracy']:.4f} ({duration(result.seconds)}) | "
            + (f"~{duration(left)} left" if len(self.finished) < self.total else "grid done")
        )
