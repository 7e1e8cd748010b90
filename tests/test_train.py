"""The train stage: real TensorFlow training on tiny synthetic digits, a real sqlite MLflow store.

The slow tests run `mlpstudy train` in fresh processes where the point is the process boundary:
bitwise reproducibility, and resuming after a real SIGKILL.
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

from stages import train as train_stage
from stages.lib.core.cell_config import config_digest, effective_config, flat_params
from stages.lib.core.config import AXES, ConfigError, Params
from stages.lib.core.grid import Cell, make_cell
from stages.lib.core.paths import Paths
from stages.lib.training import progress, resume
from stages.lib.training.callbacks import HISTORY_COLUMNS, ResumableEarlyStopping
from stages.lib.training.train_outputs import history_csv, summarize

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
    architecture has `hidden_units`), and synthetic data/prepared splits."""
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


def train_command(root: Path, cell=CELL) -> list[str]:
    return [
        str(BIN / "mlpstudy"),
        "train",
        *("--activation", cell.activation, "--initializer", cell.initializer),
        *("--optimizer", cell.optimizer, "--architecture", cell.architecture),
        *("--batch-size", str(cell.batch_size), "--dropout", str(cell.dropout)),
        *("--seed", str(cell.seed), "--root", str(root)),
    ]


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in TRACKING_ENVIRONMENT}


# ------------------------------------------------------------------------------ configuration
def test_mlflow_params_flatten_hyperparameters_under_their_factor(real_params_dict):
    params = Params.model_validate(real_params_dict)
    axes = {"architecture": "deep", "batch_size": 32, "dropout": 0.25}
    cell = make_cell(
        params.train, activation="leaky_relu", initializer="random_normal", optimizer="sgd",
        seed=2, **axes
    )  # fmt: skip

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
    (folder / resume.WEIGHTS_FILE).write_bytes(weights)
    np.savez(folder / resume.BEST_WEIGHTS_FILE, w0=np.full(2, epoch))
    state = {"rows": [{"epoch": e} for e in range(1, epoch + 1)]}
    (folder / resume.METADATA_FILE).write_text(json.dumps({"epoch": epoch, "state": state}))


def test_a_commit_cut_short_after_its_metadata_is_finished(tmp_path):
    write_commit(tmp_path, 1, b"epoch 1")
    write_commit(tmp_path / resume.STAGING, 2, b"epoch 2")
    (tmp_path / resume.STAGING / resume.WEIGHTS_FILE).replace(tmp_path / resume.WEIGHTS_FILE)

    checkpoint = resume.load(tmp_path)

    assert checkpoint is not None
    assert checkpoint.epochs_completed == 2
    assert len(checkpoint.state["rows"]) == 2
    assert checkpoint.best_weights is not None and checkpoint.best_weights[0].tolist() == [2, 2]
    assert (tmp_path / resume.WEIGHTS_FILE).read_bytes() == b"epoch 2"
    assert not (tmp_path / resume.STAGING).exists()


def test_a_commit_cut_short_before_its_metadata_is_discarded(tmp_path):
    write_commit(tmp_path, 1, b"epoch 1")
    write_commit(tmp_path / resume.STAGING, 2, b"epoch 2")
    (tmp_path / resume.STAGING / resume.METADATA_FILE).unlink()

    checkpoint = resume.load(tmp_path)

    assert checkpoint is not None and checkpoint.epochs_completed == 1
    assert (tmp_path / resume.WEIGHTS_FILE).read_bytes() == b"epoch 1"
    assert not (tmp_path / resume.STAGING).exists()
    assert resume.load(tmp_path / "empty") is None


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


