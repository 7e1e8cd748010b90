"""Stage `train@<cell>`: train one cell of the study grid, tracked in MLflow, resumable.

Order matters for a 54-cell grid: everything that can reject the input (device, tracking server,
prepared data) runs before the first epoch, and a process killed mid-cell continues from its last
completed epoch in the same MLflow run (see stages/lib/training/resume.py).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import Any

import keras

from stages.lib.core.atomic import write_json
from stages.lib.core.cell_config import flat_params
from stages.lib.core.code import code_digest
from stages.lib.core.config import Params
from stages.lib.core.grid import Cell
from stages.lib.core.paths import Paths
from stages.lib.core.stopwatch import Stopwatch
from stages.lib.data.prepared import split_file
from stages.lib.tracking import tracking, tracking_log
from stages.lib.training import cell_run, resume
from stages.lib.training.fitting import TrainingContext, TrainingSetup, fit_cell
from stages.lib.training.preparation import prepare
from stages.lib.training.train_diagnostics import diagnostics_callbacks
from stages.lib.training.train_diagnostics import publish as publish_diagnostics
from stages.lib.training.train_outputs import (
    save_model,
    summarize,
    write_reports,
)

# TensorFlow, Keras and MLflow load a few million long-lived objects. Freezing them keeps every
# garbage collection from walking them again, notably the final one at exit (~1 s per process).
gc.freeze()


def extra_callbacks(context: TrainingContext) -> list[keras.callbacks.Callback]:
    """Callbacks beyond history, early stopping, checkpoint and MLflow: the diagnostics.

    They run before the history is recorded; `context.logger.add(step, values)` logs values
    into the cell's run with that epoch.
    """
    return diagnostics_callbacks(context)


def train_ahead(
    params: Params,
    cell: Cell,
    paths: Paths,
    code: str,
    observers: Sequence[keras.callbacks.Callback] = (),
) -> bool:
    """Train `cell`'s epochs into its checkpoint without MLflow, for its stage to take over
    (stages/lib/training/train_pool.py). False when a stage's own run holds the checkpoint."""
    ready = prepare(params, cell, paths, Stopwatch())
    if resume.read_run_file(ready.folder):
        return False  # a stage began this cell itself (and was killed): it resumes it
    if resume.trained_ahead(ready.folder) != code:
        resume.remove(ready.folder)  # other code's epochs (or none): start over
        resume.mark_ahead(ready.folder, code)
    setup = TrainingSetup(
        params, cell, paths, ready.splits, ready.folder, resume.load(ready.folder), True
    )
    fit_cell(ready.model, setup, None, None, extra_callbacks, observers)
    return True


def run(
    params: Params,
    cell: Cell,
    paths: Paths,
    observers: Sequence[keras.callbacks.Callback] = (),
) -> dict[str, Any]:
    """Train `cell`, write data/models/<key>/ and reports/train/<key>/; return its metrics.

    `observers` are callbacks that watch the epochs without changing them (a progress line).
    Epochs trained ahead (`train_ahead`) are taken over and logged, not trained again.
    """
    watch = Stopwatch()  # where the cell's time goes: run.json "seconds", benchmarks/
    ready = prepare(params, cell, paths, watch)
    model, folder, digests = ready.model, ready.folder, ready.digests
    with watch("tracking_start"):
        tracking.check_store(paths)  # the experiment is opened (created) only when its run is
        experiment = tracking.open_experiment(params.study.name, paths)
        placement = ready.placement
        tags = cell_run.tags(params, cell, paths, ready.digest, digests, placement, experiment)
        run_id = cell_run.continue_or_create(
            experiment, folder, cell, flat_params(ready.config), tags, code_digest()
        )
        checkpoint = resume.load(folder)
        ahead = resume.trained_ahead(folder) is not None
    with tracking.active_run(run_id):
        with watch("tracking_start"):
            for name, (images, labels) in ready.splits.items():
                where = split_file(paths, name)
                tracking_log.log_dataset(images, labels, name, where, digests[name])
        with watch("fit"):
            setup = TrainingSetup(params, cell, paths, ready.splits, folder, checkpoint, ahead)
            fitted = fit_cell(model, setup, experiment.client, run_id, extra_callbacks, observers)
            resume.clear_ahead(folder)  # its epochs are logged now: never replayed again
        with watch("outputs"):
            metrics = summarize(
                fitted.rows, fitted.stopped_early, model.count_params(), ready.placement.label
            )
            write_reports(paths.train_reports(cell.key), fitted.rows, metrics)
            publish_diagnostics(folder, paths.train_reports(cell.key))
        with watch("model_logging"):
            model_uri = cell_run.log_model_once(model, folder, run_id, metrics, experiment)
            tracking_log.log_reports(paths.train_reports(cell.key))
    with watch("outputs"):
        save_model(model, paths.model_file(cell.key))
        record = {
            "run_id": run_id,
            "experiment_id": experiment.experiment_id,
            "experiment_name": experiment.name,
            "model_uri": model_uri,
            "cell": {**cell.model_dump(), "key": cell.key},
            "config": ready.config,  # the effective configuration: every setting it trained with
            "config_digest": ready.digest,
            "seconds": watch.seconds,  # this process's phases (without `outputs`' last write)
        }
        write_json(paths.run_record(cell.key), record)  # how evaluate finds the cell's run
        resume.remove(folder)
    return metrics
