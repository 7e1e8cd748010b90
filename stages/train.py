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
from stages.lib.core.cell_config import array_digest, config_digest, effective_config, flat_params
from stages.lib.core.config import Params
from stages.lib.core.grid import Cell
from stages.lib.core.paths import Paths
from stages.lib.core.stopwatch import Stopwatch
from stages.lib.data.prepared import load_split, split_file
from stages.lib.tracking import tracking, tracking_log
from stages.lib.training import cell_run, preflight, resume
from stages.lib.training.batches import steps_per_epoch
from stages.lib.training.device import make_deterministic, select_device
from stages.lib.training.fitting import TrainingContext, TrainingSetup, fit_cell
from stages.lib.training.model import build_model, compile_model
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


def run(
    params: Params,
    cell: Cell,
    paths: Paths,
    observers: Sequence[keras.callbacks.Callback] = (),
) -> dict[str, Any]:
    """Train `cell`, write data/models/<key>/ and reports/train/<key>/; return its metrics.

    `observers` are callbacks that watch the epochs without changing them (a progress line).
    """
    train = params.train
    watch = Stopwatch()  # where the cell's time goes: run.json "seconds", benchmarks/
    with watch("data"):
        placement = select_device(train)
        preflight.check(cell, paths)
        splits = {name: load_split(paths, name) for name in preflight.SPLITS}
        digests = {name: array_digest(*arrays) for name, arrays in splits.items()}
    with watch("tracking_start"):
        tracking.check_store(paths)  # the experiment is opened (created) only when its run is
    with watch("model"):
        make_deterministic(cell.seed)
        with placement.scope():
            model = build_model(cell, train)
            steps = steps_per_epoch(len(splits["train"][1]), cell.batch_size)
            compile_model(model, cell, train, steps)
        config = effective_config(params, cell)
        # The checkpoint key also covers the Keras configuration the code builds from the
        # params, so a checkpoint never meets a model it does not fit (e.g. after an edit).
        digest = config_digest({**config, "keras": cell_run.keras_configuration(model)}, digests)
    folder = paths.checkpoints / digest
    with watch("tracking_start"):
        experiment = tracking.open_experiment(params.study.name, paths)
        tags = cell_run.tags(params, cell, paths, digest, digests, placement, experiment)
        run_id = cell_run.continue_or_create(experiment, folder, cell, flat_params(config), tags)
        checkpoint = resume.load(folder)
    with tracking.active_run(run_id):
        with watch("tracking_start"):
            for name, (images, labels) in splits.items():
                where = split_file(paths, name)
                tracking_log.log_dataset(images, labels, name, where, digests[name])
        with watch("fit"):
            fitted = fit_cell(
                model,
                TrainingSetup(params, cell, paths, splits, folder, checkpoint),
                experiment.client,
                run_id,
                extra_callbacks,
                observers,
            )
        with watch("outputs"):
            metrics = summarize(
                fitted.rows, fitted.stopped_early, model.count_params(), placement.label
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
            "config": config,  # the effective configuration: every setting the cell trained with
            "config_digest": digest,
            "seconds": watch.seconds,  # this process's phases (without `outputs`' last write)
        }
        write_json(paths.run_record(cell.key), record)  # how evaluate finds the cell's run
        resume.remove(folder)
    return metrics
