"""The training loop of one cell: `model.fit` with callbacks that make it resumable and tracked.

Callback order is the design: extra callbacks and the history recorder fill the epoch's row,
early stopping decides, the checkpoint commits row, decision and weights together, and only then
does MLflow log the epoch. A process killed at any point therefore neither loses nor repeats an
epoch's metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from mlflow.tracking import MlflowClient

from stages.lib.core.config import Params
from stages.lib.core.grid import Cell
from stages.lib.training import batches, checkpoint
from stages.lib.training.callbacks import EpochRecorder, MlflowEpochLogger, ResumableEarlyStopping

Arrays = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class TrainingSetup:
    """A cell ready to train: its config, data and checkpoint (None on a fresh start)."""

    params: Params
    cell: Cell
    splits: dict[str, Arrays]  # "train" and "validation": (images, labels)
    checkpoint_folder: Path
    resumed: checkpoint.Checkpoint | None

    @property
    def initial_epoch(self) -> int:
        return self.resumed.epochs_completed if self.resumed else 0


@dataclass(frozen=True)
class TrainingContext:
    """What an extra callback may need (the diagnostics: `diagnostics.diagnostics_callbacks`)."""

    setup: TrainingSetup
    logger: MlflowEpochLogger  # `logger.add(step, values)` logs values into the cell's run

    @property
    def initial_epoch(self) -> int:
        """Epochs completed before this process started (0 on a fresh start)."""
        return self.setup.initial_epoch


@dataclass(frozen=True)
class Fitted:
    rows: list[dict[str, float]]  # one per epoch, 1-based `epoch`, including resumed epochs
    stopped_early: bool


def fit_cell(
    model: keras.Model,
    setup: TrainingSetup,
    client: MlflowClient,
    run_id: str,
    extra_callbacks: Callable[[TrainingContext], list[keras.callbacks.Callback]],
    observers: Sequence[keras.callbacks.Callback] = (),
) -> Fitted:
    """`model.fit` on the train split, validated each epoch, continuing from the checkpoint.

    `observers` see each finished, committed and logged epoch (e.g. a progress line); one with a
    `resume(rows, stopped)` method first hears the epochs the checkpoint held.
    """
    train = setup.params.train
    state = setup.resumed.state if setup.resumed else {}
    recorder = EpochRecorder(state.get("rows"))
    logger = MlflowEpochLogger(client, run_id, recorder)
    early = None
    if train.early_stopping_patience is not None:
        best_weights = setup.resumed.best_weights if setup.resumed else None
        early = ResumableEarlyStopping(
            train.early_stopping_patience, state.get("early_stopping"), best_weights
        )

    def snapshot() -> checkpoint.Snapshot:
        saved: dict[str, Any] = {"rows": recorder.rows, "stopped": bool(model.stop_training)}
        if early is None:
            return checkpoint.Snapshot(saved)
        return checkpoint.Snapshot({**saved, "early_stopping": early.state()}, early.best_weights)

    callbacks = [
        *extra_callbacks(TrainingContext(setup, logger)),
        recorder,
        *([early] if early else []),
        checkpoint.CommittingBackup(setup.checkpoint_folder, snapshot),
        logger,
        *observers,
    ]
    stopped = bool(state.get("stopped"))
    for observer in observers:  # e.g. a progress line saying what was trained before
        if hasattr(observer, "resume"):
            observer.resume(recorder.rows, stopped)
    epochs = setup.initial_epoch if stopped else train.epochs  # a stopped run trains no more
    feed = batches.feed(
        setup.splits["train"],
        setup.splits["validation"],
        setup.cell.batch_size,
        setup.cell.seed,
        range(setup.initial_epoch, max(epochs, setup.initial_epoch)),
        prebatched=train.distribute == "none",
    )
    model.fit(
        feed.batches,
        steps_per_epoch=feed.steps_per_epoch,
        shuffle=False,  # the feed shuffles, per epoch, from the cell's seed
        epochs=epochs,
        validation_data=feed.validation,
        callbacks=callbacks,
        verbose=0,  # progress: one line per epoch from the caller's callback, never per step
    )
    return Fitted(recorder.rows, stopped or bool(model.stop_training))
