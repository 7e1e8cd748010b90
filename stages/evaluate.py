"""Stage `evaluate`: the trained cells of the grid on the test split -> reports, export, MLflow.

Incremental: a cell whose files were made from its current trained result (run.json's run id and
config digest, its model file) and by the current evaluation (evaluate's params and code, the
test split) is up to date and skipped (evaluation_record.py). So adding a cell to the grid or
training one again evaluates only that cell, and a grid of thousands of cells is evaluated once.
The files of cells no longer in the grid are removed: the outputs always equal the grid.

The pending cells are evaluated on the same Dask cluster as train's cells
(stages/lib/cluster/engine.py; `evaluate.parallel_cells` workers of a local cluster, or the one
DASK_SCHEDULER_ADDRESS names): a worker gets a cell's model file as bytes and returns its files
(stages/lib/evaluation/cell_evaluation.py), and this process writes them, logs them into the
cell's own MLflow run and writes the cell's record, one cell at a time as they arrive. A few jobs
per worker are in flight at a time, so the models of a grid of thousands are never all in memory.

Everything that can reject the input is checked before any file is written: for every cell,
cheaply, its model file and run record (before TensorFlow is even imported); the test split and
the output folders; then for the cells to evaluate, their MLflow runs. A model that does not load
as a 28x28 -> 10 classifier fails its cell with one line naming the file; the other cells are
evaluated and saved, and the stage then fails naming the cells that did.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # before TensorFlow loads: no INFO chatter

from typing import TYPE_CHECKING, Any

from stages.lib.core.atomic import atomic_path, check_writable
from stages.lib.core.config import Params
from stages.lib.core.errors import StageError
from stages.lib.core.grid import Cell, grid
from stages.lib.core.paths import Paths, display_path
from stages.lib.core.stopwatch import duration
from stages.lib.data.prepared import load_split, split_file
from stages.lib.evaluation import cell_evaluation, evaluation_record, evaluation_tables
from stages.lib.evaluation.cell_evaluation import EvaluationJob, EvaluationResult, TestSplit
from stages.lib.evaluation.classifier import check_keras_file
from stages.lib.evaluation.evaluation_record import Trained

if TYPE_CHECKING:  # MLflow is imported after the checks of local files (~1 s)
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from stages.lib.tracking import tracking

AGAIN = "run `dvc repro evaluate` again"
IN_FLIGHT_PER_WORKER = 4  # jobs sent ahead per worker: each carries its model file


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
        check_writable(folder, paths.root, AGAIN)
    # imports MLflow (~1 s): after the checks of local files
    from stages.lib.evaluation import evaluation_tracking
    from stages.lib.tracking import tracking

    experiment = tracking.open_experiment(params.study.name, paths, create=False)
    cell_runs = {cell.key: _cell_run(experiment, paths, cell, trained) for cell in pending}
    removed = evaluation_record.remove_stale(paths, [cell.key for cell in cells])
    results = {}
    if pending:
        tracked = (experiment.client, cell_runs, records)
        results = _evaluate_on_cluster(params, paths, pending, (images, labels), tracked)
    kept = [trained[cell.key].run_id for cell in cells if cell.key not in results]
    evaluation_tracking.follow_dvc_experiment(experiment, kept)
    print(_summary(len(results), len(kept), len(removed)), flush=True)
    return {
        cell.key: results.get(cell.key) or evaluation_record.read_metrics(paths, cell.key)
        for cell in cells
    }


def _evaluate_on_cluster(
    params: Params,
    paths: Paths,
    pending: list[Cell],
    test: TestSplit,
    tracked: tuple[MlflowClient, dict[str, Run], dict[str, dict[str, str]]],
) -> dict[str, dict[str, Any]]:
    """Evaluate `pending` on the cluster (`tracked`: the MLflow client, each cell's run as read
    before any work, each cell's record); return each cell's metrics.json content by key."""
    from stages.lib.cluster import engine
    from stages.lib.evaluation import evaluation_tracking

    client, cell_runs, records = tracked
    results: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()

    def install(result: EvaluationResult) -> None:
        """Replace the cell's files, log them into its run, then write its record: last, so a
        run killed before it evaluates the cell again."""
        evaluation_record.remove_cell(paths, result.key)
        for name, data in result.files.items():
            with atomic_path(paths.root / name) as temporary:
                temporary.write_bytes(data)
        files = evaluation_tables.cell_files(paths, result.key)
        evaluation_tracking.log_evaluation(client, cell_runs[result.key], result.summary, files)
        evaluation_record.write_record(paths, result.key, records[result.key])
        results[result.key] = result.metrics
        print(
            _cell_line(result, len(results), len(pending), time.perf_counter() - start),
            flush=True,
        )

    # No more workers than cells: one pending cell is evaluated in this process, without
    # starting worker processes (each imports TensorFlow).
    with engine.connect(min(params.evaluate.parallel_cells, len(pending))) as cluster:
        engine.check_workers(cluster, "evaluate")
        print(f"evaluate: {_cells(len(pending))} on {engine.describe(cluster)}", flush=True)
        workers = engine.worker_count(cluster) or params.evaluate.parallel_cells
        failures = engine.run(
            cluster,
            "evaluate",
            cell_evaluation.evaluate_on_worker,
            (_job(params, paths, cell) for cell in pending),  # each reads its model when sent
            test,
            install,
            in_flight=IN_FLIGHT_PER_WORKER * workers,
        )
    engine.raise_failures("evaluate", failures, len(pending))
    return results


def _job(params: Params, paths: Paths, cell: Cell) -> EvaluationJob:
    model_file = paths.model_file(cell.key)
    return EvaluationJob(
        cell=cell,
        params=params.evaluate,
        model=model_file.read_bytes(),
        model_name=display_path(model_file, paths.root),
        remedy=_remedy(cell),
    )


def _cell_line(result: EvaluationResult, done: int, total: int, seconds: float) -> str:
    """`evaluate [12/54] <key>: test accuracy 0.9771 | ~40 s left`: the time left at the rate
    of the cells done so far (their evaluations overlap on the workers)."""
    left = seconds / done * (total - done)
    return (
        f"evaluate [{done}/{total}] {result.key}: test accuracy "
        f"{result.metrics['test_accuracy']:.4f} | "
        + (f"~{duration(left)} left" if done < total else "all evaluated")
    )


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


def _check_train_outputs(paths: Paths, cell: Cell) -> Trained:
    """The cell's trained result, once its model file looks like a Keras model (cheap checks:
    no model is loaded)."""
    model_file = paths.model_file(cell.key)
    check_keras_file(model_file, display_path(model_file, paths.root), _remedy(cell))
    return evaluation_record.read_trained(paths, cell.key, _remedy(cell))
