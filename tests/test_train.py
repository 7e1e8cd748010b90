"""The train stage: real TensorFlow training on tiny synthetic digits, a real sqlite MLflow store.

In-process tests run the stage's own `run` on a one-cell grid with one worker, a thread of the
test's process (tests/training.py). The slow tests run `mlpstudy train` in fresh processes where
the point is the process boundary: bitwise reproducibility, and resuming after a real SIGKILL.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import keras
import mlflow
import numpy as np
import processes
import pytest
import yaml
from mlflow.tracking import MlflowClient
from project import TINY_UNITS, shrunk_cell
from synthetic import make_digits
from training import only, split_inputs, train_one

from stages import train as train_stage
from stages.lib.core.cell_config import array_digest, config_digest, effective_config, flat_params
from stages.lib.core.config import AXES, ConfigError, Params
from stages.lib.core.errors import StageError
from stages.lib.core.grid import Cell
from stages.lib.core.paths import Paths
from stages.lib.data.prepared import load_split
from stages.lib.training import checkpoint, grid_plan, outputs, progress
from stages.lib.training.callbacks import HISTORY_COLUMNS, ResumableEarlyStopping
from stages.lib.training.cell_job import CellResult
from stages.lib.training.outputs import history_csv, summarize

BIN = Path(sys.executable).parent
CELL = shrunk_cell("relu", "he_normal", "adam", 0)
DROPOUT = CELL.model_copy(update={"dropout": 0.1})  # dropout draws from the cell's seed too
METRIC_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_seconds")
TRACKING_ENVIRONMENT = ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_STAGE", "DVC_EXP_NAME")


@pytest.fixture(autouse=True)
def no_tracking_environment(monkeypatch):
    """The store is the project's mlflow.db unless a test says otherwise."""
    for name in TRACKING_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


def make_project(
    root: Path,
    params_dict: dict[str, Any],
    n_train: int = 600,
    n_validation: int = 200,
    cell: Cell = CELL,
    hidden_units: list[int] = TINY_UNITS,
    **train: Any,
) -> Params:
    """A project at `root`: the real params.yaml, shrunk to the one-cell grid of `cell` (its
    architecture has `hidden_units`), and synthetic data/prepared splits. `mlpstudy train --root
    <root>` trains that grid (with params.yaml's `parallel_cells` unless `train` sets it)."""
    settings = {"epochs": 3, "steps_per_execution": 4}
    grid = {axis: [getattr(cell, axis)] for axis in AXES}
    params_dict["train"].update({**settings, **grid, **train})
    params_dict["train"]["architectures"][cell.architecture] = hidden_units
    params = Params.model_validate(params_dict)
    (root / "data" / "prepared").mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params_dict, sort_keys=False))
    for split, count, seed in (("train", n_train, 0), ("validation", n_validation, 1)):
        images, labels = make_digits(count, seed)
        np.savez(root / "data" / "prepared" / f"{split}.npz", images=images, labels=labels)
    return params


def read_history(paths: Paths, key: str = CELL.key) -> list[dict[str, str]]:
    with (paths.train_reports(key) / "history.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def train_command(root: Path) -> list[str]:
    """`mlpstudy train` on the grid of root's params.yaml (make_project: one cell)."""
    return [str(BIN / "mlpstudy"), "train", "--root", str(root)]


def model_weights(paths: Paths, key: str = CELL.key) -> list[np.ndarray]:
    return keras.models.load_model(paths.model_file(key)).get_weights()


def without_timing(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in rows]


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in TRACKING_ENVIRONMENT}


# ------------------------------------------------------------------------------ configuration
def test_mlflow_params_flatten_hyperparameters_under_their_factor(real_params_dict):
    params = Params.model_validate(real_params_dict)
    axes = {"architecture": "deep", "batch_size": 32, "dropout": 0.25}
    cell = Cell(
        activation="leaky_relu", initializer="random_normal", optimizer="sgd", seed=2, **axes
    )

    flat = flat_params(effective_config(params, cell))

    assert flat["activation"] == "leaky_relu" and flat["seed"] == "2"
    assert (flat["architecture"], flat["batch_size"], flat["dropout"]) == ("deep", "32", "0.25")
    assert flat["activation.type"] == "leaky_relu" and flat["optimizer.type"] == "sgd"
    assert flat["activation.negative_slope"] == "0.2"
    assert flat["initializer.stddev"] == "0.05"
    assert flat["optimizer.momentum"] == "0.9" and flat["optimizer.nesterov"] == "false"
    assert flat["hidden_units"] == str(real_params_dict["train"]["architectures"]["deep"])
    assert flat["diagnostics.probe_size"] == "256"
    assert "optimizer.beta_1" not in flat  # adam's entry is not this cell's


