"""Faults a study meets in practice, injected for real: several devices, cells sharing one sqlite
store at the same time, and outputs or inputs that are not where train expects them.

Download faults (truncated, flipped byte, hanging mirror) are in tests/test_download.py; a missing
model for evaluate in tests/test_evaluate.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import keras
import numpy as np
import processes
import pytest
from mlflow.tracking import MlflowClient
from project import shrunk_cell
from test_train import CELL, METRIC_KEYS, clean_environment, make_project, train_command
from typer.testing import CliRunner

from stages.cli import app
from stages.lib.core.atomic import check_writable
from stages.lib.core.config import ConfigError
from stages.lib.core.paths import Paths

# Splits the CPU into argv[1] logical devices (before TensorFlow initialises, hence a fresh
# process), then runs each `mlpstudy` command line of the JSON list argv[2] and prints exit codes.
# Each command starts as in a process of its own: without the MLFLOW_TRACKING_URI that MLflow's
# set_tracking_uri exported for the one before (the project's store is then the one at its root).
ON_DEVICES = """
import json, os, sys
import tensorflow as tf
(cpu,) = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * int(sys.argv[1])
)
from stages.cli import app
codes = []
for args in json.loads(sys.argv[2]):
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    codes.append(app(args, prog_name="mlpstudy", standalone_mode=False))
print("exit codes:", json.dumps([code or 0 for code in codes]))
"""


@pytest.fixture(autouse=True)
def no_tracking_environment(monkeypatch):
    """The store is the project's mlflow.db (subprocesses get `clean_environment()`)."""
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_STAGE", "DVC_EXP_NAME"):
        monkeypatch.delenv(name, raising=False)


def on_devices(replicas: int, roots: list[Path], log: Path) -> processes.Child:
    """`mlpstudy train` at each root, in one fresh process seeing `replicas` devices (the roots'
    params.yaml say `parallel_cells: 1`: the cell trains on a worker thread of this process,
    where the device split exists)."""
    commands = json.dumps([train_command(root)[1:] for root in roots])
    return processes.spawn(
        [sys.executable, "-c", ON_DEVICES, str(replicas), commands],
        log=log,
        env=clean_environment(),
    )


def exit_codes(log: Path) -> list[int]:
    text = log.read_text()
    lines = [line for line in text.splitlines() if line.startswith("exit codes: ")]
    assert lines, text[-3000:]
    return json.loads(lines[-1].removeprefix("exit codes: "))


def trained(root: Path) -> tuple[dict, list[np.ndarray], dict[str, str]]:
    """The cell's metrics.json, final weights and MLflow run tags at `root`."""
    paths = Paths.at(root)
    metrics = json.loads((paths.train_reports(CELL.key) / "metrics.json").read_text())
    model = keras.models.load_model(paths.model_dir(CELL.key) / "model.keras")
    record = json.loads((paths.model_dir(CELL.key) / "run.json").read_text())
    run = MlflowClient(f"sqlite:///{paths.mlflow_db}").get_run(record["run_id"])
    return metrics, model.get_weights(), run.data.tags


def history(root: Path, column: str) -> list[float]:
    text = (Paths.at(root).train_reports(CELL.key) / "history.csv").read_text().splitlines()
    index = text[0].split(",").index(column)
    return [float(line.split(",")[index]) for line in text[1:]]


