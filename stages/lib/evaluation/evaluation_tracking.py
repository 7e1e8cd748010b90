"""Evaluate's side of MLflow: the test metrics and report files, logged into the cell's run.

The cell's run is the one train created (its id is in run.json), so one run holds the whole cell.
Evaluating again must not pile up points: a metric whose latest value is unchanged is skipped, and
a changed one becomes the next step. Artifacts are overwritten in place by the artifact store.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from stages.lib.tracking import runs

ARTIFACT_FOLDER = "evaluation"
BATCH_LIMIT = 1000  # metrics per log_batch call that MLflow stores accept


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


def _same(old: float, new: float) -> bool:
    return old == new or (math.isnan(old) and math.isnan(new))


def log_changed_metrics(
    client: MlflowClient, run_id: str, values: Mapping[str, float]
) -> dict[str, float]:
    """Log the `values` that differ from the run's latest ones, in batches; return those logged.

    One `get_run` reads every latest value; the history is read only for the changed metrics,
    to put their new point one step after the last.
    """
    latest = client.get_run(run_id).data.metrics
    changed = {
        key: value
        for key, value in values.items()
        if key not in latest or not _same(latest[key], value)
    }
    timestamp = int(time.time() * 1000)
    points = []
    for key, value in changed.items():
        history = client.get_metric_history(run_id, key) if key in latest else []
        step = max((metric.step for metric in history), default=-1) + 1
        points.append(Metric(key, value, timestamp, step))
    for start in range(0, len(points), BATCH_LIMIT):
        client.log_batch(run_id, metrics=points[start : start + BATCH_LIMIT])
    return changed


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