def test_config_digest_changes_exactly_with_what_the_cell_reads(real_params_dict):
    data = {"train": "a" * 64, "validation": "b" * 64}
    cell = Cell(
        activation="relu", initializer="he_normal", optimizer="sgd", architecture="base",
        batch_size=256, dropout=0.0, seed=0,
    )  # fmt: skip

    def digest(edit=lambda p: None, data_digests=data) -> str:
        params_dict = json.loads(json.dumps(real_params_dict))
        edit(params_dict)
        params = Params.model_validate(params_dict)
        return config_digest(effective_config(params, cell), data_digests)

    base = digest()
    assert digest() == base
    assert digest(lambda p: p["train"]["optimizers"]["adam"].update(learning_rate=0.5)) == base
    assert digest(lambda p: p["train"].update(seed=[0, 7])) == base  # the grid is not the cell
    assert digest(lambda p: p["train"].update(batch_size=[256, 512], dropout=[0.0, 0.5])) == base
    assert digest(lambda p: p["train"]["architectures"].update(wide=[8])) == base
    assert digest(lambda p: p["train"]["architectures"].update(base=[8])) != base
    assert digest(lambda p: p["train"]["optimizers"]["sgd"].update(momentum=0.5)) != base
    assert digest(lambda p: p["train"].update(epochs=11)) != base
    assert digest(lambda p: p["study"].update(name="other")) != base
    assert digest(data_digests={**data, "train": "c" * 64}) != base


def test_best_epoch_has_the_lowest_validation_loss_first_on_ties_never_nan():
    rows = [
        {"epoch": 1, "val_loss": math.nan, "val_accuracy": 0.1, "epoch_seconds": 1.0},
        {"epoch": 2, "val_loss": 0.5, "val_accuracy": 0.8, "epoch_seconds": 1.0},
        {"epoch": 3, "val_loss": 0.5, "val_accuracy": 0.9, "epoch_seconds": 1.0},
        {"epoch": 4, "val_loss": 0.7, "val_accuracy": 0.95, "epoch_seconds": 1.5},
    ]

    metrics = summarize(rows, stopped_early=True, parameter_count=10, device="CPU:0")

    assert metrics == {
        "best_val_accuracy": 0.8,
        "best_val_loss": 0.5,
        "best_epoch": 2,
        "epochs_run": 4,
        "stopped_early": True,
        "parameter_count": 10,
        "train_seconds": 4.5,
        "device": "CPU:0",
    }


def test_history_csv_has_the_documented_columns_then_extras():
    rows = [{"epoch": 1, "loss": 0.5, "accuracy": 0.8, "val_loss": 0.4, "val_accuracy": 0.9}]
    rows[0].update(epoch_seconds=1.25, extra=3.0)

    lines = history_csv(rows).splitlines()

    assert lines == [",".join([*HISTORY_COLUMNS, "extra"]), "1,0.5,0.8,0.4,0.9,1.25,3"]


# ----------------------------------------------------------------------------- checkpoints
def write_commit(folder: Path, epoch: int, weights: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / checkpoint.WEIGHTS_FILE).write_bytes(weights)
    np.savez(folder / checkpoint.BEST_WEIGHTS_FILE, w0=np.full(2, epoch))
    state = {"rows": [{"epoch": e} for e in range(1, epoch + 1)]}
    (folder / checkpoint.METADATA_FILE).write_text(json.dumps({"epoch": epoch, "state": state}))


def test_a_commit_cut_short_after_its_metadata_is_finished(tmp_path):
    write_commit(tmp_path, 1, b"epoch 1")
    write_commit(tmp_path / checkpoint.STAGING, 2, b"epoch 2")
    (tmp_path / checkpoint.STAGING / checkpoint.WEIGHTS_FILE).replace(
        tmp_path / checkpoint.WEIGHTS_FILE
    )

    saved = checkpoint.load(tmp_path)

    assert saved is not None
    assert saved.epochs_completed == 2
    assert len(saved.state["rows"]) == 2
    assert saved.best_weights is not None and saved.best_weights[0].tolist() == [2, 2]
    assert (tmp_path / checkpoint.WEIGHTS_FILE).read_bytes() == b"epoch 2"
    assert not (tmp_path / checkpoint.STAGING).exists()


def test_a_commit_cut_short_before_its_metadata_is_discarded(tmp_path):
    write_commit(tmp_path, 1, b"epoch 1")
    write_commit(tmp_path / checkpoint.STAGING, 2, b"epoch 2")
    (tmp_path / checkpoint.STAGING / checkpoint.METADATA_FILE).unlink()

    saved = checkpoint.load(tmp_path)

    assert saved is not None and saved.epochs_completed == 1
    assert (tmp_path / checkpoint.WEIGHTS_FILE).read_bytes() == b"epoch 1"
    assert not (tmp_path / checkpoint.STAGING).exists()
    assert checkpoint.load(tmp_path / "empty") is None


