"""Stage `evaluate`: every trained cell of the grid on the test split -> reports, export, MLflow.

One process evaluates the whole grid: loading TensorFlow and MLflow costs ~10 s per process,
while evaluating one cell costs ~2 s, so 54 cells in one process take a tenth of 54 processes.
Everything that can reject the input is checked for every cell before any file is written: the
model files and run records (before TensorFlow is even imported), the test split, the output
folders, the cells' MLflow runs, and that each model loads as a 28x28 -> 10 classifier.

Per cell, the test images go through the model once; every number (loss, accuracy, per-digit
precision, recall and F1, the confusion matrix) is computed from those logits in numpy.
"""

from __future__ import annotations

import json
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # before TensorFlow loads: no INFO chatter

from typing import Any

import numpy as np

from stages.lib.core.atomic import check_writable
from stages.lib.core.config import ConfigError, Params
from stages.lib.core.errors import StageError
from stages.lib.core.grid import Cell, grid
from stages.lib.core.paths import Paths, display_path
from stages.lib.data.prepared import load_split
from stages.lib.evaluation import evaluation_tables, metrics
from stages.lib.evaluation.classifier import (
    EXPORT_FILE,
    check_keras_file,
    export_classifier,
    load_classifier,
)


def run(params: Params, paths: Paths, cells: list[Cell] | None = None) -> dict[str, dict[str, Any]]:
    """Evaluate `cells` (default: the grid in params.yaml); return each cell's metrics by key.

    Like DVC before it runs the stage, this replaces all earlier evaluate outputs, so files of
    cells no longer in the grid never mix with fresh ones.
    """
    cells = grid(params.train) if cells is None else cells
    run_ids = {cell.key: _check_train_outputs(paths, cell) for cell in cells}
    images, labels = load_split(paths, "test")
    outputs = paths.evaluate_outputs  # not reports/evaluate/ itself: DVC's .gitignore is there
    for folder in outputs:
        check_writable(folder, paths.root, "run `dvc repro evaluate` again")
    # imports MLflow (~1 s): after the checks of local files
    from stages.lib.tracking import runs, tracking

    experiment = tracking.open_experiment(params.study.name, paths, create=False)
    for key, run_id in run_ids.items():
        if not runs.run_exists(experiment, run_id):
            raise StageError(
                f"{display_path(paths.run_record(key), paths.root)}: run {run_id} is "
                f"not in experiment {experiment.name!r} of the MLflow store "
                f"{experiment.tracking_uri}; delete data/models/{key}/ and run `dvc repro` to "
                "train and track the cell again"
            )
    models = {cell.key: _load_model(paths, cell) for cell in cells}  # each one loads and fits
    from stages.lib.evaluation import evaluation_tracking

    for folder in outputs:
        shutil.rmtree(folder, ignore_errors=True)
    results = {}
    for cell in cells:
        files = evaluation_tables.cell_files(paths, cell.key)
        summary, results[cell.key] = _evaluate_cell(
            params, cell, paths, models.pop(cell.key), images, labels, files
        )
        evaluation_tracking.log_evaluation(experiment.client, run_ids[cell.key], summary, files)
        accuracy = results[cell.key]["test_accuracy"]
        print(f"evaluate {cell.key}: test accuracy {accuracy:.4f}", flush=True)
    return results


def _remedy(cell: Cell) -> str:
    return "run `dvc repro train` first"


def _load_model(paths: Paths, cell: Cell) -> Any:
    model_file = paths.model_file(cell.key)
    return load_classifier(model_file, display_path(model_file, paths.root), _remedy(cell))


def _check_train_outputs(paths: Paths, cell: Cell) -> str:
    """The cell's MLflow run id, once its model file looks like a Keras model."""
    model_file = paths.model_file(cell.key)
    check_keras_file(model_file, display_path(model_file, paths.root), _remedy(cell))
    return read_run_id(paths, cell.key, _remedy(cell))


def read_run_id(paths: Paths, key: str, remedy: str) -> str:
    """The MLflow run id that train recorded in data/models/<key>/run.json."""
    record_file = paths.run_record(key)
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


def _evaluate_cell(
    params: Params,
    cell: Cell,
    paths: Paths,
    model: Any,
    images: np.ndarray,
    labels: np.ndarray,
    files: dict,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(summary, metrics.json) of one cell, its files written and its classifier exported."""
    logits = model.predict(images, batch_size=params.evaluate.batch_size, verbose=0)
    summary = metrics.summarize(logits, labels)
    result = evaluation_tables.write_tables(files, summary, labels)
    from stages.lib.evaluation import evaluation_figures

    evaluation_figures.draw_cell(
        images, labels, logits, summary, params.evaluate.misclassified_shown, cell.key, files
    )
    export_classifier(model, paths.export_dir(cell.key) / EXPORT_FILE)
    return summary, result
