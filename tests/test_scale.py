"""Scaling out, with real parts: a team `mlflow server`, queued parallel DVC experiments, a kill.

Each test runs the real pipeline (`dvc repro`, `dvc queue`) in a temp git repo on tiny data.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import processes
import pytest
import yaml
from conftest import free_port
from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient
from project import (
    BIN,
    TINY,
    dvc,
    dvc_json,
    git,
    make_project,
    shrink,
    shrunk_cell,
)
from training import committed_epochs, split_inputs

from stages.lib.core.paths import Paths
from stages.lib.training import checkpoint

pytestmark = pytest.mark.slow

METRIC_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_seconds")
ADAM, SGD = "relu-glorot_uniform-adam-tiny-64-0.0-0", "relu-glorot_uniform-sgd-tiny-64-0.0-0"


def two_cells(params: dict[str, Any]) -> None:
    shrink(params)
    params["train"]["optimizer"] = ["adam", "sgd"]


def study_runs(uri: str, study: str) -> list[Run]:
    """Every live run of the study's experiment in the store at `uri`."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(study)
    assert experiment is not None, f"no experiment {study!r} in {uri}"
    return list(client.search_runs([experiment.experiment_id], run_view_type=ViewType.ACTIVE_ONLY))


def study_name(project: Path) -> str:
    return yaml.safe_load(Paths.at(project).params.read_text())["study"]["name"]


def without_tracking_env(env: dict[str, str]) -> dict[str, str]:
    """The environment with no store chosen: stages fall back to mlflow.db at the DVC root."""
    names = ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_STAGE", "DVC_EXP_NAME")
    return {key: value for key, value in env.items() if key not in names}


# ------------------------------------------------------------------- 1. a remote tracking server
def test_the_pipeline_tracks_into_a_remote_mlflow_server(tmp_path, mlflow_server) -> None:
    project, env = make_project(tmp_path, two_cells)
    env = {**env, "MLFLOW_TRACKING_URI": mlflow_server}

    dvc(project, env, "repro")

    assert not (project / "mlflow.db").exists()
    assert not (project / "mlartifacts").exists()
    study = study_name(project)
    runs = study_runs(mlflow_server, study)
    cells = {run.data.tags["cell"]: run for run in runs if run.data.tags.get("kind") == "cell"}
    assert set(cells) == {ADAM, SGD}
    (parent,) = [run for run in runs if run.data.tags.get("kind") == "grid"]  # no duplicate
    nested = {run.data.tags.get("mlflow.parentRunId") for run in runs if run is not parent}
    assert nested == {parent.info.run_id}  # the cells and the report
    client = MlflowClient(mlflow_server)
    # the stage recorded the splits on the parent before the two workers' cells linked them
    (parent_inputs, *cell_inputs) = [split_inputs(run) for run in (parent, *cells.values())]
    assert {name for name, *_ in parent_inputs} == {"mnist-train", "mnist-validation"}
    assert cell_inputs == [parent_inputs, parent_inputs]
    for key, run in cells.items():
        assert run.info.status == "FINISHED", key
        assert run.data.tags["dvc_stage"] == "train"
        assert {"best_val_accuracy", "test/accuracy", "test/loss"} <= set(run.data.metrics), key
        for metric in METRIC_KEYS:
            assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == [1]
        record = json.loads((project / "data" / "models" / key / "run.json").read_text())
        assert record["run_id"] == run.info.run_id
    (report,) = [run for run in runs if run.data.tags.get("kind") == "report"]
    assert report.data.metrics["cells"] == 2

    out = tmp_path / "compare.csv"
    compared = processes.run(
        [BIN / "mlpstudy", "compare", "--csv", out], cwd=project, env=env, timeout=120
    )

    assert compared.returncode == 0, compared.stderr
    assert f"{study}: 2 cell runs ({mlflow_server})" in compared.stdout
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["cell"] for row in rows) == sorted([ADAM, SGD])
    assert {row["run_id"] for row in rows} == {run.info.run_id for run in cells.values()}


# ----------------------------------------------------------------- 2. an unreachable server
def test_train_fails_fast_naming_an_unreachable_server_and_writes_nothing(tmp_path) -> None:
    project, env = make_project(tmp_path)
    dvc(project, env, "repro", "preprocess")
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    paths = Paths.at(project)

    started = time.monotonic()
    result = processes.run(
        [BIN / "mlpstudy", "train"],
        cwd=project,
        env={**without_tracking_env(env), "MLFLOW_TRACKING_URI": uri},
        timeout=120,
    )
    seconds = time.monotonic() - started

    assert result.returncode == 1, result.stderr[-2000:]
    assert seconds < 20, f"took {seconds:.1f} s to give up on {uri}"
    assert f"MLFLOW_TRACKING_URI: the MLflow server {uri} is not reachable" in result.stderr
    assert "Traceback" not in result.stderr
    assert not paths.model_dir(ADAM).exists()
    assert not paths.train_reports(ADAM).exists()
    assert not paths.checkpoints.exists()
    assert not paths.mlflow_db.exists()


