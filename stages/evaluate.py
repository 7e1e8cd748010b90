"""Stage `evaluate`: the trained cells of the grid on the test split -> reports, export, MLflow.

Incremental: a cell whose files were made from its current trained result (run.json's run id and
config digest, its model file) and by the current evaluation (evaluate's params and code, the
test split) is up to date and skipped (evaluation_record.py). So adding a cell to the grid or
training one again evaluates only that cell, and a grid of thousands of cells is evaluated once.
The files of cells no longer in the grid are removed: the outputs always equal the grid.

One process evaluates the pending cells: loading TensorFlow and MLflow costs ~10 s per process,
more than evaluating dozens of cells. Everything that can reject the input is checked before any
file is written: for every cell, cheaply, its model file and run record (before TensorFlow is
even imported); the test split and the output folders; then for the cells to evaluate, their
MLflow runs and that each model loads as a 28x28 -> 10 classifier.

Per cell, the test images go through the model once; every number (loss, accuracy, per-digit
precision, recall and F1, the confusion matrix) is computed from those logits in numpy.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # before TensorFlow loads: no INFO chatter

from typing import TYPE_CHECKING, Any

import numpy as np

from stages.lib.core.atomic import check_writable
from stages.lib.core.config import Params
from stages.lib.core.errors import StageError
from stages.lib.core.grid import Cell, grid
from stages.lib.core.paths import Paths, display_path
from stages.lib.data.prepared import load_split, split_file
from stages.lib.evaluation import evaluation_record, evaluation_tables, metrics
from stages.lib.evaluation.classifier import (
    EXPORT_FILE,
    check_keras_file,
    export_classifier,
    load_classifier,
    predict_logits,
)
from stages.lib.evaluation.evaluation_record import Trained

if TYPE_CHECKING:  # MLflow is imported after the checks of local files (~1 s)
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from stages.lib.tracking import tracking


def run(params: Params, paths: Paths, cells: list[Cell] | None = None) -> dict[str, dict[str, Any]]:
    """Evaluate the cells of `cells` (default: the grid in params.yaml) that are not up to date;
    return every cell's metrics by key (an up-to-date cell's from its metrics file)."""
    cells = grid(params.train) if cells is None else cells
    trained = {cell.key: _check_train_outputs(paths, cell) for cell in cells}
    images, labels = load_split(paths, "test")
    evaluation = evaluation_record.evaluation_digest(params.evaluate, split_file(paths, "test"))
    records = {
        key: evaluation_record.cell_record(result, paths.model_file(key), evaluation)
        for key, result in trained.items()
    }
    pending = [
        cell
        for cell in cells
        if not evaluation_record.is_up_to_date(paths, cell.key, records[cell.key])
    ]
    for folder in paths.evaluate_outputs:  # not reports/evaluate/: DVC's .gitignore is there
        check_writable(folder, paths.root, "run `dvc repro evaluate` again")
    # imports MLflow (~1 s): after the checks of local files
    from stages.lib.evaluation import evaluation_tracking
    from stages.lib.tracking import tracking

    experiment = tracking.open_experiment(params.study.name, paths, create=False)
    cell_runs = {cell.key: _cell_run(experiment, paths, cell, trained) for cell in pending}
    models = {cell.key: _load_model(paths, cell) for cell in pending}  # each one loads and fits
    removed = evaluation_record.remove_stale(paths, [cell.key for cell in cells])
    results = {
        cell.key: _evaluate_and_log(
            params,
            paths,
            cell,
            models.pop(cell.key),
            (images, labels),
            (experiment.client, cell_runs[cell.key], records[cell.key]),
        )
        for cell in pending
    }
    kept = [trained[cell.key].run_id for cell in cells if cell.key not in results]
    evaluation_tracking.follow_dvc_experiment(experiment, kept)
    print(_summary(len(results), len(kept), len(removed)), flush=True)
    return {
        cell.key: results.get(cell.key) or evaluation_record.read_metrics(paths, cell.key)
        for cell in cells
    }


def _evaluate_and_log(
    params: Params,
    paths: Paths,
    cell: Cell,
    model: Any,
    test: tuple[np.ndarray, np.ndarray],
    tracked: tuple[MlflowClient, Run, dict[str, str]],
) -> dict[str, Any]:
    """Replace the cell's files, log them into its run (`tracked`: the client, the run as read
    before any work, the record), then write its record: last, so a run killed before it
    evaluates the cell again. Returns the cell's metrics.json content."""
    from stages.lib.evaluation import evaluation_tracking

    client, run, record = tracked
    evaluation_record.remove_cell(paths, cell.key)
    files = evaluation_tables.cell_files(paths, cell.key)
    summary, result = _evaluate_cell(params, cell, paths, model, *test, files)
    evaluation_tracking.log_evaluation(client, run, summary, files)
    evaluation_record.write_record(paths, cell.key, record)
    print(f"evaluate {cell.key}: test accuracy {result['test_accuracy']:.4f}", flush=True)
    return result


def _summary(evaluated: int, up_to_date: int, removed: int) -> str:
    """The stage's last line: how much of the grid this run evaluated."""
    line = f"evaluate: {_cells(evaluated)} evaluated, {up_to_date} up to date"
    if removed:
        line += f"; removed the files of {_cells(removed)} no longer in the grid"
    return line


def _cells(count: int) -> str:
    return f"{count} cell" if count == 1 else f"{count} cells"


def _cell_run(
    experiment: tracking.Experiment, paths: Paths, cell: Cell, trained: dict[str, Trained]
) -> Run:
    """The cell's MLflow run, which must be in the study's experiment before any work."""
    from stages.lib.evaluation import evaluation_tracking

    run_id = trained[cell.key].run_id
    run = evaluation_tracking.cell_run(experiment, run_id)
    if run is None:
        raise StageError(
            f"{display_path(paths.run_record(cell.key), paths.root)}: run {run_id} is "
            f"not in experiment {experiment.name!r} of the MLflow store "
            f"{experiment.tracking_uri}; delete data/models/{cell.key}/ and run `dvc repro` to "
            "train and track the cell again"
        )
    return run


def _remedy(cell: Cell) -> str:
    return f"delete data/models/{cell.key}/ (if any) and run `dvc repro train`"


def _load_model(paths: Paths, cell: Cell) -> Any:
    model_file = paths.model_file(cell.key)
    return load_classifier(model_file, display_path(model_file, paths.root), _remedy(cell))


def _check_train_outputs(paths: Paths, cell: Cell) -> Trained:
    """The cell's trained result, once its model file looks like a Keras model (cheap checks:
    no model is loaded)."""
    model_file = paths.model_file(cell.key)
    check_keras_file(model_file, display_path(model_file, paths.root), _remedy(cell))
    return evaluation_record.read_trained(paths, cell.key, _remedy(cell))


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
    logits = predict_logits(model, images, params.evaluate.batch_size)
    summary = metrics.summarize(logits, labels)
    result = evaluation_tables.write_tables(files, summary, labels)
    from stages.lib.evaluation import evaluation_figures

    evaluation_figures.draw_cell(
        images, labels, logits, summary, params.evaluate.misclassified_shown, cell.key, files
    )
    export_classifier(model, paths.export_dir(cell.key) / EXPORT_FILE)
    return summary, result
