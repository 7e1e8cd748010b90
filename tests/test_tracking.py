"""The MLflow store, experiment and runs, on real sqlite stores under tmp_path."""

from __future__ import annotations

import os
import socket
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import processes
import pytest
from mlflow.tracking import MlflowClient
from project import shrunk_cell
from training import split_inputs

from stages.lib.core.config import ConfigError
from stages.lib.core.errors import StageError
from stages.lib.core.paths import Paths
from stages.lib.tracking import runs, tracking, tracking_log

STUDY = "test-study"


@pytest.fixture(autouse=True)
def no_tracking_environment(monkeypatch):
    """Tests choose the store themselves: nothing from the caller's environment leaks in."""
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_STAGE", "DVC_EXP_NAME"):
        monkeypatch.delenv(name, raising=False)


def test_store_is_mlflow_db_at_the_root_unless_dvc_root_or_the_environment_says_otherwise(
    tmp_path, monkeypatch
):
    paths = Paths.at(tmp_path / "project")

    assert tracking.tracking_uri(paths) == f"sqlite:///{tmp_path / 'project' / 'mlflow.db'}"
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "dvc-root"))
    assert tracking.tracking_uri(paths) == f"sqlite:///{tmp_path / 'dvc-root' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.invalid:5000")
    assert tracking.tracking_uri(paths) == "http://tracking.invalid:5000"


def test_open_experiment_creates_the_store_and_one_experiment_with_artifacts_at_the_root(tmp_path):
    paths = Paths.at(tmp_path)

    first = tracking.open_experiment(STUDY, paths)
    second = tracking.open_experiment(STUDY, paths)

    assert paths.mlflow_db.is_file()
    assert first == second
    experiment = MlflowClient(first.tracking_uri).get_experiment(first.experiment_id)
    assert experiment.name == STUDY
    assert experiment.artifact_location == paths.mlflow_artifacts.as_uri()


def test_a_deleted_experiment_is_reported_not_written_into(tmp_path):
    paths = Paths.at(tmp_path)
    experiment = tracking.open_experiment(STUDY, paths)
    experiment.client.delete_experiment(experiment.experiment_id)

    with pytest.raises(StageError, match=f"experiment '{STUDY}' is deleted.*restore"):
        tracking.open_experiment(STUDY, paths)


@pytest.mark.slow
def test_two_processes_creating_a_fresh_store_at_once_both_succeed(tmp_path):
    script = textwrap.dedent(
        f"""
        from stages.lib.tracking import tracking
        from stages.lib.core.paths import Paths
        print(tracking.open_experiment({STUDY!r}, Paths.at({str(tmp_path)!r})).experiment_id)
        """
    )
    children = [
        processes.spawn(
            [sys.executable, "-c", script], log=tmp_path / f"{n}.out", errors=tmp_path / f"{n}.err"
        )
        for n in (1, 2)
    ]
    codes = [child.wait(timeout=120) for child in children]

    assert codes == [0, 0], [child.output()[-2000:] for child in children]
    outputs = [(tmp_path / f"{n}.out").read_text().strip() for n in (1, 2)]
    assert outputs[0] == outputs[1] != ""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [e.name for e in client.search_experiments()].count(STUDY) == 1


def test_an_unreachable_tracking_server_stops_with_its_uri(tmp_path, monkeypatch):
    with socket.socket() as sock:  # a port that nothing listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    with pytest.raises(StageError, match=f"MLFLOW_TRACKING_URI.*{uri}.*not reachable"):
        tracking.open_experiment(STUDY, Paths.at(tmp_path))
    with pytest.raises(StageError, match=uri), tracking.open_run("0" * 32, Paths.at(tmp_path)):
        pass  # pragma: no cover - never reached


