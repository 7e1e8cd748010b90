"""The MLflow run of a training cell: its tags, its continuation after a kill, its logged model."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

import keras

from stages.lib.core.config import Params
from stages.lib.core.grid import Cell
from stages.lib.data.idx import IMAGE_SHAPE, NUM_CLASSES
from stages.lib.tracking import runs, study_tracking, tracking, tracking_log
from stages.lib.training import checkpoint


def tags(
    params: Params,
    cell: Cell,
    digest: str,
    data_digests: dict[str, str],
    parent_run_id: str,
    commit: str,
) -> dict[str, str]:
    """The run's tags that the stage knows before a worker takes the cell (not its device)."""
    tags = {
        "kind": runs.CELL_KIND,
        "study": params.study.name,
        "cell": cell.key,
        "dvc_stage": "train",
        "git_commit": commit,
        "config_digest": digest,
        **{f"data.{name}_digest": value for name, value in data_digests.items()},
        "tensorflow_version": version("tensorflow"),
        "keras_version": version("keras"),
        **study_tracking.cell_tags(parent_run_id, params, cell),
    }
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    if runs.dvc_experiment():
        tags[runs.DVC_EXP_TAG] = runs.dvc_experiment()
    return tags


def continue_or_create(
    experiment: tracking.Experiment,
    folder: Path,
    cell: Cell,
    params: dict[str, str],
    tags: dict[str, str],
) -> str:
    """The run a killed worker left in `folder` (its tags refreshed), else a new run."""
    run_id = checkpoint.read_run_file(folder).get("run_id")
    if run_id is not None and runs.run_exists(experiment, run_id):
        runs.set_tags(experiment, run_id, tags)
        runs.refresh_dvc_exp(experiment.client, run_id)  # e.g. resumed outside `dvc exp run`
        return run_id
    checkpoint.discard(folder)  # a checkpoint without its run (store deleted) starts over
    run_id = runs.create_run(experiment, cell.key, params, tags)
    try:
        checkpoint.update_run_file(folder, run_id=run_id)
    except BaseException:  # e.g. a full disk: the new run must not stay RUNNING
        experiment.client.set_terminated(run_id, "FAILED")
        raise
    return run_id


def log_model_once(
    model: keras.Model,
    folder: Path,
    run_id: str,
    metrics: dict[str, Any],
    experiment: tracking.Experiment,
) -> str:
    """Summary metrics and the model, logged once even if a process dies after logging them."""
    logged = checkpoint.read_run_file(folder).get("model_uri")
    if logged:
        return logged
    tracking_log.log_summary(experiment.client, run_id, metrics)
    signature = tracking_log.classifier_signature(IMAGE_SHAPE, NUM_CLASSES)
    model_uri = tracking_log.log_keras_model(model, signature)
    checkpoint.update_run_file(folder, model_uri=model_uri)
    return model_uri