def test_early_stopping_state_survives_a_restart():
    """Restored, it stops where an uninterrupted run stops and restores the same best weights."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, name="dense")])
    losses = [1.0, 0.5, 0.6, 0.7, 0.8]

    def epochs(callback: ResumableEarlyStopping, numbers: range) -> int | None:
        callback.set_model(model)
        model.stop_training = False
        callback.on_train_begin()
        for epoch in numbers:
            model.get_layer("dense").set_weights([np.full((1, 1), float(epoch)), np.zeros(1)])
            callback.on_epoch_end(epoch, {"val_loss": losses[epoch]})
            if model.stop_training:
                callback.on_train_end()
                return epoch
        return None

    uninterrupted = epochs(ResumableEarlyStopping(patience=2), range(5))
    before = ResumableEarlyStopping(patience=2)
    assert epochs(before, range(3)) is None
    restored = ResumableEarlyStopping(2, before.state(), before.best_weights)
    fresh = ResumableEarlyStopping(patience=2)

    assert uninterrupted == 3
    assert epochs(restored, range(3, 5)) == 3
    assert model.get_layer("dense").get_weights()[0].item() == 1.0  # the best epoch's weights
    assert epochs(fresh, range(3, 5)) is None  # without its state it would train on


# ---------------------------------------------------------------------------------- the plan
DATA = {"train": "a" * 64, "validation": "b" * 64}
OTHER = shrunk_cell("leaky_relu", "he_normal", "adam", 0)


def two_cell_params(real_params_dict: dict[str, Any], **train: Any) -> Params:
    """The real params with the grid of CELL and OTHER (they differ in the activation)."""
    grid = {axis: [getattr(CELL, axis)] for axis in AXES}
    grid["activation"] = [CELL.activation, OTHER.activation]
    real_params_dict["train"].update({**grid, **train})
    real_params_dict["train"]["architectures"][CELL.architecture] = TINY_UNITS
    return Params.model_validate(real_params_dict)


def finish(paths: Paths, planned: grid_plan.PlannedCell) -> None:
    """Write the files a trained cell leaves, its run.json carrying `planned`'s digest."""
    key = planned.cell.key
    paths.model_dir(key).mkdir(parents=True, exist_ok=True)
    paths.model_file(key).write_bytes(b"a model")
    paths.run_record(key).write_text(json.dumps({"config_digest": planned.digest}))
    paths.train_reports(key).mkdir(parents=True, exist_ok=True)
    (paths.train_reports(key) / outputs.METRICS_FILE).write_text("{}")
    (paths.train_reports(key) / outputs.HISTORY_FILE).write_text("epoch\n")


def reasons(params: Params, paths: Paths, data: dict[str, str] = DATA) -> dict[str, str | None]:
    return {
        planned.cell.key: planned.reason for planned in grid_plan.plan(params, paths, data).cells
    }


def test_the_plan_trains_the_new_cells_and_skips_those_whose_result_carries_their_digest(
    tmp_path, real_params_dict
):
    params, paths = two_cell_params(real_params_dict), Paths.at(tmp_path)
    fresh = grid_plan.plan(params, paths, DATA)
    assert [planned.cell.key for planned in fresh.cells] == [CELL.key, OTHER.key]  # grid order
    assert [planned.describe() for planned in fresh.pending] == [
        f"{CELL.key} (new)",
        f"{OTHER.key} (new)",
    ]
    assert fresh.summary() == "train: 2 of 2 cells to train (0 up to date)"

    finish(paths, fresh.cells[0])
    half = grid_plan.plan(params, paths, DATA)
    assert reasons(params, paths) == {CELL.key: None, OTHER.key: grid_plan.NEW}
    assert half.summary() == "train: 1 of 2 cells to train (1 up to date)"
    assert [planned.digest for planned in half.cells] == [planned.digest for planned in fresh.cells]

    finish(paths, half.cells[1])
    done = grid_plan.plan(params, paths, DATA)
    assert done.pending == []
    assert done.summary() == "train: all 2 cells of the grid are up to date; nothing to train"
    # A setting of a variant no cell uses, and a speed-only setting, re-train nothing.
    unused = json.loads(json.dumps(real_params_dict))
    unused["train"]["optimizers"]["sgd"]["learning_rate"] = 0.5
    assert set(reasons(two_cell_params(unused, parallel_cells=7), paths).values()) == {None}


def test_a_cell_whose_configuration_data_or_training_code_changed_is_planned_as_changed(
    tmp_path, real_params_dict, monkeypatch
):
    params, paths = two_cell_params(real_params_dict), Paths.at(tmp_path)
    for planned in grid_plan.plan(params, paths, DATA).cells:
        finish(paths, planned)
    changed = grid_plan.CHANGED

    def edited(edit) -> Params:
        copy = json.loads(json.dumps(real_params_dict))
        edit(copy["train"])
        return Params.model_validate(copy)

    slope = edited(lambda train: train["activations"]["leaky_relu"].update(negative_slope=0.1))
    assert reasons(slope, paths) == {CELL.key: None, OTHER.key: changed}  # only its cells
    assert reasons(edited(lambda train: train.update(epochs=2)), paths) == {
        CELL.key: changed,
        OTHER.key: changed,
    }
    assert reasons(params, paths, {**DATA, "validation": "c" * 64}) == {
        CELL.key: changed,
        OTHER.key: changed,
    }
    with monkeypatch.context() as patch:
        patch.setattr(grid_plan, "stage_digest", lambda stage: f"edited {stage} code")
        assert reasons(params, paths) == {CELL.key: changed, OTHER.key: changed}
    assert set(reasons(params, paths).values()) == {None}
    # One cell's record of another digest: only that cell trains again.
    paths.run_record(OTHER.key).write_text(json.dumps({"config_digest": "0" * 64}))
    assert reasons(params, paths) == {CELL.key: None, OTHER.key: changed}
    # A record that cannot be read is no record: the cell is new.
    paths.run_record(OTHER.key).write_text("{not json")
    assert reasons(params, paths) == {CELL.key: None, OTHER.key: grid_plan.NEW}