# ------------------------------------------------------------ 3. queued parallel experiments
QUEUE_TIMEOUT_SECONDS = 420  # below the per-test limit in pyproject.toml
EXPERIMENTS = {
    "seed-one": "relu-glorot_uniform-adam-tiny-64-0.0-1",
    "seed-two": "relu-glorot_uniform-adam-tiny-64-0.0-2",
}


def queue_tasks(project: Path, env: dict[str, str]) -> dict[str, str]:
    """Experiment name -> status (Queued, Running, Success, Failed) from `dvc queue status`."""
    tasks = {}
    for line in dvc(project, env, "queue", "status").splitlines():
        fields = line.split()
        if len(fields) >= 3 and re.fullmatch(r"[0-9a-f]{7}", fields[0]):
            tasks[fields[1]] = fields[-1]
    return tasks


def wait_for_queue(project: Path, env: dict[str, str]) -> dict[str, str]:
    deadline = time.monotonic() + QUEUE_TIMEOUT_SECONDS
    while True:
        tasks = queue_tasks(project, env)
        if tasks and all(status in ("Success", "Failed") for status in tasks.values()):
            return tasks
        if time.monotonic() > deadline:
            raise AssertionError(f"queue not done within {QUEUE_TIMEOUT_SECONDS} s: {tasks}")
        time.sleep(2)


def queue_workers(project: Path) -> list[int]:
    """Pids of the `dvc exp queue-worker` processes serving `project`'s queue.

    DVC names each worker `dvc-exp-<sha256(.dvc/tmp/exps/celery)[:6]>-<n>@localhost`.
    """
    wdir = os.path.join(os.path.realpath(project), ".dvc", "tmp", "exps", "celery")
    node = f"dvc-exp-{hashlib.sha256(wdir.encode()).hexdigest()[:6]}-"
    return [
        pid
        for pid, _, argv in processes.running()
        if b"queue-worker" in argv and any(arg.startswith(node.encode()) for arg in argv)
    ]


def stop_queue(project: Path, env: dict[str, str]) -> None:
    """Stop the queue's workers (killing any task still running) and wait for them to exit.

    Workers still alive 60 s later are SIGKILLed, and then the test fails naming them.
    """
    try:
        dvc(project, env, "queue", "stop", "--kill", timeout=120)
    finally:
        deadline = time.monotonic() + 60
        while (left := queue_workers(project)) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not left, f"queue workers {left} still alive 60 s after `dvc queue stop --kill`"


