"""Evaluate's side of MLflow: the test metrics and report files, logged into the cell's run.

The cell's run is the one train created (its id is in run.json), so one run holds the whole cell.
Evaluating again must not pile up points: only changed values are logged (changed_metrics.py).
Artifacts are overwritten in place by the artifact store.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from stages.lib.tracking import runs
from stages.lib.tracking.changed_metrics import log_changed_metrics
from stages.lib.tracking.tracking import Experiment

ARTIFACT_FOLDER = "evaluation"


def metric_values(summary: dict[str, Any]) -> dict[str, float]:
    """MLflow names that sort into groups in the UI: test/accuracy, test/recall/digit_3, ..."""
    values = {
        "test/loss": summary["loss"],
        "test/accuracy": summary["accuracy"],
        "test/f1_macro": summary["f1_macro"],
    }
    for name in ("recall", "precision", "f1"):
        for digit, value in enumerate(summary["per_class"][name]):
            values[f"test/{name}/digit_{digit}"] = value
    return {key: float(value) for key, value in values.items()}


def cell_run(experiment: Experiment, run_id: str) -> Run | None:
    """The live run `run_id` of the experiment, or None (not in this store, deleted, or of
    another experiment). Read once per cell evaluated: the check before any file is written,
    then what `log_evaluation` compares with (nothing else writes the run in between)."""
    try:
        run = experiment.client.get_run(run_id)
    except MlflowException:
        return None
    if run.info.experiment_id != experiment.experiment_id or run.info.lifecycle_stage != "active":
        return None
    return run


def log_evaluation(
    client: MlflowClient, run: Run, summary: dict[str, Any], files: Mapping[str, Path]
) -> dict[str, float]:
    """The test metrics, and each of `files` under its name in `evaluation/`, into `run` (as
    `cell_run` read it): the changed metrics in one batch, the files in one call."""
    run_id = run.info.run_id
    _follow(client, run_id, run.data.tags.get(runs.DVC_EXP_TAG))
    logged = log_changed_metrics(client, run_id, metric_values(summary), run.data.metrics)
    with tempfile.TemporaryDirectory(prefix="mlpstudy-evaluation-") as staging:
        for name, file in files.items():
            shutil.copyfile(file, Path(staging) / name)
        client.log_artifacts(run_id, staging, artifact_path=ARTIFACT_FOLDER)
    return logged


def follow_dvc_experiment(experiment: Experiment, run_ids: list[str]) -> None:
    """The `dvc_exp` tag of the runs of cells evaluate kept (up to date), as `log_evaluation`
    sets it for the others: one search finds the runs that carry a tag, instead of one
    `get_run` per cell of a grid of thousands."""
    if not run_ids:
        return
    search = partial(
        experiment.client.search_runs,
        [experiment.experiment_id],
        filter_string=f"tags.{runs.DVC_EXP_TAG} LIKE '%'",
    )
    tagged = {run.info.run_id: run.data.tags[runs.DVC_EXP_TAG] for run in runs.every_page(search)}
    for run_id in run_ids:
        _follow(experiment.client, run_id, tagged.get(run_id))


def _follow(client: MlflowClient, run_id: str, tagged: str | None) -> None:
    """`runs.refresh_dvc_exp` on a run whose tag was read already: the tag names the DVC
    experiment running now, and goes when none is, so it never names one the run has left."""
    current = runs.dvc_experiment()
    if current and tagged != current:
        client.set_tag(run_id, runs.DVC_EXP_TAG, current)
    elif not current and tagged is not None:
        client.delete_tag(run_id, runs.DVC_EXP_TAG)
