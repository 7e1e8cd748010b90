"""Progress of a long `dvc repro` that a person can follow: one line per epoch, never per step.

    train@relu-he_normal-adam-base-256-0.0-0 [cell 10/54] epoch 5/25: loss 0.0412 \
val_accuracy 0.9771 val_loss 0.0804 (0.41 s) | grid: ~6.5 min left, 44 cells after this one

The estimate of the time left assumes that every cell after this one (in the grid's order, which
is the order `dvc repro` runs them in) still has to train, at the mean time per cell measured so far
in this `dvc repro`, `train.parallel_cells` at once; cells that DVC finds up to date make it
shorter. Times of finished cells are
kept in `.mlpstudy/progress.json` under the id of the process that runs the stages (DVC), so each
`dvc repro` starts its own estimate.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

import keras

from stages.lib.core.atomic import write_json
from stages.lib.core.config import Params
from stages.lib.core.grid import Cell, grid

# A session whose last cell finished longer ago than this is a different `dvc repro`.
SESSION_GAP_SECONDS = 3600.0


@dataclass
class GridProgress:
    """Where a cell stands in its grid, and the times of cells finished in this session."""

    file: Path
    session: str
    cell: Cell
    position: int  # 1-based, in the grid's order
    total: int
    epochs: int
    finished: list[float] = field(default_factory=list)  # seconds per cell, this session
    parallel: int = 1  # cells training at once
    started: float = field(default_factory=time.monotonic)

    @property
    def label(self) -> str:
        return f"train@{self.cell.key} [cell {self.position}/{self.total}]"

    def seconds_left(self, epochs_done: int, seconds_per_epoch: float) -> float:
        """This cell's remaining time plus that of every cell after it."""
        elapsed = time.monotonic() - self.started
        if self.finished:
            per_cell = mean(self.finished)
            this_cell = max(0.0, per_cell - elapsed)
        else:
            this_cell = (self.epochs - epochs_done) * seconds_per_epoch
            per_cell = elapsed + this_cell
        return this_cell + (self.total - self.position) * per_cell / self.parallel

    def record_finished(self) -> None:
        """Add this cell's wall time to the session (read by the next cell's estimate)."""
        seconds = time.monotonic() - self.started
        state = {"session": self.session, "cells": [*self.finished, seconds], "at": time.time()}
        write_json(self.file, state)


def for_cell(
    params: Params, cell: Cell, file: Path, session: str, parallel: int = 1
) -> GridProgress:
    """The progress of `cell`, continuing the session's times when `file` holds them;
    `parallel` cells train at once."""
    cells = [other.key for other in grid(params.train)]
    position = cells.index(cell.key) + 1 if cell.key in cells else len(cells) + 1
    total = max(len(cells), position)
    times = _session_times(file, session)
    return GridProgress(file, session, cell, position, total, params.train.epochs, times, parallel)


def _session_times(file: Path, session: str) -> list[float]:
    try:
        state: dict[str, Any] = json.loads(file.read_text())
    except (OSError, ValueError):
        return []
    fresh = time.time() - float(state.get("at", 0)) < SESSION_GAP_SECONDS
    if state.get("session") != session or not fresh:
        return []
    return [float(seconds) for seconds in state.get("cells", [])]


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class EpochProgress(keras.callbacks.Callback):
    """Prints the progress line at the end of every epoch (and one when the cell starts)."""

    def __init__(self, progress: GridProgress) -> None:
        super().__init__()
        self.progress = progress
        self._epoch_started = 0.0
        self._epoch_times: list[float] = []
        self._before: list[dict[str, float]] = []  # epochs its checkpoint held
        self._stopped = False

    def resume(self, rows: list[dict[str, float]], stopped: bool) -> None:
        """The cell continues from a checkpoint holding `rows` (one per epoch); `stopped`: its
        training has ended (early stopping)."""
        self._before, self._stopped = list(rows), stopped

    def on_train_begin(self, logs: dict | None = None) -> None:
        label, epochs, done = self.progress.label, self.progress.epochs, len(self._before)
        if not done:
            print(f"{label}: training (up to {epochs} epochs)", flush=True)
            return
        last = self._before[-1].get("val_accuracy")
        shown = f" (val_accuracy {last:.4f})" if last is not None else ""
        if self._stopped or done >= epochs:
            rest = "stopped early" if self._stopped else "nothing left to train"
        else:
            rest = f"training on, up to {epochs}"
        trained = f"{done} epoch{'' if done == 1 else 's'} trained before"
        print(f"{label}: {trained}{shown}; {rest}", flush=True)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = time.monotonic() - self._epoch_started
        self._epoch_times.append(seconds)
        values = logs or {}
        shown = " ".join(
            f"{name} {float(values[name]):.4f}"
            for name in ("loss", "val_accuracy", "val_loss")
            if name in values
        )
        after = self.progress.total - self.progress.position
        left = self.progress.seconds_left(epoch + 1, mean(self._epoch_times))
        print(
            f"{self.progress.label} epoch {epoch + 1}/{self.progress.epochs}: {shown} "
            f"({seconds:.2f} s) | grid: ~{duration(left)} left, {after} cells after this one",
            flush=True,  # sys.stdout at call time: the client's stream in a warm process
        )
