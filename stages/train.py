"""Stage `train`: every cell of the study grid whose result is not up to date, on a Dask cluster.

One stage knows the whole grid (instead of one DVC stage per cell, whose cost per cell grew with
the grid: docs/scaling.md). It plans first (stages/lib/training/grid_plan.py): a cell whose
finished result carries its configuration digest is skipped, so adding a value trains only the
new cells and a changed variant re-trains only its cells. Everything that can reject the input
(the prepared data, the output folders, the MLflow store, the workers' versions) is checked
before the first cell trains. Then every pending cell goes to the cluster at once
(stages/lib/cluster/engine.py); each trains in its own MLflow run on a worker, which returns
its files, and the stage installs them as they arrive, so a killed `dvc repro` keeps every
finished cell and continues the others from their checkpoints.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # before TensorFlow loads: no INFO chatter

from typing import Any

from stages.lib.core.atomic import check_writable
from stages.lib.core.cell_config import array_digest
from stages.lib.core.config import Params
from stages.lib.core.paths import Paths
from stages.lib.data.prepared import load_split, split_file
from stages.lib.training import grid_plan
from stages.lib.training.cell_job import CellJob, CellResult, Splits

SPLITS = ("train", "validation")  # what training reads; never the test split
AGAIN = "run `dvc repro train` again"


def run(params: Params, paths: Paths, *, dry_run: bool = False) -> dict[str, Any]:
    """Train the grid's pending cells; return {"trained": [...], "up_to_date": [...]} (keys).

    With `dry_run`, print which cells would train and why, and train none.
    """
    splits: Splits = {name: load_split(paths, name) for name in SPLITS}
    digests = {name: array_digest(*arrays) for name, arrays in splits.items()}
    plan = grid_plan.plan(params, paths, digests)
    pending = plan.pending
    print(plan.summary(), flush=True)
    shown = pending if dry_run else pending[:10]
    for planned in shown:
        print(f"  {planned.describe()}", flush=True)
    if len(shown) < len(pending):
        print(f"  ... and {len(pending) - len(shown)} more (`mlpstudy train --dry-run`)")
    up_to_date = [planned.cell.key for planned in plan.cells if not planned.pending]
    if dry_run or not pending:
        return {"trained": [], "up_to_date": up_to_date}
    for folder in (paths.models, paths.train_reports_dir, paths.checkpoints):
        check_writable(folder, paths.root, AGAIN)
    from stages.lib.cluster import engine
    from stages.lib.tracking import tracking
    from stages.lib.training import cell_training, checkpoint, outputs
    from stages.lib.training.progress import GridProgress, epoch_line

    tracking.check_store(paths)
    outputs.remove_leftovers(paths.models)
    outputs.remove_leftovers(paths.train_reports_dir)
    trained: list[str] = []
    with engine.connect(params.train.parallel_cells) as client:
        engine.check_workers(
            client, "train"
        )  # before the store is written: refusing leaves nothing
        workers = engine.worker_count(client)
        print(f"train: on {engine.describe(client)}", flush=True)
        jobs = _jobs(params, paths, pending, splits, digests)
        if engine.remote(client) and tracking.sqlite_file(jobs[0].tracking_uri):
            print(
                "train: warning: the MLflow store is a sqlite file on this machine; workers on "
                "other machines cannot log into it (set MLFLOW_TRACKING_URI to a mlflow server)",
                flush=True,
            )
        progress = GridProgress(len(jobs), workers or params.train.parallel_cells)
        by_key = {job.key: job for job in jobs}

        def install(result: CellResult) -> None:
            folders = (paths.model_dir(result.key), paths.train_reports(result.key))
            outputs.install(paths.root, folders, result.files)
            checkpoint.remove(by_key[result.key].checkpoint_folder)  # nothing left to resume
            trained.append(result.key)
            print(progress.cell_line(result), flush=True)

        failures = engine.run(
            client,
            "train",
            cell_training.train_on_worker,
            jobs,
            splits,
            install,
            on_event=lambda event: print(epoch_line(event), flush=True),
        )
    engine.raise_failures("train", failures, len(jobs))
    return {"trained": trained, "up_to_date": up_to_date}


def _jobs(
    params: Params,
    paths: Paths,
    pending: list[grid_plan.PlannedCell],
    splits: Splits,
    digests: dict[str, str],
) -> list[CellJob]:
    """Each pending cell's job. Opens (creates) the MLflow store and the grid's parent run here,
    in this one process, before workers write to them, and records the splits as the parent's
    inputs: the cells, started together, then only link datasets the store already has."""
    from stages.lib.tracking import runs, study_tracking, tracking, tracking_log
    from stages.lib.training import mlflow_run

    experiment = tracking.open_experiment(params.study.name, paths)
    study_tracking.describe_experiment(experiment, params)
    parent = study_tracking.grid_parent(experiment, params)
    files = {name: str(split_file(paths, name)) for name in SPLITS}
    tracking_log.log_splits(experiment.client, parent, splits, files, digests)
    commit = runs.git_commit(paths.root)
    return [
        CellJob(
            params=params,
            cell=planned.cell,
            config=planned.config,
            digest=planned.digest,
            data_digests=digests,
            data_files=files,
            tracking_uri=experiment.tracking_uri,
            tags=mlflow_run.tags(params, planned.cell, planned.digest, digests, parent, commit),
            checkpoints=paths.checkpoints,
        )
        for planned in pending
    ]