def test_runs_are_created_found_and_continued_by_id(tmp_path):
    paths = Paths.at(tmp_path)
    experiment = tracking.open_experiment(STUDY, paths)
    client = experiment.client
    cell_run = runs.create_run(
        experiment, "relu-he_normal-adam-0", {"optimizer.learning_rate": "0.001"}, {"kind": "cell"}
    )
    client.create_run(experiment.experiment_id, run_name="report", tags={"kind": "report"})

    runs.set_tags(experiment, cell_run, {"device": "CPU:0"})
    with tracking.open_run(cell_run, paths):
        tracking_log.log_summary(client, cell_run, {"test_accuracy": 0.9, "device": "CPU:0"})
    tracking_log.log_summary(client, cell_run, {"test_accuracy": 0.1})  # already there: skipped

    found = runs.find_runs(STUDY, experiment.tracking_uri)
    assert [run.info.run_id for run in found] == [cell_run]
    run = found[0]
    assert run.info.run_name == "relu-he_normal-adam-0"
    assert run.info.status == "FINISHED"
    assert run.data.params == {"optimizer.learning_rate": "0.001"}
    assert run.data.tags["device"] == "CPU:0"
    assert [m.value for m in client.get_metric_history(cell_run, "test_accuracy")] == [0.9]
    assert runs.run_exists(experiment, cell_run)
    assert not runs.run_exists(experiment, "f" * 32)
    assert runs.find_runs("no-such-study", experiment.tracking_uri) == []


def test_metrics_are_logged_per_step_and_logged_steps_are_known(tmp_path):
    experiment = tracking.open_experiment(STUDY, Paths.at(tmp_path))
    client = experiment.client
    run_id = runs.create_run(experiment, "cell", {}, {"kind": "cell"})

    for step in (1, 2):
        tracking_log.log_metrics(client, run_id, step, {"val_loss": 1.0 / step, "x": 0.0}, 0)

    assert tracking_log.logged_steps(client, run_id, "val_loss") == {1, 2}
    assert [m.value for m in client.get_metric_history(run_id, "val_loss")] == [1.0, 0.5]
    assert tracking_log.logged_steps(client, run_id, "never_logged") == set()


@pytest.mark.slow
def test_writers_that_record_the_same_new_splits_at_once_all_succeed(mlflow_server):
    """A server looks a dataset up and then inserts it, so writers that use a new split at the
    same moment race on its unique key: two stages starting together against one server (and,
    before the stage recorded the splits on the grid's parent first, two cells). Without the
    retry, 4 of 5 runs of this test with 20 rounds failed; it has 30."""
    client = MlflowClient(mlflow_server)
    experiment_id = client.create_experiment(STUDY)
    images, labels = np.zeros((50, 28, 28), np.uint8), np.arange(50, dtype=np.uint8) % 10
    splits = {"train": (images, labels), "validation": (images[:10], labels[:10])}
    files = {"train": "/data/train.npz", "validation": "/data/validation.npz"}
    writers = 4

    def record(run_id: str, start: threading.Barrier, digests: dict[str, str]) -> None:
        start.wait()
        tracking_log.log_splits(client, run_id, splits, files, digests)

    for round_ in range(30):
        digests = {"train": f"{round_:064x}", "validation": f"{round_ + 100:064x}"}
        run_ids = [client.create_run(experiment_id).info.run_id for _ in range(writers)]
        start = threading.Barrier(writers)
        with ThreadPoolExecutor(writers) as pool:
            for done in [pool.submit(record, run_id, start, digests) for run_id in run_ids]:
                done.result()  # raises what a writer raised

        expected = {
            ("mnist-train", "training", digests["train"][:32]),
            ("mnist-validation", "validation", digests["validation"][:32]),
        }
        assert all(split_inputs(client.get_run(run_id)) == expected for run_id in run_ids), round_


def test_git_commit_of_a_repository_or_unknown(tmp_path):
    repository = tmp_path / "repo"
    repository.mkdir()
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    for command in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "x"]):
        processes.run(["git", "-C", repository, *command], check=True, env=env, timeout=60)
    head = processes.run(
        ["git", "-C", repository, "rev-parse", "HEAD"], check=True, timeout=60
    ).stdout.strip()

    assert runs.git_commit(repository) == head
    assert len(head) == 40
    assert runs.git_commit(Path(tmp_path / "not-a-repo")) == "unknown"