# ------------------------------------------------------------------------------ several devices
@pytest.mark.slow
def test_mirrored_over_two_cpu_devices_trains_what_one_device_trains(tmp_path, real_params_dict):
    """Keras splits each global batch over the replicas and sums their gradients, so two replicas
    train the single-device model up to float32 rounding. Dropout stays 0 (params.yaml): replicas
    draw their own masks. Measured: val_loss differs by <= 1.2e-7 (1 ulp), weights by <= 5e-8;
    the tolerances below leave a factor of ~20."""
    roots = {name: tmp_path / name for name in ("steps", "mirrored", "single")}
    settings = {"steps": ("mirrored", 4), "mirrored": ("mirrored", 1), "single": ("none", 1)}
    for name, (distribute, steps) in settings.items():
        params = json.loads(json.dumps(real_params_dict))
        make_project(
            roots[name],
            params,
            epochs=2,
            distribute=distribute,
            steps_per_execution=steps,
            parallel_cells=1,
        )
    assert params["train"]["dropout"] == [0.0]
    logs = {"two": tmp_path / "two-devices.log", "one": tmp_path / "one-device.log"}

    two = on_devices(2, [roots["steps"], roots["mirrored"]], logs["two"])
    one = on_devices(1, [roots["single"]], logs["one"])
    two.wait(timeout=300)
    one.wait(timeout=300)

    assert exit_codes(logs["two"]) == [2, 0]  # bad input: a setting this worker cannot run
    assert exit_codes(logs["one"]) == [0]
    mirrored_metrics, mirrored_weights, mirrored_tags = trained(roots["mirrored"])
    single_metrics, single_weights, _ = trained(roots["single"])
    assert mirrored_metrics["device"] == mirrored_tags["device"] == "mirrored:2"
    assert single_metrics["device"] == "CPU:0"
    for column in ("val_loss", "loss"):
        np.testing.assert_allclose(
            history(roots["mirrored"], column), history(roots["single"], column), rtol=2e-6
        )
    assert mirrored_metrics["best_val_accuracy"] == single_metrics["best_val_accuracy"]
    for a, b in zip(mirrored_weights, single_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)

    # Several steps per execution fail inside Keras on two replicas: the worker, which knows its
    # devices, refuses the cell before it trains, and nothing of it is installed or left running.
    errors = [line for line in logs["two"].read_text().splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: train: 1 of 1 cells failed ({CELL.key}: train.steps_per_execution: "
        "4 with train.distribute: mirrored over 2 devices; Keras 3 fails to run several steps "
        "per execution on more than one replica; allowed: 1 (the setting changes speed only)); "
        "the 0 others are saved; run `dvc repro train` again to train only the failed ones"
    ]
    refused = Paths.at(roots["steps"])
    assert not refused.models.exists() and not refused.train_reports_dir.exists()
    assert list(refused.checkpoints.glob("*")) == []
    store = MlflowClient(f"sqlite:///{refused.mlflow_db}")
    experiments = [experiment.experiment_id for experiment in store.search_experiments()]
    assert store.search_runs(experiments, "tags.kind = 'cell'") == []


# ------------------------------------------------------------------------- one store, two cells
@pytest.mark.slow
def test_two_cells_trained_at_once_both_finish_in_one_fresh_store(tmp_path, real_params_dict):
    """Two worker processes of the stage's local cluster train a cell each at the same time,
    both logging every epoch into the one sqlite store the stage created."""
    epochs = 5
    root = tmp_path / "project"
    other = shrunk_cell("tanh", "he_normal", "adam", 0)
    cells = [CELL, other]
    params = make_project(
        root, real_params_dict, epochs=epochs, parallel_cells=2, activation=["relu", "tanh"]
    )
    paths = Paths.at(root)
    assert not paths.mlflow_db.exists()

    child = processes.spawn(
        train_command(root), log=tmp_path / "train.log", env=clean_environment()
    )

    assert child.wait(timeout=300) == 0, child.output()[-3000:]
    assert "train: on 2 workers (a LocalCluster on 127.0.0.1)" in child.output()
    client = MlflowClient(f"sqlite:///{paths.mlflow_db}")
    experiment = client.get_experiment_by_name(params.study.name)
    cell_runs = client.search_runs([experiment.experiment_id], "tags.kind = 'cell'")
    runs = {run.info.run_name: run for run in cell_runs}
    assert sorted(runs) == sorted(cell.key for cell in cells)
    # The grid's one parent run holds both cells.
    (parent,) = client.search_runs([experiment.experiment_id], "tags.kind = 'grid'")
    assert {run.data.tags["mlflow.parentRunId"] for run in cell_runs} == {parent.info.run_id}
    for cell in cells:
        run = runs[cell.key]
        record = json.loads((paths.model_dir(cell.key) / "run.json").read_text())
        assert (record["run_id"], record["experiment_id"]) == (
            run.info.run_id,
            experiment.experiment_id,
        )
        assert run.info.status == "FINISHED"
        for key in METRIC_KEYS:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert steps == list(range(1, epochs + 1)), (cell.key, key)
    # They did log at the same time (else this test would prove nothing about concurrency).
    first, second = runs.values()
    assert max(first.info.start_time, second.info.start_time) < min(
        first.info.end_time, second.info.end_time
    )


# ------------------------------------------------------------------ outputs and inputs missing
def train_cli(root: Path):
    return CliRunner().invoke(app, train_command(root)[1:])


def assert_nothing_written(paths: Paths) -> None:
    assert not paths.mlflow_db.exists()
    assert not paths.mlflow_artifacts.exists()
    assert not (paths.root / "reports").exists()
    assert not paths.checkpoints.parent.exists()


def test_missing_prepared_data_stops_train_in_one_line_before_any_work(tmp_path, real_params_dict):
    root = tmp_path / "project"
    make_project(root, real_params_dict)
    paths = Paths.at(root)
    for file in paths.prepared.iterdir():
        file.unlink()
    paths.prepared.rmdir()

    result = train_cli(root)

    assert result.exit_code == 2
    assert result.stderr == (
        "error: data/prepared/train.npz: missing; "
        "run `dvc repro preprocess` (or `mlpstudy preprocess`) first\n"
    )
    assert_nothing_written(paths)
    assert not (root / "data" / "models").exists()


@pytest.mark.parametrize(
    ("in_the_way", "folder"),
    [
        ("data/models", "data/models"),
        ("reports", "reports/train"),
        (".mlpstudy", ".mlpstudy/checkpoints"),
    ],
)
def test_a_file_where_an_output_folder_belongs_stops_train_in_one_line_before_any_work(
    tmp_path, real_params_dict, in_the_way, folder
):
    root = tmp_path / "project"
    make_project(root, real_params_dict)
    paths = Paths.at(root)
    (root / in_the_way).write_text("not a folder\n")
    so = "" if in_the_way == folder else f", so {folder} cannot be written"

    result = train_cli(root)

    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: {in_the_way}: not a directory{so}; move it away, then run `dvc repro train` "
        "again\n"
    )
    assert not paths.mlflow_db.exists() and not paths.mlflow_artifacts.exists()
    assert sorted(path.name for path in root.iterdir()) == sorted(
        {"data", "params.yaml", in_the_way.split("/")[0]}
    )
    assert sorted(path.name for path in (root / "data").iterdir()) == sorted(
        {"prepared", *(["models"] if in_the_way == "data/models" else [])}
    )


