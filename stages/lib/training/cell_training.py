"""One cell's training, as a worker of the cluster runs it (stages/lib/cluster/engine.py).

The stage resolves each cell's effective configuration once, into a `CellJob`, and hands it to
a worker together with the prepared data the worker already holds. The worker builds the model
(seeded), continues the cell's checkpoint if a killed worker left one, trains it inside the
cell's own MLflow run, and returns every output file as bytes: the driver writes them into the
workspace, so workers on other machines need no shared file system for outputs.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras

from stages.lib.core.atomic import write_json
from stages.lib.core.cell_config import flat_params
from stages.lib.core.errors import StageError, describe
from stages.lib.core.paths import Paths
from stages.lib.core.stopwatch import Stopwatch
from stages.lib.tracking import tracking, tracking_log
from stages.lib.training import checkpoint, mlflow_run
from stages.lib.training.batches import steps_per_epoch
from stages.lib.training.cell_job import CellJob, CellResult, Splits
from stages.lib.training.device import make_deterministic, select_device
from stages.lib.training.diagnostics import diagnostics_callbacks
from stages.lib.training.diagnostics import publish as publish_diagnostics
from stages.lib.training.fitting import TrainingSetup, fit_cell
from stages.lib.training.model import build_model, compile_model
from stages.lib.training.outputs import save_model, summarize, write_reports
from stages.lib.training.progress import EpochEvents


def train_on_worker(
    job: CellJob, splits: Splits, publish: Callable[[dict[str, Any]], None]
) -> CellResult:
    """The cluster's task for a cell (stages/lib/cluster/engine.py): its epochs are published
    to the stage as they end."""
    return train_cell(job, splits, [EpochEvents(publish, job)])


def train_cell(
    job: CellJob, splits: Splits, observers: Sequence[keras.callbacks.Callback] = ()
) -> CellResult:
    """Train `job`'s cell on `splits`; `observers` watch its epochs without changing them."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"mlpstudy-{job.key}-") as scratch:
        paths = Paths.at(scratch)
        try:
            with checkpoint.exclusive(job.checkpoint_folder):
                metrics = _train(job, splits, paths, observers)
        except Exception as error:
            # The store or a disk failing: its one line naming what to do, made here where the
            # whole error is known (the stage reports the first line of a failed cell's error).
            message = describe(error)
            if message is None:
                raise
            raise StageError(message) from error
        files = {
            file.relative_to(paths.root).as_posix(): file.read_bytes()
            for folder in (paths.model_dir(job.key), paths.train_reports(job.key))
            for file in sorted(folder.rglob("*"))
            if file.is_file()
        }
    return CellResult(job.key, files, metrics, time.monotonic() - started)


def _train(
    job: CellJob, splits: Splits, paths: Paths, observers: Sequence[keras.callbacks.Callback]
) -> dict[str, Any]:
    """Write data/models/<key>/ and reports/train/<key>/ under `paths`; return the metrics."""
    params, cell, folder = job.params, job.cell, job.checkpoint_folder
    watch = Stopwatch()  # where the cell's time goes: run.json "seconds", benchmarks/
    with watch("model"):
        placement = select_device(params.train)
        make_deterministic(cell.seed)
        with placement.scope():
            model = build_model(cell, params.train)
            steps = steps_per_epoch(len(splits["train"][1]), cell.batch_size)
            compile_model(model, cell, params.train, steps)
    with watch("tracking_start"):
        experiment = tracking.open_experiment(params.study.name, paths, uri=job.tracking_uri)
        tags = {**job.tags, "device": placement.label}
        run_id = mlflow_run.continue_or_create(
            experiment, folder, cell, flat_params(job.config), tags
        )
        saved = checkpoint.load(folder)
    with tracking.active_run(run_id):
        with watch("tracking_start"):
            tracking_log.log_splits(
                experiment.client, run_id, splits, job.data_files, job.data_digests
            )
        with watch("fit"):
            setup = TrainingSetup(params, cell, splits, folder, saved)
            fitted = fit_cell(
                model, setup, experiment.client, run_id, diagnostics_callbacks, observers
            )
        with watch("outputs"):
            metrics = summarize(
                fitted.rows, fitted.stopped_early, model.count_params(), placement.label
            )
            write_reports(paths.train_reports(cell.key), fitted.rows, metrics)
            publish_diagnostics(folder, paths.train_reports(cell.key))
        with watch("model_logging"):
            model_uri = mlflow_run.log_model_once(model, folder, run_id, metrics, experiment)
            tracking_log.log_reports(paths.train_reports(cell.key))
    with watch("outputs"):
        save_model(model, paths.model_file(cell.key))
        record = {
            "run_id": run_id,
            "experiment_id": experiment.experiment_id,
            "experiment_name": experiment.name,
            "model_uri": model_uri,
            "cell": {**cell.model_dump(), "key": cell.key},
            "config": job.config,
            "config_digest": job.digest,
            "seconds": watch.seconds,  # this worker's phases (without `outputs`' last write)
        }
        write_json(paths.run_record(cell.key), record)  # how evaluate finds the cell's run
    return metrics