@pytest.fixture(scope="module")
def queued_study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two experiments (seed 1, seed 2) queued on a committed project and run by 2 workers.

    `dvc queue start` leaves worker daemons behind: its output goes to a file, never a pipe the
    workers would inherit, and the workers are stopped at the end whatever the outcome.
    """
    folder = tmp_path_factory.mktemp("queue")
    project, env = make_project(folder)
    env = without_tracking_env(env)  # the default store: mlflow.db at the root, via DVC_ROOT
    dvc(project, env, "repro", "preprocess")
    git(project, env, "add", "-A")
    git(project, env, "commit", "-q", "-m", "data prepared")
    for name, cell in EXPERIMENTS.items():
        seed = cell.rsplit("-", 1)[1]
        dvc(project, env, "exp", "run", "--queue", "--name", name, "-S", f"train.seed=[{seed}]")
    try:
        started = processes.spawn(
            [BIN / "dvc", "queue", "start", "--jobs", "2"],
            log=folder / "queue-start.log",
            cwd=project,
            env=env,
        )
        assert started.wait(timeout=120) == 0, started.output()
        tasks = wait_for_queue(project, env)
        logs = {name: dvc(project, env, "queue", "logs", name) for name in tasks}
        assert tasks == dict.fromkeys(EXPERIMENTS, "Success"), logs
        yield {"project": project, "env": env, "logs": logs}
    finally:
        stop_queue(project, env)


def test_queued_experiments_run_in_parallel_into_the_root_store(queued_study) -> None:
    project, env = queued_study["project"], queued_study["env"]

    shown = dvc_json(project, env, "exp", "show")
    revs = [rev for row in shown for exp in row.get("experiments") or [] for rev in exp["revs"]]
    by_name = {rev["name"]: rev["data"] for rev in revs}
    assert set(by_name) == set(EXPERIMENTS)
    accuracy = {}
    for name, cell in EXPERIMENTS.items():
        # DVC's metrics are the study's headline; a cell's own numbers come with --targets.
        assert by_name[name]["metrics"]["reports/study/summary.json"]["data"]["cells"] == 1
        files = (f"reports/evaluate/metrics/{cell}.json", f"reports/train/{cell}/metrics.json")
        diff = dvc_json(project, env, "metrics", "diff", "HEAD", name, "--targets", *files)
        accuracy[name] = diff[files[0]]["test_accuracy"]["new"]
        assert 0.0 <= accuracy[name] <= 1.0
        assert diff[files[1]]["epochs_run"]["new"] == 1
        assert by_name[name]["params"]["params.yaml"]["data"]["train"]["seed"] == [int(cell[-1])]

    # Both workers' cells went to mlflow.db at the root (DVC_ROOT), none to their temp copies.
    assert not list((project / ".dvc").rglob("mlflow.db"))
    runs = study_runs(f"sqlite:///{project / 'mlflow.db'}", study_name(project))
    cells = {run.data.tags["cell"]: run for run in runs if run.data.tags.get("kind") == "cell"}
    assert set(cells) == set(EXPERIMENTS.values())
    for name, cell in EXPERIMENTS.items():
        run = cells[cell]
        assert run.data.tags.get("dvc_exp") == name, run.data.tags
        assert run.info.status == "FINISHED"
        assert {"best_val_accuracy", "test/accuracy"} <= set(run.data.metrics)
        assert run.data.metrics["test/accuracy"] == pytest.approx(accuracy[name])


def test_each_queued_experiment_keeps_its_own_report_run(queued_study) -> None:
    project = queued_study["project"]
    runs = study_runs(f"sqlite:///{project / 'mlflow.db'}", study_name(project))
    reports = [run for run in runs if run.data.tags.get("kind") == "report"]
    assert sorted(run.data.tags.get("dvc_exp", "") for run in reports) == sorted(EXPERIMENTS)


def test_no_queue_worker_outlives_the_queue(queued_study) -> None:
    """What the fixture's teardown does, checked: after stopping, no worker of the project lives."""
    project, env = queued_study["project"], queued_study["env"]

    stop_queue(project, env)

    assert queue_workers(project) == []


# ------------------------------------------------------- 4. SIGKILL mid-epoch through `dvc repro`
KILL_EPOCHS = 8  # the second cell trains for seconds: a wide window to kill it in
KILL_BATCH = 16
KILLED_GRID = {
    shrunk_cell("relu", "glorot_uniform", name, 0, batch_size=KILL_BATCH).key
    for name in ("adam", "sgd")
}


def slow_two_cells(params: dict[str, Any]) -> None:
    two_cells(params)
    train = params["train"]
    train.update(epochs=KILL_EPOCHS, batch_size=[KILL_BATCH])
    train["architectures"][TINY["architecture"]] = [64]
    train["early_stopping_patience"] = None
    train["parallel_cells"] = 1  # one after the other: one cell finished, the next one killed


def _run_of(checkpoint_folder: Path) -> str | None:
    """The MLflow run a checkpoint belongs to; None while it is being written or removed."""
    try:
        return checkpoint.read_run_file(checkpoint_folder).get("run_id")
    except (OSError, ValueError):
        return None


def _recorded_run(record: Path) -> str | None:
    """The run in a cell's run.json; None while DVC re-links it into place (after the stage)."""
    try:
        return json.loads(record.read_text())["run_id"]
    except (OSError, ValueError):
        return None