def test_a_second_attempt_at_a_cell_waits_until_the_first_one_ends(tmp_path) -> None:
    """Dask may retry a cell while a worker it gave up on still trains it: the retry must not
    write the checkpoint beside it (two writers), but wait and continue what the first left."""
    import threading

    folder = tmp_path / "checkpoints" / "digest"
    order: list[str] = []
    second_tried = threading.Event()

    def second_attempt() -> None:
        second_tried.set()
        with checkpoint.exclusive(folder):
            order.append("second")
            folder.mkdir()  # it committed an epoch

    with checkpoint.exclusive(folder):
        waiting = threading.Thread(target=second_attempt)
        waiting.start()
        second_tried.wait(10)
        waiting.join(0.5)
        assert waiting.is_alive()  # blocked while the first attempt holds the cell
        order.append("first")
    waiting.join(10)
    assert order == ["first", "second"]
    lock = folder.with_name("digest.lock")
    assert lock.is_file()  # kept while a checkpoint is there to continue
    with checkpoint.exclusive(folder):
        checkpoint.discard(folder)  # starting over keeps the attempt's lock
        assert lock.is_file() and not folder.exists()
    assert list(folder.parent.iterdir()) == []  # no checkpoint: no lock file left either
    folder.mkdir()
    lock.touch()
    checkpoint.remove(folder)  # the stage, once the cell's outputs are installed
    assert list(folder.parent.iterdir()) == []


def test_a_cell_missing_an_output_or_holding_a_checkpoint_is_planned_with_its_reason(
    tmp_path, real_params_dict
):
    params, paths = two_cell_params(real_params_dict), Paths.at(tmp_path)
    first, second = grid_plan.plan(params, paths, DATA).cells
    for planned in (first, second):
        finish(paths, planned)

    (paths.train_reports(CELL.key) / outputs.HISTORY_FILE).unlink()
    paths.model_file(OTHER.key).unlink()
    assert reasons(params, paths) == {
        CELL.key: grid_plan.INCOMPLETE,
        OTHER.key: grid_plan.INCOMPLETE,
    }
    assert grid_plan.plan(params, paths, DATA).pending[0].describe() == (
        f"{CELL.key} (outputs missing)"
    )

    # A killed run left two committed epochs of CELL (of its current digest): it continues them.
    write_commit(paths.checkpoints / first.digest, 2, b"epoch 2")
    write_commit(paths.checkpoints / ("0" * 64), 5, b"another configuration's epochs")
    planned = grid_plan.plan(params, paths, DATA)
    interrupted = planned.cells[0]
    assert (interrupted.reason, interrupted.epochs_done) == (grid_plan.INTERRUPTED, 2)
    assert interrupted.describe() == f"{CELL.key} (interrupted: continues after epoch 2)"
    assert planned.cells[1].reason == grid_plan.INCOMPLETE  # another digest's checkpoint: not its
    # A commit cut short before its metadata is no epoch: nothing to continue.
    checkpoint.remove(paths.checkpoints / first.digest)
    (paths.checkpoints / first.digest / checkpoint.STAGING).mkdir(parents=True)
    assert reasons(params, paths)[CELL.key] == grid_plan.INCOMPLETE


# ------------------------------------------------------------------------- installing a cell
def test_install_replaces_each_cell_folder_as_a_whole_and_leaves_no_siblings(tmp_path):
    paths = Paths.at(tmp_path)
    key = CELL.key
    folders = (paths.model_dir(key), paths.train_reports(key))
    for folder in folders:
        folder.mkdir(parents=True)
        (folder / "stale.txt").write_text("from an earlier training")
    paths.model_dir("other").mkdir()
    (paths.model_dir("other") / "model.keras").write_bytes(b"another cell")
    # What an install cut short by a kill left beside the folder.
    (paths.models / f".{key}.incoming").mkdir()
    (paths.models / f".{key}.incoming" / "half.bin").write_bytes(b"half")
    (paths.train_reports_dir / f".{key}.replaced").mkdir()
    files = {
        f"data/models/{key}/model.keras": b"model",
        f"data/models/{key}/run.json": b"{}",
        f"reports/train/{key}/metrics.json": b"{}",
        f"reports/train/{key}/nested/history.csv": b"epoch\n",
    }

    outputs.install(paths.root, folders, files)

    def tree(folder: Path) -> dict[str, bytes]:
        return {
            p.relative_to(folder).as_posix(): p.read_bytes()
            for p in folder.rglob("*")
            if p.is_file()
        }

    assert tree(paths.model_dir(key)) == {"model.keras": b"model", "run.json": b"{}"}
    assert tree(paths.train_reports(key)) == {
        "metrics.json": b"{}",
        "nested/history.csv": b"epoch\n",
    }
    assert sorted(p.name for p in paths.models.iterdir()) == sorted([key, "other"])
    assert [p.name for p in paths.train_reports_dir.iterdir()] == [key]
    assert tree(paths.model_dir("other")) == {"model.keras": b"another cell"}


def test_remove_leftovers_drops_only_what_an_install_cut_short_left(tmp_path):
    models = tmp_path / "models"
    for name in ("cell-a", ".cell-a.incoming", ".cell-b.replaced", ".gitignore-like"):
        (models / name).mkdir(parents=True)

    outputs.remove_leftovers(models)
    outputs.remove_leftovers(tmp_path / "absent")  # nothing there: nothing to do

    assert sorted(p.name for p in models.iterdir()) == [".gitignore-like", "cell-a"]


