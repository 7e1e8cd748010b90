"""Diagnostics during training: the probe batch, the callback, and the per-cell CSV.

The in-progress CSV lives in the cell's checkpoint folder, so a killed process resumes with the
epochs it measured up to its last checkpoint; the finished CSV is copied to
reports/train/<key>/diagnostics.csv. With `train.diagnostics.enabled: false` that file holds only
its header, so the DVC output exists either way.
"""

from __future__ import annotations

from pathlib import Path

import keras

from stages.lib.core.atomic import write_text
from stages.lib.core.cell_config import hyperparameters
from stages.lib.training.diagnostics import (
    DiagnosticsCallback,
    DiagnosticsLog,
    defined,
    probe_indices,
)
from stages.lib.training.fitting import TrainingContext

DIAGNOSTICS_FILE = "diagnostics.csv"


def diagnostics_callbacks(context: TrainingContext) -> list[keras.callbacks.Callback]:
    """A `DiagnosticsCallback` on the cell's probe batch, or nothing when diagnostics are off."""
    setup = context.setup
    settings = setup.params.train.diagnostics
    if not settings.enabled:
        return []
    images, labels = setup.splits["train"]
    # A named variant (`lrelu_02: {type: leaky_relu, ...}`) is measured as its Keras type.
    activation_type = hyperparameters(setup.params.train, "activation", setup.cell.activation)[
        "type"
    ]
    probe = probe_indices(len(images), settings.probe_size, setup.cell.seed)
    progress = setup.checkpoint_folder / DIAGNOSTICS_FILE
    resumed = context.initial_epoch > 0 and progress.is_file()
    log = DiagnosticsLog.read(progress, context.initial_epoch) if resumed else DiagnosticsLog()
    if resumed and setup.trained_ahead:  # measured by a process that logged nothing to MLflow
        for epoch in log.epochs:
            context.logger.add(epoch, defined(log.values(epoch)))

    def on_measure(epoch: int, values: dict[str, float]) -> None:
        log.add(epoch, values)
        log.write(progress)
        context.logger.add(epoch, defined(values))

    return [
        DiagnosticsCallback(
            images[probe],
            labels[probe],
            activation_type,
            on_measure,
            initial_epoch=context.initial_epoch,
        )
    ]


def publish(checkpoint_folder: Path, report_folder: Path) -> None:
    """Copy the measured diagnostics (or an empty log) to the cell's report folder."""
    progress = checkpoint_folder / DIAGNOSTICS_FILE
    log = DiagnosticsLog.read(progress) if progress.is_file() else DiagnosticsLog()
    write_text(report_folder / DIAGNOSTICS_FILE, log.to_csv())
