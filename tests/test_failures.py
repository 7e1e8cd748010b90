"""Failures of the machine, made for real, end in one line and leave nothing behind.

The MLflow store damaged, replaced by a folder, locked by another process or read-only; a disk that
is full; a model file cut short. Each command ends with exit code 1 (the work failed) or 2 (bad
input) and one line on stderr naming what failed and what to do, and leaves no empty experiment,
no half-written file and no MLflow run in status RUNNING.

Read-only and full disks are real tmpfs mounts (tests run as root here, so permission bits would
not stop a write); where mounting is not allowed the test skips and says so.
"""

from __future__ import annotations

import http.server
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import processes
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from test_evaluate import CELL, tiny_params, write_project
from training import train_one
from typer.testing import CliRunner

from stages import evaluate
from stages.cli import app
from stages.lib.core.paths import Paths
from stages.lib.tracking.study_tracking import GRID_KIND

pytestmark = pytest.mark.slow

# Holds a write (RESERVED) lock on the sqlite file argv[1] for argv[2] seconds: others can read,
# no one can write; the way an open `sqlite3` shell in a transaction or a stuck process holds it.
HOLD_LOCK = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("ROLLBACK")
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with one trained and evaluated cell and its sqlite store (copy it, then break)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME"):
            patch.delenv(name, raising=False)
        params = tiny_params()
        paths = write_project(tmp_path_factory.mktemp("failures") / "project", params)
        train_one(params, CELL, paths)
        evaluate.run(params, paths, [CELL])
    return paths.root


@pytest.fixture
def project(trained: Path, tmp_path: Path, monkeypatch) -> Paths:
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME"):
        monkeypatch.delenv(name, raising=False)
    copy = tmp_path / "project"
    shutil.copytree(trained, copy)
    return Paths.at(copy)


def cli(paths: Paths, *command: str):
    return CliRunner().invoke(app, [*command, "--root", str(paths.root)])


def one_line(result) -> str:
    """The error line, checked to be the only output on stderr."""
    print(result.stderr)  # shown with -s, and with a failing test's output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    return result.stderr.removeprefix("error: ").strip()


def error_line(stderr: str) -> str:
    """A child's error line: its last line on stderr, and the only one that says `error:`
    (TensorFlow prints its own start-up lines before it)."""
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr[-3000:]
    return errors[0].removeprefix("error: ")


def run_statuses(uri: str) -> list[str]:
    """Statuses of the runs that do work: cells and reports (not the grid's parent run)."""
    client = MlflowClient(uri)
    experiments = client.search_experiments(view_type=ViewType.ALL)
    ids = [experiment.experiment_id for experiment in experiments]
    runs = client.search_runs(ids, run_view_type=ViewType.ALL)
    return [run.info.status for run in runs if run.data.tags.get("kind") != GRID_KIND]


def experiment_names(uri: str) -> list[str]:
    return sorted(e.name for e in MlflowClient(uri).search_experiments(view_type=ViewType.ALL))