def test_a_sigkilled_dvc_repro_keeps_the_finished_cell_and_resumes_the_killed_one(tmp_path) -> None:
    project, env = make_project(tmp_path, slow_two_cells, n_train=6000)
    paths = Paths.at(project)
    dvc(project, env, "repro", "preprocess")
    first = processes.spawn(
        [BIN / "dvc", "repro", "train"], log=tmp_path / "first.log", cwd=project, env=env
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            assert first.process.poll() is None, first.output()[-3000:]
            assert time.monotonic() < deadline, "no second cell's checkpoint within 300 s"
            records = list((project / "data" / "models").glob("*/run.json"))
            finished_runs = {_recorded_run(record) for record in records}
            # The finished cell's own checkpoint lives on for a moment after its install. The
            # other one's must leave an epoch or two to train after the kill lands.
            committed = [
                metadata
                for metadata in paths.checkpoints.glob(f"*/{checkpoint.METADATA_FILE}")
                if _run_of(metadata.parent) not in finished_runs | {None}
                and 1 <= committed_epochs(metadata.parent) <= KILL_EPOCHS - 2
            ]
            if records and committed:
                break
            time.sleep(0.05)
    finally:
        first.kill()  # SIGKILL to dvc and its stage: no cleanup runs
    done = json.loads(records[0].read_text())
    finished, killed = done["cell"]["key"], (KILLED_GRID - {done["cell"]["key"]}).pop()
    folder = committed[0].parent
    saved = checkpoint.load(folder)
    assert saved is not None and 1 <= saved.epochs_completed < KILL_EPOCHS
    killed_run = checkpoint.read_run_file(folder)["run_id"]
    assert not paths.model_dir(killed).exists()
    finished_model = paths.model_dir(finished) / "model.keras"
    finished_mtime = finished_model.stat().st_mtime_ns
    # The killed dvc leaves its PID in .dvc/tmp/rwlock; the next dvc drops it (no user action).
    stale = json.loads((project / ".dvc" / "tmp" / "rwlock").read_text())
    assert first.pid in {info["pid"] for info in stale["write"].values()}
    # What will train is known before it does.
    plan = processes.run([BIN / "mlpstudy", "train", "--dry-run"], cwd=project, env=env)
    assert (
        f"  {killed} (interrupted: continues after epoch {saved.epochs_completed})" in plan.stdout
    )
    assert "train: 1 of 2 cells to train (1 up to date)" in plan.stdout

    second = dvc(project, env, "repro", "train")

    assert f"(Pid {first.pid}), in RWLock-file" in second and "Auto removed it" in second
    assert re.findall(r"^train \[\d+/\d+\] (\S+):", second, flags=re.M) == [killed]
    assert finished_model.stat().st_mtime_ns == finished_mtime
    before = saved.epochs_completed
    assert f"train {killed}: {before} epoch{'' if before == 1 else 's'} trained before" in second
    announced = [int(epoch) for epoch in re.findall(r"epoch (\d+)/\d+", second)]
    assert announced[0] == saved.epochs_completed + 1, announced
    with (paths.train_reports(killed) / "history.csv").open(newline="") as handle:
        history = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in history] == list(range(1, KILL_EPOCHS + 1))
    runs = study_runs(f"sqlite:///{paths.mlflow_db}", study_name(project))
    cell_runs = [run for run in runs if run.data.tags.get("kind") == "cell"]
    by_cell = {key: [r for r in cell_runs if r.data.tags["cell"] == key] for key in KILLED_GRID}
    assert [run.info.run_id for run in by_cell[finished]] == [done["run_id"]]
    assert [(run.info.run_id, run.info.status) for run in by_cell[killed]] == [
        (killed_run, "FINISHED")
    ]
    client = MlflowClient(f"sqlite:///{paths.mlflow_db}")
    for metric in METRIC_KEYS:
        steps = [m.step for m in client.get_metric_history(killed_run, metric)]
        assert steps == list(range(1, KILL_EPOCHS + 1)), metric
    assert json.loads((paths.model_dir(killed) / "run.json").read_text())["run_id"] == killed_run
    assert not folder.exists()
    assert "up to date" in dvc(project, env, "status", "train")


# ------------------------------------------- 5. a team: one DVC remote, one MLflow server
def test_a_second_clone_gets_the_trained_cells_from_the_remotes_and_trains_none(
    tmp_path, mlflow_server
) -> None:
    project, env = make_project(tmp_path, two_cells)
    env = {**without_tracking_env(env), "MLFLOW_TRACKING_URI": mlflow_server}
    remote = tmp_path / "dvc-remote"
    dvc(project, env, "remote", "add", "--default", "team", str(remote))
    dvc(project, env, "repro")
    git(project, env, "add", "-A")
    git(project, env, "commit", "-q", "-m", "the study, trained")
    dvc(project, env, "push")

    clone = tmp_path / "clone"
    processes.run(["git", "clone", "-q", str(project), str(clone)], env=env, check=True)
    pulled = dvc(clone, env, "pull")

    assert "data/models" in pulled
    status = dvc(clone, env, "status")
    assert "up to date" in status, status
    plan = processes.run([BIN / "mlpstudy", "train", "--dry-run"], cwd=clone, env=env, check=True)
    assert "train: all 2 cells of the grid are up to date; nothing to train" in plan.stdout
    again = dvc(clone, env, "repro")
    assert "Running stage" not in again, again
    # The clone adds a value: only the new cells train, into the same server.
    file = clone / "params.yaml"
    params = yaml.safe_load(file.read_text())
    params["train"]["seed"] = [0, 1]
    file.write_text(yaml.safe_dump(params, sort_keys=False))
    grown = dvc(clone, env, "repro")
    new = {key.replace("-0.0-0", "-0.0-1") for key in (ADAM, SGD)}
    assert set(re.findall(r"^train \[\d+/\d+\] (\S+):", grown, flags=re.M)) == new
    cells = [
        run
        for run in study_runs(mlflow_server, study_name(project))
        if run.data.tags.get("kind") == "cell"
    ]
    assert sorted(run.data.tags["cell"] for run in cells) == sorted({ADAM, SGD} | new)
