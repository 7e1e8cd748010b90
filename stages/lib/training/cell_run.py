"""The MLflow run of a training cell: its tags, its continuation after a kill, its logged model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from stages.lib.core.config import Params
from stages.lib.core.grid import Cell
from stages.lib.core.paths import Paths
from stages.lib.data.idx import IMAGE_SHAPE, NUM_CLASSES
from stages.lib.tracking import runs, study_tracking, tracking, tracking_log
from stages.lib.training import resume
from stages.lib.training.device import Placement


def keras_configuration(model: keras.Model) -> dict[str, Any]:
    """The model's and optimizer's Keras configuration as plain JSON values."""
    return {
        "model": json.loads(model.to_json()),
        "optimizer": json.loads(json.dumps(model.optimizer.get_config(), default=str)),
        "keras_version": keras.__version__,
    }


def tags(
    params: Params,
    cell: Cell,
    paths: Paths,
    digest: str,
    data_digests: dict[str, str],
    placement: Placement,
    experiment: tracking.Experiment,
) -> dict[str, str]:
    """The run's tags; describes the experiment and finds the grid's parent run on the way."""
    commit = runs.git_commit(paths.root)
    study_tracking.describe_experiment(experiment, params)
    parent = study_tracking.grid_parent(experiment, params)
    tags = {
        "kind": runs.CELL_KIND,
        "study": params.study.name,
        "cell": cell.key,
        "dvc_stage": os.environ.get("DVC_STAGE", f"train@{cell.key}"),
        "git_commit": commit,
        "config_digest": digest,
        **{f"data.{name}_digest": value for name, value in data_digests.items()},
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "device": placement.label,
        **study_tracking.cell_tags(parent, params, cell),
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
    code: str,
) -> str:
    """The run a killed process left in `folder` (its tags refreshed), else a new run; epochs
    that `code` trained ahead into `folder` (without a run) are kept for the new run."""
    run_id = resume.read_run_file(folder).get("run_id")
    if run_id is not None and runs.run_exists(experiment, run_id):
        runs.set_tags(experiment, run_id, tags)
        runs.refresh_dvc_exp(experiment.client, run_id)  # e.g. resumed outside `dvc exp run`
        return run_id
    if run_id is not None or resume.trained_ahead(folder) != code:
        resume.remove(folder)  # a checkpoint without its run (store deleted) starts over
    run_id = runs.create_run(experiment, cell.key, params, tags)
    try:
        resume.update_run_file(folder, run_id=run_id)
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
    logged = resume.read_run_file(folder).get("model_uri")
    if logged:
        return logged
    tracking_log.log_summary(experiment.client, run_id, metrics)
    signature = tracking_log.classifier_signature(IMAGE_SHAPE, NUM_CLASSES)
    model_uri = tracking_log.log_keras_model(model, signature)
    resume.update_run_file(folder, model_uri=model_uri)
    return model_uri