def leftovers(root: Path) -> list[str]:
    """Temporary files a write left behind (atomic writes name them `.<name>.*`)."""
    return [str(path) for path in root.rglob(".*") if path.is_file() and path.name != ".gitignore"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def edit_train(paths: Paths, **settings: object) -> None:
    """Change `train` settings in the project's params.yaml."""
    import yaml

    params = yaml.safe_load(paths.params.read_text())
    params["train"].update(settings)
    paths.params.write_text(yaml.safe_dump(params, sort_keys=False))


def cell_failed(line: str, cause: str) -> None:
    """`line` is the train stage's one line for the grid's one cell failing with `cause`."""
    assert line.startswith(f"train: 1 of 1 cells failed ({CELL.key}: "), line
    assert cause in line, line
    assert line.endswith(
        "; the 0 others are saved; run `dvc repro train` again to train only the failed ones"
    ), line


# ------------------------------------------------------------------------- the store is broken
@pytest.mark.parametrize("command", ["evaluate", "report", "train"])
def test_a_store_that_is_no_database_stops_every_stage_at_once(project, command):
    project.mlflow_db.write_bytes(b"this is not a database\n" * 100)
    if command == "train":  # a cell to train (an up-to-date grid would not open the store)
        shutil.rmtree(project.model_dir(CELL.key))
    reports = snapshot(project.root / "reports")

    started = time.monotonic()
    result = cli(project, command)

    assert result.exit_code == 1, result.output
    assert one_line(result) == (
        f"{project.mlflow_db}: the MLflow store is not a sqlite database; move it away (a new "
        "store starts empty) or restore it from a backup, then run the same command (or "
        "`dvc repro`) again"
    )
    assert time.monotonic() - started < 60  # before any training
    assert snapshot(project.root / "reports") == reports  # report wrote its files? no: same
    assert leftovers(project.root) == []


def test_a_folder_where_the_store_should_be_fails_at_once_not_after_mlflow_s_retries(project):
    project.mlflow_db.unlink()
    project.mlflow_db.mkdir()
    started = time.monotonic()

    result = cli(project, "evaluate")

    assert result.exit_code == 1
    assert one_line(result).startswith(f"{project.mlflow_db}: the MLflow store is not a file")
    assert time.monotonic() - started < 30  # MLflow alone retries for ~100 s


def test_a_damaged_store_is_named_with_what_to_do(project):
    data = project.mlflow_db.read_bytes()
    project.mlflow_db.write_bytes(data[: len(data) // 3])  # sqlite header intact, pages lost

    result = cli(project, "report")

    assert result.exit_code == 1
    line = one_line(result)
    assert line.startswith(f"the MLflow store {project.mlflow_db} is damaged; move the file away")
    assert "malformed" in line


def test_a_store_locked_by_another_process_mid_run_ends_in_one_line_and_no_run(project, tmp_path):
    """The report reads the store (allowed), draws and writes its files, then cannot create its
    run: sqlite waits 20 s (MLflow's busy timeout) for the lock, then gives up."""
    uri = f"sqlite:///{project.mlflow_db}"
    runs_before = run_statuses(uri)
    holder = processes.spawn(
        [sys.executable, "-c", HOLD_LOCK, str(project.mlflow_db), "600"], log=tmp_path / "lock.log"
    )
    try:
        deadline = time.monotonic() + 30
        while "locked" not in holder.output():
            assert time.monotonic() < deadline and holder.process.poll() is None, holder.output()
            time.sleep(0.1)
        result = cli(project, "report")
        assert holder.process.poll() is None, "the lock was released before the report ended"
    finally:
        holder.kill()  # the lock is held until here

    assert result.exit_code == 1
    line = one_line(result)
    assert line.startswith(f"the MLflow store {project.mlflow_db} is locked by another process")
    assert line.endswith("then run the same command (or `dvc repro`) again (database is locked)")
    assert run_statuses(uri) == runs_before  # no report run, so none left RUNNING
    assert experiment_names(uri) == ["Default", tiny_params().study.name]
    assert leftovers(project.root) == []


class DiesAfterHealth(http.server.BaseHTTPRequestHandler):
    """A tracking server that answers its health check, then goes away at the first API call:
    the connection is dropped and the port closed, as when a server is stopped mid-run."""

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/health":
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")
            return
        self.close_connection = True
        threading.Thread(target=self._stop, daemon=True).start()

    def _stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()  # the port refuses connections from now on

    do_POST = do_GET

    def log_message(self, *args) -> None:  # no request log on the test's stderr
        pass


def test_a_tracking_server_gone_mid_run_ends_in_one_line(project, monkeypatch):
    """MLflow retries a refused request for minutes by default; one retry keeps the test short."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), DiesAfterHealth)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    reports = snapshot(project.root / "reports")
    try:
        result = cli(project, "evaluate")
    finally:
        server.shutdown()
        server.server_close()
        serving.join(timeout=10)

    assert result.exit_code == 1, result.output
    line = one_line(result)
    assert line.startswith(f"the MLflow store {uri} did not answer; start the server, or unset")
    assert snapshot(project.root / "reports") == reports  # it stopped before replacing them


def test_a_store_locked_mid_training_fails_the_run_once_the_lock_is_gone(project, tmp_path):
    """The lock comes after the first epochs were logged and stays 30 s: the next epoch's write
    gives up after MLflow's 20 s busy timeout, then the run is marked FAILED once it can be."""
    # Trains until stopped, one cell at a time in the stage's own process.
    edit_train(project, epochs=100000, early_stopping_patience=None, parallel_cells=1)
    uri = f"sqlite:///{project.mlflow_db}"
    client = MlflowClient(uri)
    trainer = processes.spawn(
        [Path(sys.executable).parent / "mlpstudy", "train", "--root", project.root],
        log=tmp_path / "train.out",
        errors=tmp_path / "train.err",
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
    )
    deadline = time.monotonic() + 180
    while not _epochs_logged(client):
        assert time.monotonic() < deadline and trainer.process.poll() is None, trainer.output()
        time.sleep(0.5)
    holder = processes.spawn(
        [sys.executable, "-c", HOLD_LOCK, str(project.mlflow_db), "30"], log=tmp_path / "lock.log"
    )
    try:
        code = trainer.wait(timeout=180)
    finally:
        holder.kill()

    assert code == 1, trainer.output()[-3000:]
    line = error_line((tmp_path / "train.err").read_text())
    cell_failed(line, f"StageError: the MLflow store {project.mlflow_db} is locked by another")
    assert "then run the same command (or `dvc repro`) again (database is locked))" in line
    statuses = run_statuses(uri)
    assert "RUNNING" not in statuses and statuses.count("FAILED") == 1, statuses


def _epochs_logged(client: MlflowClient) -> bool:
    """Whether a RUNNING run (the one the child trains) has logged an epoch."""
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="attributes.status = 'RUNNING'",
    )
    return any("val_loss" in run.data.metrics for run in runs)


# ------------------------------------------------------------------- read-only and full disks
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB tmpfs at tmp_path/disk, unmounted afterwards; skips where mount is refused."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = processes.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], timeout=30
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): needs root in a VM")
    try:
        yield disk
    finally:
        processes.run(["umount", "-l", str(disk)], timeout=30)


def remount(disk: Path, option: str) -> None:
    processes.run(["mount", "-o", f"remount,{option}", str(disk)], timeout=30, check=True)


def test_a_store_on_a_read_only_disk_ends_in_one_line_and_no_run(project, small_disk, monkeypatch):
    database = small_disk / "mlflow.db"
    shutil.copy(project.mlflow_db, database)
    uri = f"sqlite:///{database}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    remount(small_disk, "ro")

    result = cli(project, "report")

    assert result.exit_code == 1
    line = one_line(result)
    assert line == (
        f"{database}-lock: cannot be created (Read-only file system), so the MLflow store beside "
        "it cannot be written; make its folder writable, or set MLFLOW_TRACKING_URI to a "
        "writable store, then run the same command (or `dvc repro`) again"
    )
    assert run_statuses(uri) == ["FINISHED"]  # the cell's run; no report run


def test_a_project_on_a_read_only_disk_stops_evaluate_before_any_work(project, small_disk):
    """Found before the work starts, so it is bad input (exit code 2) like a file in the way."""
    moved = small_disk / "project"
    shutil.copytree(project.root, moved, ignore=shutil.ignore_patterns("mlartifacts"))
    paths = Paths.at(moved)
    before = snapshot(moved)
    remount(small_disk, "ro")

    result = cli(paths, "evaluate")

    assert result.exit_code == 2, result.output
    assert one_line(result) == (
        "data/exported: not writable (Read-only file system); make it writable, then run "
        "`dvc repro evaluate` again"
    )
    assert snapshot(moved) == before


def fill(disk: Path, keep: int = 0) -> None:
    """Fill `disk` to the last byte, then free `keep` bytes again."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass
    if keep:
        os.truncate(filler, max(filler.stat().st_size - keep, 0))


def test_a_full_disk_mid_evaluate_ends_in_one_line_with_no_partial_file(project, small_disk):
    """The project lives on the full disk; evaluate replaces its outputs, then cannot write."""
    moved = small_disk / "project"
    shutil.copytree(project.root, moved, ignore=shutil.ignore_patterns("mlartifacts"))
    paths = Paths.at(moved)
    for folder in paths.evaluate_outputs:
        shutil.rmtree(folder)
    fill(small_disk)

    result = cli(paths, "evaluate")

    assert result.exit_code == 1, result.output
    line = one_line(result)
    assert "No space left on device: the disk is full; free space there (`df -h`)" in line
    assert line.startswith(str(moved))  # names the file it could not write
    assert leftovers(moved) == []
    assert run_statuses(f"sqlite:///{paths.mlflow_db}") == ["FINISHED"]


def test_a_full_disk_mid_report_leaves_no_empty_experiment_and_no_run(
    project, small_disk, tmp_path, monkeypatch
):
    """A new store: the report checks it first, but opens (creates) its experiment only to log."""
    moved = small_disk / "project"
    shutil.copytree(project.root, moved, ignore=shutil.ignore_patterns("mlartifacts", "data"))
    store = tmp_path / "new-store" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    fill(small_disk)

    result = cli(Paths.at(moved), "report")

    assert result.exit_code == 1, result.output
    line = one_line(result)
    assert line.startswith(f"{moved}/reports/study/")
    assert "No space left on device: the disk is full" in line
    assert not store.exists()  # checked, not created: no empty experiment
    assert leftovers(moved) == []


def test_a_full_disk_mid_training_leaves_the_run_failed_not_running(project, small_disk, tmp_path):
    """Training writes a checkpoint every epoch onto the full disk; the store is elsewhere.
    HDF5 would crash the process on a full disk: the checkpoint checks the room first."""
    moved = small_disk / "project"
    shutil.copytree(project.root, moved, ignore=shutil.ignore_patterns("mlartifacts", "data"))
    shutil.copytree(project.prepared, moved / "data" / "prepared")
    store = tmp_path / "store" / "mlflow.db"
    store.parent.mkdir()
    shutil.copy(project.mlflow_db, store)
    uri = f"sqlite:///{store}"
    edit_train(Paths.at(moved), parallel_cells=1)  # trains in the stage's own process
    fill(small_disk, keep=16384)  # room for the run file, not for the first epoch's checkpoint
    command = [Path(sys.executable).parent / "mlpstudy", "train"]

    result = processes.run(
        [*command, "--root", moved], env={**os.environ, "MLFLOW_TRACKING_URI": uri}, timeout=300
    )

    assert result.returncode == 1, result.stderr[-3000:]
    line = error_line(result.stderr)
    cell_failed(line, "No space left on device: the disk is full; free space there (`df -h`)")
    assert "mlflow_run.json" not in line  # it failed in training, not before
    statuses = run_statuses(uri)
    assert statuses.count("FAILED") == 1 and "RUNNING" not in statuses, statuses
    assert leftovers(moved) == []


# ------------------------------------------------------------------------- a model file broken
def test_a_truncated_model_file_is_bad_input_named_in_one_line(project):
    model = project.model_file(CELL.key)
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2])
    reports = snapshot(project.root / "reports")

    result = cli(project, "evaluate")

    assert result.exit_code == 2
    assert one_line(result) == (
        f"data/models/{CELL.key}/model.keras: not a Keras model (a `.keras` file saved by "
        f"Keras 3); delete data/models/{CELL.key}/ (if any) and run `dvc repro train`"
    )
    assert snapshot(project.root / "reports") == reports


def test_a_model_file_with_damaged_weights_is_bad_input_named_in_one_line(project):
    """The archive's index is intact but the weights inside are not: Keras fails to load it."""
    import zipfile

    model = project.model_file(CELL.key)
    with zipfile.ZipFile(model) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    weights = next(name for name in entries if name.endswith(".h5"))
    entries[weights] = entries[weights][: len(entries[weights]) // 2]
    with zipfile.ZipFile(model, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    reports = snapshot(project.root / "reports")

    result = cli(project, "evaluate")

    assert result.exit_code == 2  # bad input, found when a worker loads the model
    line = one_line(result)
    assert line.startswith(
        f"evaluate: 1 of 1 cells failed ({CELL.key}: data/models/{CELL.key}/model.keras: "
        "cannot load the Keras model ("
    )
    assert f"; delete data/models/{CELL.key}/ (if any) and run `dvc repro train`); " in line
    assert snapshot(project.root / "reports") == reports
    assert run_statuses(f"sqlite:///{project.mlflow_db}") == ["FINISHED"]