# -------------------------------------------------------------------------------- progress
def test_epochs_are_published_by_the_worker_and_printed_by_the_stage(real_params_dict):
    params = Params.model_validate(real_params_dict)
    limit = params.train.epochs
    job = SimpleNamespace(key=CELL.key, params=params)

    def lines(rows: list[dict[str, float]], stopped: bool, epochs: int = 0) -> list[str]:
        published: list[dict[str, Any]] = []  # what the engine sends to the stage as events
        events = progress.EpochEvents(published.append, job)
        events.resume(rows, stopped)
        events.on_train_begin()
        for epoch in range(epochs):
            events.on_epoch_begin(epoch)
            # In the order Keras 3 hands them over (the line keeps it).
            logs = {"accuracy": 0.8, "loss": 0.5, "val_accuracy": 0.9125, "val_loss": 0.25}
            events.on_epoch_end(epoch, logs)
        return [progress.epoch_line(message) for message in published]

    assert lines([], False) == []  # a fresh start says nothing before its first epoch
    (line,) = lines([], False, epochs=1)
    assert re.fullmatch(
        rf"train {re.escape(CELL.key)} epoch 1/{limit}: loss 0\.5000 val_accuracy 0\.9125 "
        r"val_loss 0\.2500 \(\d+\.\d\d s\)",
        line,
    ), line
    one = [{"epoch": 1, "val_accuracy": 0.91}]
    assert lines(one, False) == [
        f"train {CELL.key}: 1 epoch trained before; training on, up to {limit}"
    ]
    twelve = [{"epoch": e, "val_accuracy": 0.9} for e in range(1, 13)]
    assert lines(twelve, True) == [f"train {CELL.key}: 12 epochs trained before; stopped early"]


def test_the_grid_progress_counts_the_cells_and_estimates_the_time_left():
    grid = progress.GridProgress(total=3, parallel=2)

    def done(key: str, seconds: float, epochs: int) -> str:
        metrics = {"epochs_run": epochs, "best_val_accuracy": 0.97712}
        return grid.cell_line(CellResult(key, {}, metrics, seconds))

    # Left: the cells still to train x the mean time of those done / the cells trained at once.
    assert done("a", 40, 7) == (
        "train [1/3] a: 7 epochs, best val_accuracy 0.9771 (40 s) | ~40 s left"
    )
    assert done("b", 200, 1) == (
        "train [2/3] b: 1 epoch, best val_accuracy 0.9771 (3.3 min) | ~60 s left"
    )
    assert done("c", 9000, 2).endswith("(2.5 h) | grid done")


# ----------------------------------------------------------------------- training, in-process
@pytest.mark.slow
def test_train_writes_its_outputs_and_one_fully_tracked_run(
    tmp_path, real_params_dict, monkeypatch, capsys
):
    root = tmp_path / "project"
    params = make_project(root, real_params_dict)
    paths = Paths.at(root)
    monkeypatch.setenv("DVC_EXP_NAME", "exp-test")

    result = train_stage.run(only(params, CELL), paths)

    assert result == {"trained": [CELL.key], "up_to_date": []}
    printed = capsys.readouterr().out.splitlines()
    assert printed[:3] == [
        "train: 1 of 1 cells to train (0 up to date)",
        f"  {CELL.key} (new)",
        "train: on 1 worker (a LocalCluster in this process)",
    ]
    epoch_lines = [line for line in printed if line.startswith(f"train {CELL.key} epoch ")]
    assert [line.split()[3] for line in epoch_lines] == ["1/3:", "2/3:", "3/3:"]
    assert re.fullmatch(
        rf"train \[1/1\] {re.escape(CELL.key)}: 3 epochs, best val_accuracy \d\.\d{{4}} "
        r"\(\d+ s\) \| grid done",
        printed[-1],
    ), printed
    metrics = json.loads((paths.train_reports(CELL.key) / "metrics.json").read_text())

    # DVC outputs
    assert metrics["epochs_run"] == 3 and metrics["device"] == "CPU:0"
    assert metrics["best_val_accuracy"] > 0.9  # the synthetic digits are learnable
    assert f"{metrics['best_val_accuracy']:.4f}" in printed[-1]
    history = read_history(paths)
    assert list(history[0]) == list(HISTORY_COLUMNS)
    assert [row["epoch"] for row in history] == ["1", "2", "3"]
    assert (paths.train_reports(CELL.key) / "diagnostics.csv").is_file()
    model = keras.models.load_model(paths.model_file(CELL.key))
    assert model.count_params() == metrics["parameter_count"]
    record = json.loads(paths.run_record(CELL.key).read_text())
    assert record["cell"]["key"] == CELL.key
    assert record["config"]["hidden_units"] == [16]  # the effective config, defaults included
    assert record["config"]["hyperparameters"]["optimizer"] == {
        "type": "adam", "learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999
    }  # fmt: skip
    (planned,) = grid_plan.plan(params, paths, data_digests(paths)).cells
    assert record["config_digest"] == planned.digest and not planned.pending
    assert list(paths.checkpoints.glob("*")) == []  # installed: nothing left to resume
    assert [p.name for p in paths.models.iterdir()] == [CELL.key]  # no .incoming/.replaced

    # MLflow: one finished run, named after the cell, in the study's experiment at the root
    client = MlflowClient(f"sqlite:///{paths.mlflow_db}")
    experiment = client.get_experiment_by_name(params.study.name)
    assert record["experiment_id"] == experiment.experiment_id
    runs = client.search_runs([experiment.experiment_id], "tags.kind = 'cell'")
    assert [run.info.run_id for run in runs] == [record["run_id"]]
    run = runs[0]
    # ... nested under its grid revision's parent run, with the factors as tags (issue 12)
    (parent,) = client.search_runs([experiment.experiment_id], "tags.kind = 'grid'")
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.tags["grid_revision"] == parent.data.tags["grid_revision"]
    assert (run.data.tags["activation"], run.data.tags["seed"]) == ("relu", "0")
    factors = ("architecture", "batch_size", "dropout")  # every axis is a tag (Group by)
    assert [run.data.tags[factor] for factor in factors] == ["tiny", "64", "0.0"]
    assert run.data.tags["mlflow.source.name"] == f"mlpstudy train (cell {CELL.key})"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert (run.info.run_name, run.info.status) == (CELL.key, "FINISHED")
    assert run.data.params["optimizer.learning_rate"] == "0.001"
    assert run.data.params["hidden_units"] == "[16]"
    assert run.data.params["epochs"] == "3"
    tags = run.data.tags
    assert tags["study"] == params.study.name and tags["cell"] == CELL.key
    assert tags["dvc_stage"] == "train"
    assert tags["dvc_exp"] == "exp-test"
    assert tags["git_commit"] == "unknown"
    assert re.fullmatch("[0-9a-f]{64}", tags["data.train_digest"])
    assert tags["config_digest"] == record["config_digest"]
    assert tags["tensorflow_version"] and tags["keras_version"] == keras.__version__
    assert tags["device"] == "CPU:0"
    for key in METRIC_KEYS:
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2, 3]
    logged_val_loss = [m.value for m in client.get_metric_history(run.info.run_id, "val_loss")]
    assert logged_val_loss == pytest.approx([float(row["val_loss"]) for row in history])
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(metrics["best_val_accuracy"])
    assert split_inputs(run) == {
        ("mnist-train", "training", tags["data.train_digest"][:32]),
        ("mnist-validation", "validation", tags["data.validation_digest"][:32]),
    }
    # ... which the stage recorded on the parent first, so that cells only link them
    assert split_inputs(client.get_run(parent.info.run_id)) == split_inputs(run)
    assert (paths.mlflow_artifacts / run.info.run_id / "artifacts" / "train").is_dir()

    # The logged model loads back and predicts what the DVC output predicts
    info = mlflow.models.get_model_info(record["model_uri"])
    spec = info.signature.inputs.inputs[0]
    assert (spec.type, spec.shape) == (np.dtype(np.uint8), (-1, 28, 28))
    logged = mlflow.keras.load_model(record["model_uri"])
    images, _ = make_digits(8, 5)
    np.testing.assert_array_equal(np.array(logged(images)), np.array(model(images)))

    # Run again: the cell is up to date, so nothing trains and MLflow gets no new run.
    model_bytes = paths.model_file(CELL.key).read_bytes()
    assert train_stage.run(only(params, CELL), paths) == {"trained": [], "up_to_date": [CELL.key]}
    assert capsys.readouterr().out == (
        "train: all 1 cells of the grid are up to date; nothing to train\n"
    )
    assert paths.model_file(CELL.key).read_bytes() == model_bytes
    assert len(client.search_runs([experiment.experiment_id])) == 2  # the cell's and its parent


