"""Cells trained at once (`train.parallel_cells`; stages/lib/training/train_pool.py).

While DVC runs one cell's stage, worker processes train the next cells of the same `dvc repro`
ahead, and each stage takes its cell's checkpoint over. Every cell must come out bitwise as if
trained alone, with its own complete MLflow run, and a guess of which cells DVC runs next must
agree with DVC.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import sys
from pathlib import Path

import keras
import mlflow
import numpy as np
import processes
import pytest
from project import dvc, make_project, shrink, shrunk_cell, training_processes
from test_train import CELL as TRAIN_CELL
from test_train import make_project as make_train_project
from test_train import read_history
from test_train_service import train_until_a_checkpoint

from stages.lib.core.code import code_digest
from stages.lib.core.config import Params, load_params
from stages.lib.core.grid import grid
from stages.lib.core.paths import Paths
from stages.lib.tracking import tracking
from stages.lib.training import cell_run, resume, served_cell
from stages.lib.training.lookahead import Invocation, parse_command
from stages.lib.training.train_pool import Pool

CELL = shrunk_cell("relu", "glorot_uniform", "adam", 0)


def test_the_command_running_the_stages_says_which_cells_it_runs():
    assert parse_command(["/v/bin/python", "/v/bin/dvc", "repro", "--force"]) == Invocation(
        True, False, ()
    )
    assert parse_command(["dvc", "repro", "-fs", "report"]) == Invocation(True, True, ("report",))
    exp = parse_command(["dvc", "exp", "run", "-S", "train.seed=[0]", "-n", "x", "train@relu*"])
    assert exp == Invocation(False, False, ("train@relu*",))
    assert parse_command(["dvc", "status"]) is None
    assert parse_command(["python", "-m", "pytest"]) is None

    assert Invocation(False, False, ()).runs(CELL)
    assert Invocation(False, False, ("report",)).runs(CELL)  # downstream: every cell first
    assert not Invocation(False, True, ("report",)).runs(CELL)  # --single-item
    assert Invocation(False, False, (f"dvc.yaml:train@{CELL.key}",)).runs(CELL)
    assert Invocation(False, False, ("train@relu-*",)).runs(CELL)
    assert not Invocation(False, False, ("train@tanh-*",)).runs(CELL)
    assert not Invocation(False, False, ("preprocess",)).runs(CELL)


@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/bash"])
def test_every_stage_of_one_dvc_repro_shares_its_session(tmp_path, shell):
    # DVC runs a stage as `$SHELL -c cmd`; dash stays the command's parent, bash execs it.
    # Either way the stages of one `dvc repro` share a session (its pid), and a command run
    # without DVC falls back to its own parent.
    if not Path(shell).exists():
        pytest.skip(f"no {shell}")
    report = "import os; from stages.lib.training import lookahead; "
    report += "print(os.getppid(), lookahead.session(os.getppid()))"
    stage = f"{sys.executable} -c '{report}'"
    fake_dvc = tmp_path / "dvc"  # argv [python, .../dvc, repro]: what lookahead recognises
    fake_dvc.write_text(  # waits on each stage as DVC does; the test's deadline bounds it
        "import os, sys\n"
        f"for _ in range(2): os.spawnv(os.P_WAIT, {shell!r}, [{shell!r}, '-c', {stage!r}])\n"
        "print('dvc', os.getpid())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    run = processes.run([sys.executable, str(fake_dvc), "repro"], env=env, timeout=120, check=True)
    *stages, last = [line.split() for line in run.stdout.splitlines()]
    dvc_pid = int(last[1])
    assert [int(stage[1]) for stage in stages] == [dvc_pid, dvc_pid], run.stdout
    alone = processes.run([shell, "-c", stage], env=env, timeout=120, check=True).stdout.split()
    assert alone[0] == alone[1]  # no dvc among the ancestors: the parent is the session


def test_cells_train_at_once_on_cpu_only(real_params_dict):
    params = Params.model_validate(real_params_dict)

    def size(**train) -> int:
        changed = params.train.model_copy(update=train)
        return served_cell.pool_size(params.model_copy(update={"train": changed}))

    assert size(device="cpu", parallel_cells=2) == 2
    assert size(device="auto", parallel_cells=3) == 3  # no GPU on this machine
    assert size(device="cpu", parallel_cells=1) == 0  # one at a time: trained in the process
    assert size(device="gpu", parallel_cells=2) == 0  # one process uses the GPU
    assert size(device="cpu", distribute="mirrored", parallel_cells=2) == 0


def test_closing_the_pool_drops_only_checkpoints_trained_ahead(tmp_path):
    paths = Paths.at(tmp_path)
    ahead, own = paths.checkpoints / "ahead", paths.checkpoints / "own"
    other_code = paths.checkpoints / "other-code"
    resume.mark_ahead(ahead, code_digest())
    resume.mark_ahead(other_code, "another version's")  # a process of other code runs too
    resume.update_run_file(own, run_id="a-run")  # a stage's own checkpoint, killed mid-cell

    Pool(paths).close()

    assert not ahead.exists()
    assert resume.trained_ahead(other_code) == "another version's"
    assert resume.read_run_file(own) == {"run_id": "a-run"}


def test_a_checkpoint_trained_ahead_is_taken_over_only_by_the_code_that_trained_it(tmp_path):
    experiment = tracking.open_experiment("study", Paths.at(tmp_path))
    same, other = tmp_path / "same", tmp_path / "other"
    resume.mark_ahead(same, "code-a")
    resume.mark_ahead(other, "code-b")
    tags = {"kind": "cell"}

    run_id = cell_run.continue_or_create(experiment, same, CELL, {}, tags, "code-a")
    cell_run.continue_or_create(experiment, other, CELL, {}, tags, "code-a")

    assert resume.trained_ahead(same) == "code-a"  # kept, its epochs now logged into a new run
    assert resume.read_run_file(same) == {"run_id": run_id}
    assert resume.trained_ahead(other) is None  # other code's epochs: the cell starts over


def four_cells(parallel: int):
    def edit(params):
        shrink(params)
        params["train"].update(optimizer=["adam", "sgd"], seed=[0, 1], epochs=3)
        params["train"]["parallel_cells"] = parallel

    return edit


def outputs(project):
    """Per cell: history (without times), diagnostics, final weights."""
    paths = Paths.at(project)
    found = {}
    for cell in grid(load_params(paths.params).train):
        with (paths.train_reports(cell.key) / "history.csv").open(newline="") as handle:
            history = [
                {k: v for k, v in row.items() if k != "epoch_seconds"}
                for row in csv.DictReader(handle)
            ]
        diagnostics = (paths.train_reports(cell.key) / "diagnostics.csv").read_text()
        model = keras.models.load_model(paths.model_file(cell.key))
        found[cell.key] = (history, diagnostics, model.get_weights())
    return found


@pytest.mark.slow
def test_cells_trained_ahead_are_bitwise_cells_trained_one_by_one(tmp_path):
    alone, env_alone = make_project(tmp_path / "alone", four_cells(1), n_train=1000)
    ahead, env = make_project(tmp_path / "ahead", four_cells(2), n_train=1000)
    dvc(alone, env_alone, "repro", "train")

    output = dvc(ahead, env, "repro", "train")

    # Two workers trained the four cells; each stage showed its cell's epochs and took it over.
    log = Paths.at(ahead).train_service_log.read_text()
    assert len(set(re.findall(r"training worker (\d+): ", log))) == 2, log[-3000:]
    for cell in grid(load_params(Paths.at(ahead).params).train):
        assert re.search(rf"train@{cell.key} \[cell \d/4\] epoch 3/3: ", output), output[-3000:]
        assert f"train@{cell.key}: logged and written in" in output
    assert not list(Paths.at(ahead).checkpoints.iterdir())  # all taken over
    expected, got = outputs(alone), outputs(ahead)
    assert got.keys() == expected.keys()
    for key, (history, diagnostics, weights) in got.items():
        assert history == expected[key][0]
        assert diagnostics == expected[key][1]
        for a, b in zip(weights, expected[key][2], strict=True):
            np.testing.assert_array_equal(a, b)

    # Each cell has its own finished run holding every epoch and every diagnostics step.
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    runs = client.search_runs(experiments, "tags.kind = 'cell'")
    assert sorted(run.data.tags["cell"] for run in runs) == sorted(got)
    for run in runs:
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
        assert sorted(steps) == [1, 2, 3]
        diagnostics = [name for name in run.data.metrics if name.startswith("diag/")]
        assert diagnostics
        history = client.get_metric_history(run.info.run_id, diagnostics[0])
        assert sorted(m.step for m in history) == [0, 1, 2, 3]


@pytest.mark.slow
def test_a_cell_whose_worker_dies_finishes_in_the_warm_process(tmp_path, real_params_dict):
    root = tmp_path / "project"
    cell = TRAIN_CELL.model_copy(update={"batch_size": 16})
    make_train_project(root, real_params_dict, n_train=6000, epochs=6, cell=cell)
    paths = Paths.at(root)
    client = train_until_a_checkpoint(root, cell, tmp_path / "client.log")
    workers = [pid for pid in training_processes(root) if pid not in service_pids(root)]
    assert len(workers) == 2  # the pool of train.parallel_cells: 2
    for pid in workers:
        os.kill(pid, signal.SIGKILL)  # e.g. the out-of-memory killer

    assert client.wait(timeout=300) == 0, client.output()[-3000:]
    output = client.output()
    assert f"the training worker ended while training {cell.key}" in output
    assert re.search(rf"train@{cell.key} \[cell 1/1\] epoch 6/6: ", output), output[-3000:]
    assert [int(row["epoch"]) for row in read_history(paths, cell.key)] == list(range(1, 7))


def service_pids(root) -> list[int]:
    return [
        pid
        for pid in training_processes(root)
        if b"train-service" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