# ----------------------------------------------------------------------- training, in-process
@pytest.mark.slow
def test_train_writes_its_outputs_and_one_fully_tracked_run(
    tmp_path, real_params_dict, monkeypatch
):
    root = tmp_path / "project"
    params = make_project(root, real_params_dict)
    paths = Paths.at(root)
    monkeypatch.setenv("DVC_STAGE", f"train@{CELL.key}")
    monkeypatch.setenv("DVC_EXP_NAME", "exp-test")

    metrics = train_stage.run(params, CELL, paths)

    # DVC outputs
    assert json.loads((paths.train_reports(CELL.key) / "metrics.json").read_text()) == metrics
    assert metrics["epochs_run"] == 3 and metrics["device"] == "CPU:0"
    assert metrics["best_val_accuracy"] > 0.9  # the synthetic digits are learnable
    history = read_history(paths)
    assert list(history[0]) == list(HISTORY_COLUMNS)
    assert [row["epoch"] for row in history] == ["1", "2", "3"]
    model = keras.models.load_model(paths.model_dir(CELL.key) / "model.keras")
    assert model.count_params() == metrics["parameter_count"]
    record = json.loads((paths.model_dir(CELL.key) / "run.json").read_text())
    assert record["cell"]["key"] == CELL.key
    assert record["config"]["hidden_units"] == [16]  # the effective config, defaults included
    assert record["config"]["hyperparameters"]["optimizer"] == {
        "type": "adam", "learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999
    }  # fmt: skip
    assert list(paths.checkpoints.glob("*")) == []

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
    assert run.data.tags["mlflow.source.name"].startswith("mlpstudy train --activation relu")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert (run.info.run_name, run.info.status) == (CELL.key, "FINISHED")
    assert run.data.params["optimizer.learning_rate"] == "0.001"
    assert run.data.params["hidden_units"] == "[16]"
    assert run.data.params["epochs"] == "3"
    tags = run.data.tags
    assert tags["study"] == params.study.name and tags["cell"] == CELL.key
    assert tags["dvc_stage"] == "train@relu-he_normal-adam-tiny-64-0.0-0"
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
    inputs = {
        (i.dataset.name, i.tags[0].value, i.dataset.digest) for i in run.inputs.dataset_inputs
    }
    assert inputs == {
        ("mnist-train", "training", tags["data.train_digest"][:32]),
        ("mnist-validation", "validation", tags["data.validation_digest"][:32]),
    }
    assert (paths.mlflow_artifacts / run.info.run_id / "artifacts" / "train").is_dir()

    # The logged model loads back and predicts what the DVC output predicts
    info = mlflow.models.get_model_info(record["model_uri"])
    spec = info.signature.inputs.inputs[0]
    assert (spec.type, spec.shape) == (np.dtype(np.uint8), (-1, 28, 28))
    logged = mlflow.keras.load_model(record["model_uri"])
    images, _ = make_digits(8, 5)
    np.testing.assert_array_equal(np.array(logged(images)), np.array(model(images)))


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

    metrics = train_stage.run(params, cell, paths)

    assert metrics["epochs_run"] == 2
    record = json.loads((paths.model_dir(cell.key) / "run.json").read_text())
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

    metrics = train_stage.run(params, CELL, paths)

    assert metrics["stopped_early"] is True
    assert metrics["epochs_run"] < 8
    model = keras.models.load_model(paths.model_dir(CELL.key) / "model.keras")
    loss = model.evaluate(images, (labels + 5) % 10, batch_size=64, verbose=0, return_dict=True)
    assert loss["loss"] == pytest.approx(metrics["best_val_loss"], rel=1e-4)


@pytest.mark.slow
def test_bad_input_stops_before_the_store_or_any_output(tmp_path, real_params_dict):
    import tensorflow as tf

    root = tmp_path / "project"
    params = make_project(root, real_params_dict)
    paths = Paths.at(root)
    (root / "data" / "prepared" / "validation.npz").unlink()

    with pytest.raises(ConfigError, match=r"validation\.npz"):
        train_stage.run(params, CELL, paths)
    if not tf.config.list_physical_devices("GPU"):
        gpu = params.model_copy(update={"train": params.train.model_copy(update={"device": "gpu"})})
        with pytest.raises(ConfigError, match=r"train\.device: 'gpu' but TensorFlow sees no GPU"):
            train_stage.run(gpu, CELL, paths)
    assert not paths.mlflow_db.exists()
    assert not paths.model_dir(CELL.key).exists()


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


# ------------------------------------------------------------------ training, fresh processes
@pytest.mark.slow
def test_two_fresh_processes_train_bitwise_identical_models(tmp_path, real_params_dict):
    roots = [tmp_path / "first", tmp_path / "second"]
    for root in roots:
        make_project(root, json.loads(json.dumps(real_params_dict)), n_train=1000, cell=DROPOUT)
        processes.run(
            train_command(root, DROPOUT), check=True, env=clean_environment(), timeout=300
        )

    first, second = (
        keras.models.load_model(Paths.at(root).model_dir(DROPOUT.key) / "model.keras")
        for root in roots
    )
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    histories = [read_history(Paths.at(root), DROPOUT.key) for root in roots]
    for row_a, row_b in zip(*histories, strict=True):
        assert {k: v for k, v in row_a.items() if k != "epoch_seconds"} == {
            k: v for k, v in row_b.items() if k != "epoch_seconds"
        }


@pytest.mark.slow
def test_a_cell_resuming_from_a_checkpoint_says_what_was_trained_before(
    tmp_path, real_params_dict, capsys
):
    params = Params.model_validate(real_params_dict)
    limit = params.train.epochs
    tracker = progress.for_cell(params, CELL, tmp_path / "progress.json", "1")

    def first_line(rows: list[dict[str, float]], stopped: bool) -> str:
        callback = progress.EpochProgress(tracker)
        if rows:
            callback.resume(rows, stopped)
        callback.on_train_begin()
        return capsys.readouterr().out

    label = tracker.label
    assert first_line([], False) == f"{label}: training (up to {limit} epochs)\n"
    one = [{"epoch": 1, "val_accuracy": 0.91}]
    assert first_line(one, False) == (
        f"{label}: 1 epoch trained before (val_accuracy 0.9100); training on, up to {limit}\n"
    )
    twelve = [{"epoch": e, "val_accuracy": 0.9 + e / 1000} for e in range(1, 13)]
    assert first_line(twelve, True) == (
        f"{label}: 12 epochs trained before (val_accuracy 0.9120); stopped early\n"
    )
    all_of_them = [{"epoch": e, "val_accuracy": 0.95} for e in range(1, limit + 1)]
    assert first_line(all_of_them, False).endswith("; nothing left to train\n")


