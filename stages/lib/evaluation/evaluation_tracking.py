"""Evaluate's side of MLflow: the test metrics and report files, logged into the cell's run.

The cell's run is the one train created (its id is in run.json), so one run holds the whole cell.
Evaluating again must not pile up points: only changed values are logged (changed_metrics.py).
Artifacts are overwritten in place by the artifact store.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from stages.lib.tracking import runs
from stages.lib.tracking.changed_metrics import log_changed_metrics

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


def log_evaluation(
    client: MlflowClient, run_id: str, summary: dict[str, Any], files: Mapping[str, Path]
) -> dict[str, float]:
    """The test metrics, and each of `files` under its name in `evaluation/`, into `run_id`."""
    runs.refresh_dvc_exp(client, run_id)
    logged = log_changed_metrics(client, run_id, metric_values(summary))
    with tempfile.TemporaryDirectory(prefix="mlpstudy-evaluation-") as staging:
        for name, file in files.items():
            shutil.copyfile(file, Path(staging) / name)
        client.log_artifacts(run_id, staging, artifact_path=ARTIFACT_FOLDER)
    return logged
