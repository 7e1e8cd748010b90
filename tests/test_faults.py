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
ON_DEVICES = """
import json, sys
import tensorflow as tf
(cpu,) = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * int(sys.argv[1])
)
from stages.cli import app
codes = [app(args, prog_name="mlpstudy", standalone_mode=False) for args in json.loads(sys.argv[2])]
print("exit codes:", json.dumps([code or 0 for code in codes]))
"""


@pytest.fixture(autouse=True)
def no_tracking_environment(monkeypatch):
    """The store is the project's mlflow.db (subprocesses get `clean_environment()`)."""
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_STAGE", "DVC_EXP_NAME"):
        monkeypatch.delenv(name, raising=False)


def on_devices(replicas: int, roots: list[Path], log: Path) -> processes.Child:
    """`mlpstudy train` for CELL at each root, in one fresh process seeing `replicas` devices."""
    commands = json.dumps([train_command(root)[1:] for root in roots])
    return processes.spawn(
        [sys.executable, "-c", ON_DEVICES, str(replicas), commands],
        log=log,
        # In this process: the device split exists here, not in a warm training process.
        env={**clean_environment(), "MLPSTUDY_TRAIN_SERVICE": "off"},
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
        )
    assert params["train"]["dropout"] == [0.0]
    logs = {"two": tmp_path / "two-devices.log", "one": tmp_path / "one-device.log"}

    two = on_devices(2, [roots["steps"], roots["mirrored"]], logs["two"])
    one = on_devices(1, [roots["single"]], logs["one"])
    two.wait(timeout=300)
    one.wait(timeout=300)

    assert exit_codes(logs["two"]) == [2, 0]
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

    # Several steps per execution fail inside Keras on two replicas: refused before any work.
    errors = [line for line in logs["two"].read_text().splitlines() if line.startswith("error:")]
    assert errors == [
        "error: train.steps_per_execution: 4 with train.distribute: mirrored over 2 devices; "
        "Keras 3 fails to run several steps per execution on more than one replica; "
        "allowed: 1 (the setting changes speed only)"
    ]
    assert not Paths.at(roots["steps"]).mlflow_db.exists()


# ------------------------------------------------------------------------- one store, two cells
@pytest.mark.slow
def test_two_cells_trained_at_once_both_finish_in_one_fresh_store(tmp_path, real_params_dict):
    """Both processes find no store: one creates it (under the lock), both log every epoch."""
    epochs = 5
    root = tmp_path / "project"
    params = make_project(root, real_params_dict, epochs=epochs)
    paths = Paths.at(root)
    cells = [CELL, shrunk_cell("tanh", "glorot_uniform", "sgd", 1)]
    logs = [tmp_path / f"{cell.key}.log" for cell in cells]
    # Two processes of their own (one warm training process would train them in turn), as when
    # queued experiments of one machine share a store.
    alone = {**clean_environment(), "MLPSTUDY_TRAIN_SERVICE": "off"}
    children = [
        processes.spawn(train_command(root, cell), log=log, env=alone)
        for cell, log in zip(cells, logs, strict=True)
    ]

    for child in children:
        assert child.wait(timeout=300) == 0, child.output()[-3000:]

    client = MlflowClient(f"sqlite:///{paths.mlflow_db}")
    experiment = client.get_experiment_by_name(params.study.name)
    cell_runs = client.search_runs([experiment.experiment_id], "tags.kind = 'cell'")
    runs = {run.info.run_name: run for run in cell_runs}
    assert sorted(runs) == sorted(cell.key for cell in cells)
    # Both raced to get-or-create their grid's parent run: there is one, holding both cells.
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


@pytest.mark.parametrize("fault", ["file-in-the-way", "read-only"])
def test_an_unwritable_model_folder_stops_train_in_one_line_before_any_work(
    tmp_path, real_params_dict, fault
):
    root = tmp_path / "project"
    make_project(root, real_params_dict)
    paths = Paths.at(root)
    data = root / "data"
    if fault == "file-in-the-way":
        (data / "models").write_text("not a folder\n")
        problem = (
            "data/models: not a directory, so data/models/{key} cannot be written; move it away"
        )
    else:
        problem = "data: not writable (Permission denied), so data/models/{key} cannot be written"
    read_only = (paths.prepared, data) if fault == "read-only" else ()
    try:
        for folder in read_only:
            folder.chmod(0o555)
        if read_only and os.access(data, os.W_OK):  # root: permission bits do not apply
            pytest.skip("permission bits do not stop this user (root); the file case covers it")
        result = train_cli(root)
    finally:
        for folder in read_only:
            folder.chmod(0o755)

    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {problem.format(key=CELL.key)}")
    assert result.stderr.endswith(f"run `dvc repro train@{CELL.key}` again\n")
    assert result.stderr.count("\n") == 1
    assert_nothing_written(paths)
    assert sorted(path.name for path in data.iterdir()) == sorted(
        ["prepared", *(["models"] if fault == "file-in-the-way" else [])]
    )


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