@pytest.mark.slow
def test_a_killed_training_resumes_at_its_last_epoch_in_the_same_run(tmp_path, real_params_dict):
    epochs, n_train, batch_size = 8, 6000, 16
    root = tmp_path / "project"
    cell = CELL.model_copy(update={"batch_size": batch_size})
    make_project(
        root,
        real_params_dict,
        n_train=n_train,
        n_validation=500,
        cell=cell,
        hidden_units=[64],
        epochs=epochs,
        steps_per_execution=1,
        early_stopping_patience=100,  # on, so its state is checkpointed too, but never stopping
        parallel_cells=1,  # the stage's own run exists mid-cell (the pool: test_train_pool.py)
    )
    paths = Paths.at(root)
    first = processes.spawn(
        train_command(root, cell), log=tmp_path / "first.log", env=clean_environment()
    )
    try:
        deadline = time.monotonic() + 300
        while not list(paths.checkpoints.glob(f"*/{resume.METADATA_FILE}")):
            assert first.process.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
    finally:
        first.kill()  # SIGKILL: no cleanup runs
    assert first.process.returncode == -9
    (folder,) = paths.checkpoints.iterdir()
    checkpoint = resume.load(folder)
    assert checkpoint is not None and 1 <= checkpoint.epochs_completed < epochs
    run_id = resume.read_run_file(folder)["run_id"]

    second = processes.run(train_command(root, cell), env=clean_environment(), timeout=300)

    assert second.returncode == 0, second.stderr[-3000:]
    announced = re.findall(r"epoch (\d+)/\d+", second.stdout)
    assert int(announced[0]) == checkpoint.epochs_completed + 1
    last = checkpoint.state["rows"][-1]["val_accuracy"]
    assert re.search(
        rf"train@{re.escape(cell.key)} \[cell \d+/\d+\]: {checkpoint.epochs_completed} epochs? "
        rf"trained before \(val_accuracy {last:.4f}\); training on, up to {epochs}\n",
        second.stdout,
    ), second.stdout[:2000]
    history = read_history(paths, cell.key)
    assert [int(row["epoch"]) for row in history] == list(range(1, epochs + 1))
    for row, saved in zip(history, checkpoint.state["rows"], strict=False):
        assert float(row["val_loss"]) == saved["val_loss"]
    record = json.loads((paths.model_dir(cell.key) / "run.json").read_text())
    assert record["run_id"] == run_id
    client = MlflowClient(f"sqlite:///{paths.mlflow_db}")
    runs = client.search_runs([record["experiment_id"]], "tags.kind = 'cell'")
    assert [(run.info.run_id, run.info.status) for run in runs] == [(run_id, "FINISHED")]
    for key in METRIC_KEYS:
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert steps == list(range(1, epochs + 1)), key
    model = keras.models.load_model(paths.model_dir(cell.key) / "model.keras")
    steps_per_epoch = math.ceil(n_train / batch_size)
    assert int(model.optimizer.iterations) == epochs * steps_per_epoch  # optimizer state resumed
    assert not folder.exists()


@pytest.mark.slow
def test_a_crash_after_training_finishes_the_cell_without_training_or_logging_twice(
    tmp_path, real_params_dict, monkeypatch
):
    root = tmp_path / "project"
    params = make_project(root, real_params_dict)
    paths = Paths.at(root)
    save_model = train_stage.save_model

    def crash(*args: Any) -> None:
        raise RuntimeError("killed while writing the outputs")

    monkeypatch.setattr(train_stage, "save_model", crash)
    with pytest.raises(RuntimeError, match="killed while writing"):
        train_stage.run(params, CELL, paths)
    monkeypatch.setattr(train_stage, "save_model", save_model)
    epochs_trained = []

    class CountEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            epochs_trained.append(epoch)

    monkeypatch.setattr(train_stage, "extra_callbacks", lambda context: [CountEpochs()])

    metrics = train_stage.run(params, CELL, paths)

    assert epochs_trained == []
    assert metrics["epochs_run"] == 3
    record = json.loads((paths.model_dir(CELL.key) / "run.json").read_text())
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

    metrics = train_stage.run(params, CELL, Paths.at(root))

    replicas = max(1, len(tf.config.list_logical_devices("GPU")))
    assert metrics["device"] == f"mirrored:{replicas}"
    assert metrics["epochs_run"] == 1