def test_a_read_only_data_folder_stops_train_in_one_line_before_any_work(
    tmp_path, real_params_dict
):
    root = tmp_path / "project"
    make_project(root, real_params_dict)
    paths = Paths.at(root)
    data = root / "data"
    read_only = (paths.prepared, data)
    try:
        for folder in read_only:
            folder.chmod(0o555)
        if os.access(data, os.W_OK):  # root: permission bits do not apply
            pytest.skip("permission bits do not stop this user (root); the file case covers it")
        result = train_cli(root)
    finally:
        for folder in read_only:
            folder.chmod(0o755)

    assert result.exit_code == 2
    assert result.stderr == (
        "error: data: not writable (Permission denied), so data/models cannot be written; make "
        "it writable, then run `dvc repro train` again\n"
    )
    assert_nothing_written(paths)
    assert sorted(path.name for path in data.iterdir()) == ["prepared"]


def test_check_writable_creates_nothing_and_names_the_blocking_path(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "models").write_text("")

    check_writable(tmp_path / "reports" / "train" / "cell", tmp_path, "run it")
    check_writable(tmp_path / "data", tmp_path, "run it")

    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data", "models"]
    with pytest.raises(ConfigError) as caught:
        check_writable(tmp_path / "data" / "models" / "cell", tmp_path, "run it")
    assert str(caught.value) == (
        "data/models: not a directory, so data/models/cell cannot be written; "
        "move it away, then run it"
    )
    with pytest.raises(ConfigError, match=r"^data/models: not a directory; move it away"):
        check_writable(tmp_path / "data" / "models", tmp_path, "run it")
