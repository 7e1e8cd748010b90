"""Stage `evaluate@<cell>`: one trained cell on the test split -> reports, export, MLflow.

The test images go through the model once; every number (loss, accuracy, per-digit precision,
recall and F1, the confusion matrix) is computed from those logits in numpy. Everything that can
reject the input (model, run record, test split, the cell's MLflow run) is checked before
TensorFlow is imported, so a missing train output fails in about a second.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # before TensorFlow loads: no INFO chatter

from pathlib import Path
from typing import Any

import numpy as np

from stages.lib import evaluation_tables, metrics
from stages.lib.classifier import EXPORT_FILE, check_keras_file, export_classifier, load_classifier
from stages.lib.config import Cell, ConfigError, Params
from stages.lib.errors import StageError
from stages.lib.idx import display_path
from stages.lib.paths import Paths
from stages.lib.prepared import load_split

MODEL_FILE = "model.keras"  # written by train (stages/lib/train_outputs.py)
RUN_RECORD = "run.json"
CONFUSION_FIGURE = "confusion.png"
MISTAKES_FIGURE = "misclassified.png"


def run(params: Params, cell: Cell, paths: Paths) -> dict[str, Any]:
    """Evaluate `cell`; write reports/evaluate/<key>/ and data/exported/<key>/; return metrics."""
    key = cell.key
    model_file = paths.model_dir(key) / MODEL_FILE
    remedy = f"run `dvc repro train@{key}` (or `mlpstudy train ...`) first"
    check_keras_file(model_file, display_path(model_file, paths.root), remedy)
    run_id = read_run_id(paths, key, remedy)
    images, labels = load_split(paths, "test")
    from stages.lib import tracking  # imports MLflow (~1 s): after the checks of local files

    experiment = tracking.open_experiment(params.study.name, paths)
    if not tracking.run_exists(experiment, run_id):
        raise StageError(
            f"{display_path(paths.model_dir(key) / RUN_RECORD, paths.root)}: run {run_id} is not "
            f"in experiment {experiment.name!r} of the MLflow store {experiment.tracking_uri}; "
            f"run `dvc repro --force train@{key}` to train and track the cell again"
        )

    model = load_classifier(model_file, display_path(model_file, paths.root), remedy)
    logits = model.predict(images, batch_size=params.evaluate.batch_size, verbose=0)
    summary = metrics.summarize(logits, labels)
    folder = paths.evaluate_reports(key)
    result = evaluation_tables.write_tables(folder, summary, labels)
    _draw(images, labels, logits, summary, params.evaluate.misclassified_shown, key, folder)
    export_classifier(model, paths.export_dir(key) / EXPORT_FILE)

    from stages.lib import evaluation_tracking

    evaluation_tracking.log_evaluation(experiment.client, run_id, summary, folder)
    return result


def read_run_id(paths: Paths, key: str, remedy: str) -> str:
    """The MLflow run id that train recorded in data/models/<key>/run.json."""
    record_file = paths.model_dir(key) / RUN_RECORD
    name = display_path(record_file, paths.root)
    try:
        record = json.loads(record_file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{name}: missing; {remedy}") from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"{name}: not a readable run record ({error}); {remedy}") from None
    run_id = record.get("run_id") if isinstance(record, dict) else None
    if not isinstance(run_id, str) or not run_id:
        raise ConfigError(f"{name}: has no `run_id` of an MLflow run; {remedy}")
    return run_id


def _draw(
    images: np.ndarray,
    labels: np.ndarray,
    logits: np.ndarray,
    summary: dict[str, Any],
    shown: int,
    key: str,
    folder: Path,
) -> None:
    """confusion.png and misclassified.png (the most confident mistakes)."""
    from stages.lib import evaluation_figures

    predictions = summary["predictions"]
    accuracy = summary["accuracy"]
    evaluation_figures.save_confusion(
        summary["confusion"],
        summary["confusion_normalized"],
        f"{key}: test accuracy {accuracy:.2%} ({summary['count']} images)",
        folder / CONFUSION_FIGURE,
    )
    confidence = metrics.softmax(logits).max(axis=1)
    chosen = metrics.most_confident_mistakes(labels, predictions, confidence, shown)
    errors = int(np.count_nonzero(labels != predictions))
    evaluation_figures.save_mistakes(
        images[chosen],
        labels[chosen],
        predictions[chosen],
        confidence[chosen],
        f"{key}: the {len(chosen)} most confident of {errors} mistakes on the test split\n"
        "titled with the probability the model gave its prediction",
        folder / MISTAKES_FIGURE,
    )