@pytest.mark.slow
def test_every_search_reads_all_pages(tmp_path, monkeypatch):
    """More results than one page holds: MLflow returns 1000 per call at most (its default)."""
    from stages.lib.reporting import compare, report_run

    paths = Paths.at(tmp_path)
    experiment = tracking.open_experiment(STUDY, paths)
    client = experiment.client
    for _ in range(runs.PAGE_SIZE + 1):
        client.create_run(experiment.experiment_id, tags={"kind": report_run.REPORT_KIND})
    assert len(report_run.report_runs(experiment)) == runs.PAGE_SIZE + 1

    monkeypatch.setattr(runs, "PAGE_SIZE", 2)  # the same paging on a few results
    cells = [runs.create_run(experiment, f"cell-{n}", {}, {"kind": "cell"}) for n in range(5)]
    others = [f"other-{n}" for n in range(3)]
    for name in others:
        client.create_experiment(name)
    found = runs.find_runs(STUDY, experiment.tracking_uri)
    assert sorted(run.info.run_id for run in found) == sorted(cells)
    with pytest.raises(ConfigError, match=", ".join(sorted([*others, STUDY]))):
        compare.load_runs(experiment.tracking_uri, "no-such-study")


def test_a_reused_run_s_dvc_exp_tag_names_the_experiment_running_now_or_goes(tmp_path, monkeypatch):
    from stages.lib.training import checkpoint, mlflow_run

    experiment = tracking.open_experiment(STUDY, Paths.at(tmp_path))
    client = experiment.client
    cell = shrunk_cell("relu", "he_normal", "adam", 0)
    folder = tmp_path / "checkpoint"
    monkeypatch.setenv("DVC_EXP_NAME", "exp-a")
    tags = {"kind": "cell", runs.DVC_EXP_TAG: "exp-a"}
    run_id = mlflow_run.continue_or_create(experiment, folder, cell, {}, tags)
    assert client.get_run(run_id).data.tags[runs.DVC_EXP_TAG] == "exp-a"

    monkeypatch.delenv("DVC_EXP_NAME")  # resumed in the workspace, outside the experiment
    kind = {"kind": "cell"}
    assert mlflow_run.continue_or_create(experiment, folder, cell, {}, kind) == run_id
    assert checkpoint.read_run_file(folder)["run_id"] == run_id
    assert runs.DVC_EXP_TAG not in client.get_run(run_id).data.tags

    monkeypatch.setenv("DVC_EXP_NAME", "exp-b")  # e.g. evaluate in another experiment
    runs.refresh_dvc_exp(client, run_id)
    assert client.get_run(run_id).data.tags[runs.DVC_EXP_TAG] == "exp-b"
    monkeypatch.delenv("DVC_EXP_NAME")
    runs.refresh_dvc_exp(client, run_id)
    assert runs.DVC_EXP_TAG not in client.get_run(run_id).data.tags


def test_a_checkpoint_whose_run_left_the_store_starts_a_new_run_from_scratch(tmp_path):
    """A store deleted (or another one chosen) after a kill: the run to continue is gone, so its
    epochs are not continued into a new run; training starts over."""
    from stages.lib.training import checkpoint, mlflow_run

    experiment = tracking.open_experiment(STUDY, Paths.at(tmp_path))
    cell = shrunk_cell("relu", "he_normal", "adam", 0)
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / checkpoint.METADATA_FILE).write_text('{"epoch": 2, "state": {}}')
    checkpoint.update_run_file(folder, run_id="f" * 32)

    run_id = mlflow_run.continue_or_create(experiment, folder, cell, {"seed": "0"}, {"k": "v"})

    assert run_id != "f" * 32
    assert runs.run_exists(experiment, run_id)
    assert checkpoint.read_run_file(folder) == {"run_id": run_id}
    assert checkpoint.load(folder) is None  # the old epochs are gone
    run = experiment.client.get_run(run_id)
    assert run.info.run_name == cell.key and run.data.params == {"seed": "0"}
    assert run.data.tags["k"] == "v"