def data_digests(paths: Paths) -> dict[str, str]:
    """The digests of the prepared splits the stage trains on."""
    return {name: array_digest(*load_split(paths, name)) for name in ("train", "validation")}


@pytest.mark.slow
def test_renamed_variants_of_every_kind_train_with_diagnostics_on(tmp_path, real_params_dict):
    """A variant named apart from its type (issue 20: `lrelu_02: {type: leaky_relu}` crashed the
    diagnostics, which took the name for the type) trains end to end, measured as its type."""
    real_params_dict["train"]["activations"]["lrelu_02"] = {
        "type": "leaky_relu",
        "negative_slope": 0.2,
    }
    cell = shrunk_cell("lrelu_02", "normal_tiny", "sgd_plain", 0)
    root = tmp_path / "project"
    params = make_project(root, real_params_dict, cell=cell, epochs=2)
    assert params.train.diagnostics.enabled  # the default
    paths = Paths.at(root)

    metrics = train_one(params, cell, paths)

    assert metrics["epochs_run"] == 2
    record = json.loads(paths.run_record(cell.key).read_text())
    types = {factor: record["config"]["hyperparameters"][factor]["type"] for factor in
             ("activation", "initializer", "optimizer")}  # fmt: skip
    assert types == {"activation": "leaky_relu", "initializer": "random_normal", "optimizer": "sgd"}
    with (paths.train_reports(cell.key) / "diagnostics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["epoch"] for row in rows} == {"0", "1", "2"}
    # Measured as the ReLU family: a dead fraction, no saturated fraction.
    assert all(row["dead_fraction"] != "" and row["saturated_fraction"] == "" for row in rows)


@pytest.mark.slow
def test_early_stopping_stops_and_keeps_the_best_epochs_weights(tmp_path, real_params_dict):
    root = tmp_path / "project"
    params = make_project(root, real_params_dict, epochs=8, early_stopping_patience=1)
    # Validation labels that contradict the images: the better the model learns, the worse its
    # validation loss, so training stops early and the first epoch is the best.
    validation = root / "data" / "prepared" / "validation.npz"
    with np.load(validation) as archive:
        images, labels = archive["images"], archive["labels"]
    np.savez(validation, images=images, labels=(labels + 5) % 10)
    paths = Paths.at(root)

    metrics = train_one(params, CELL, paths)

    assert metrics["stopped_early"] is True
    assert metrics["epochs_run"] < 8
    model = keras.models.load_model(paths.model_file(CELL.key))
    loss = model.evaluate(images, (labels + 5) % 10, batch_size=64, verbose=0, return_dict=True)
    assert loss["loss"] == pytest.approx(metrics["best_val_loss"], rel=1e-4)


@pytest.mark.slow
def test_bad_input_stops_before_the_store_or_any_output(tmp_path, real_params_dict):
    import tensorflow as tf

    root = tmp_path / "project"
    params = make_project(root, real_params_dict)
    paths = Paths.at(root)
    validation = root / "data" / "prepared" / "validation.npz"
    kept = validation.read_bytes()
    validation.unlink()

    with pytest.raises(ConfigError, match=r"validation\.npz"):
        train_one(params, CELL, paths)
    assert not paths.mlflow_db.exists()
    assert not paths.models.exists() and not paths.checkpoints.exists()
    if tf.config.list_physical_devices("GPU"):
        return
    # The device is chosen where the cell trains, on its worker: the cell fails, named, before
    # a run of its own exists, and nothing is installed.
    validation.write_bytes(kept)
    with pytest.raises(
        ConfigError,  # bad input: the stage exits 2
        match=rf"train: 1 of 1 cells failed \({re.escape(CELL.key)}: train\.device: "
        r"'gpu' but TensorFlow sees no GPU",
    ):
        train_one(params, CELL, paths, device="gpu")
    assert not paths.models.exists() and not paths.train_reports_dir.exists()
    assert list(paths.checkpoints.glob("*")) == []
    client = MlflowClient(f"sqlite:///{paths.mlflow_db}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments, "tags.kind = 'cell'") == []


CPU_THREADS_SCRIPT = """
import tensorflow as tf
from stages.lib.core.config import ConfigError
from stages.lib.training.device import set_cpu_threads
set_cpu_threads(1)
tf.constant(1.0) + 1.0  # TensorFlow's runtime starts here
print(tf.config.threading.get_intra_op_parallelism_threads())
set_cpu_threads(1)  # what the process already runs with: nothing to do
try:
    set_cpu_threads(2)
except ConfigError as error:
    print(error)
"""


def test_cpu_threads_take_effect_before_tensorflow_starts_and_are_refused_after(tmp_path):
    result = processes.run(
        [sys.executable, "-c", CPU_THREADS_SCRIPT], cwd=tmp_path, env=clean_environment()
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        "1",
        "train.cpu_threads: 2 cannot take effect: TensorFlow already runs with 1 threads per op "
        "in this process; start a new process (allowed: any integer >= 0 before TensorFlow "
        "starts)",
    ]


@pytest.mark.slow
def test_a_crash_after_training_finishes_the_cell_without_training_or_logging_twice(
    tmp_path, real_params_dict, monkeypatch
):
    """The worker trained every epoch and logged the model, then failed writing the model file:
    the next run takes the finished epochs from the checkpoint and trains none again."""
    from stages.lib.training import cell_training

    root = tmp_path / "project"
    params = make_project(root, real_params_dict)
    paths = Paths.at(root)

    def crash(*args: Any) -> None:
        raise RuntimeError("killed while writing the outputs")

    monkeypatch.setattr(cell_training, "save_model", crash)
    with pytest.raises(StageError, match=rf"{re.escape(CELL.key)}: RuntimeError: killed while"):
        train_one(params, CELL, paths)
    assert not paths.models.exists() and not paths.train_reports_dir.exists()  # none installed
    (folder,) = [entry for entry in paths.checkpoints.iterdir() if entry.is_dir()]  # not its lock
    saved = checkpoint.load(folder)
    assert saved is not None and saved.epochs_completed == 3
    (planned,) = grid_plan.plan(params, paths, data_digests(paths)).cells
    assert planned.describe() == f"{CELL.key} (interrupted: continues after epoch 3)"
    monkeypatch.setattr(cell_training, "save_model", outputs.save_model)
    epochs_trained = []

    class CountEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            epochs_trained.append(epoch)

    # The diagnostics are the extra callbacks a cell's training adds: count epochs in their place.
    monkeypatch.setattr(cell_training, "diagnostics_callbacks", lambda context: [CountEpochs()])

    metrics = train_one(params, CELL, paths)

    assert epochs_trained == []
    assert metrics["epochs_run"] == 3
    assert [row["epoch"] for row in read_history(paths)] == ["1", "2", "3"]
    assert not folder.exists()
    record = json.loads(paths.run_record(CELL.key).read_text())
    client = MlflowClient(f"sqlite:///{paths.mlflow_db}")
    runs = client.search_runs([record["experiment_id"]], "tags.kind = 'cell'")
    assert [(run.info.run_id, run.info.status) for run in runs] == [(record["run_id"], "FINISHED")]
    for key in METRIC_KEYS:
        assert [m.step for m in client.get_metric_history(record["run_id"], key)] == [1, 2, 3]
    assert len(client.get_metric_history(record["run_id"], "best_val_loss")) == 1
    mlflow.set_tracking_uri(f"sqlite:///{paths.mlflow_db}")
    models = mlflow.search_logged_models(
        experiment_ids=[record["experiment_id"]], output_format="list"
    )
    assert [model.model_id for model in models] == [record["model_uri"].removeprefix("models:/")]


@pytest.mark.slow
def test_mirrored_strategy_trains_and_reports_its_replicas(tmp_path, real_params_dict):
    import tensorflow as tf

    root = tmp_path / "project"
    params = make_project(root, real_params_dict, epochs=1, distribute="mirrored")

    metrics = train_one(params, CELL, Paths.at(root))

    replicas = max(1, len(tf.config.list_logical_devices("GPU")))
    assert metrics["device"] == f"mirrored:{replicas}"
    assert metrics["epochs_run"] == 1


# ------------------------------------------------------------------ training, fresh processes
@pytest.mark.slow
def test_two_fresh_processes_train_bitwise_identical_models(tmp_path, real_params_dict):
    """One trains the cell on a worker thread of its own process (parallel_cells: 1), the other
    on a worker process of a local cluster (2): a speed-only setting, the very same numbers."""
    roots = {1: tmp_path / "thread", 2: tmp_path / "worker-process"}
    for parallel, root in roots.items():
        params = json.loads(json.dumps(real_params_dict))
        make_project(root, params, n_train=1000, cell=DROPOUT, parallel_cells=parallel)
        result = processes.run(train_command(root), env=clean_environment(), timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        where = "in this process" if parallel == 1 else "on 127.0.0.1"
        assert f"train: on {parallel} worker{'s' * (parallel > 1)} (a LocalCluster {where})" in (
            result.stdout
        )

    first, second = (Paths.at(root) for root in roots.values())
    for a, b in zip(
        model_weights(first, DROPOUT.key), model_weights(second, DROPOUT.key), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert without_timing(read_history(first, DROPOUT.key)) == without_timing(
        read_history(second, DROPOUT.key)
    )


@pytest.mark.slow
def test_a_killed_training_resumes_at_its_last_epoch_in_the_same_run(tmp_path, real_params_dict):
    """`mlpstudy train` SIGKILLed mid-cell; run again, it continues the cell's checkpoint in the
    same MLflow run, and ends with what an uninterrupted run trains, bit for bit."""
    epochs, n_train, batch_size = 8, 6000, 16
    cell = CELL.model_copy(update={"batch_size": batch_size})
    settings = {
        "n_train": n_train,
        "n_validation": 500,
        "cell": cell,
        "hidden_units": [64],
        "epochs": epochs,
        "steps_per_execution": 1,
        "early_stopping_patience": 100,  # on, so its state is checkpointed too, but never stopping
        "parallel_cells": 1,  # the cell trains in the killed process itself
    }
    root, reference = tmp_path / "project", tmp_path / "uninterrupted"
    make_project(root, json.loads(json.dumps(real_params_dict)), **settings)
    make_project(reference, json.loads(json.dumps(real_params_dict)), **settings)
    paths = Paths.at(root)
    first = processes.spawn(
        train_command(root), log=tmp_path / "first.log", env=clean_environment()
    )
    try:
        deadline = time.monotonic() + 300
        while not list(paths.checkpoints.glob(f"*/{checkpoint.METADATA_FILE}")):
            assert first.process.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
    finally:
        first.kill()  # SIGKILL: no cleanup runs
    assert first.process.returncode == -9
    assert not paths.models.exists()  # nothing installed before the cell finished
    (folder,) = [entry for entry in paths.checkpoints.iterdir() if entry.is_dir()]  # not its lock
    saved = checkpoint.load(folder)
    assert saved is not None and 1 <= saved.epochs_completed < epochs
    run_id = checkpoint.read_run_file(folder)["run_id"]
    done = saved.epochs_completed

    second = processes.run(train_command(root), env=clean_environment(), timeout=300)

    assert second.returncode == 0, second.stderr[-3000:]
    lines = second.stdout.splitlines()
    assert f"  {cell.key} (interrupted: continues after epoch {done})" in lines
    assert (
        f"train {cell.key}: {done} epoch{'s' * (done > 1)} trained before; training on, up to "
        f"{epochs}" in lines
    ), second.stdout[:2000]
    announced = re.findall(rf"train {re.escape(cell.key)} epoch (\d+)/{epochs}:", second.stdout)
    assert [int(epoch) for epoch in announced] == list(range(done + 1, epochs + 1))
    history = read_history(paths, cell.key)
    assert [int(row["epoch"]) for row in history] == list(range(1, epochs + 1))
    for row, row_saved in zip(history, saved.state["rows"], strict=False):
        assert float(row["val_loss"]) == row_saved["val_loss"]
    record = json.loads(paths.run_record(cell.key).read_text())
    assert record["run_id"] == run_id
    assert folder.name == record["config_digest"]  # .mlpstudy/checkpoints/<config digest>
    client = MlflowClient(f"sqlite:///{paths.mlflow_db}")
    runs = client.search_runs([record["experiment_id"]], "tags.kind = 'cell'")
    assert [(run.info.run_id, run.info.status) for run in runs] == [(run_id, "FINISHED")]
    for key in METRIC_KEYS:
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert steps == list(range(1, epochs + 1)), key
    model = keras.models.load_model(paths.model_file(cell.key))
    steps_per_epoch = math.ceil(n_train / batch_size)
    assert int(model.optimizer.iterations) == epochs * steps_per_epoch  # optimizer state resumed
    assert not folder.exists()

    # The same cell trained without a kill: the same weights and history, bit for bit.
    uninterrupted = processes.run(train_command(reference), env=clean_environment(), timeout=300)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    for a, b in zip(
        model_weights(paths, cell.key), model_weights(Paths.at(reference), cell.key), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert without_timing(history) == without_timing(read_history(Paths.at(reference), cell.key))
