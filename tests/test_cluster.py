"""The train and evaluate stages on a real Dask cluster: a scheduler and two worker processes on
127.0.0.1, started by each test (`dask scheduler`, `dask worker`) and always stopped; and the
default LocalCluster. Faults are real: a worker SIGKILLed mid-cell, a cell that kills its worker
every time, a worker of other versions (both injected with Dask's own `--preload` of a test
module), a model that does not load."""

from __future__ import annotations

import csv
import os
import re
import signal
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import dask
import numpy as np
import processes
import psutil
import pytest
import trivial_cells
import yaml
from conftest import free_port
from distributed import Client, LocalCluster
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from project import BIN, TINY, make_project, run, shrink, shrunk_cell
from training import committed_epochs

from stages.lib.cluster import engine, recycling
from stages.lib.core.config import ConfigError
from stages.lib.core.errors import StageError
from stages.lib.core.paths import Paths
from stages.lib.training import checkpoint

pytestmark = pytest.mark.slow

EPOCHS = 8  # a cell trains for seconds: wide windows to kill a worker in
CELLS = [
    shrunk_cell("relu", "glorot_uniform", name, 0, batch_size=16).key for name in ("adam", "sgd")
]
FAULTS = Path(__file__).with_name("worker_faults.py")


def slow_cells(params: dict[str, Any]) -> None:
    """Two cells of a few seconds each: long enough to kill a worker in the middle of one."""
    shrink(params)
    train = params["train"]
    train.update(optimizer=["adam", "sgd"], epochs=EPOCHS, batch_size=[16])
    train["architectures"][TINY["architecture"]] = [64]
    train["early_stopping_patience"] = None


def set_parallel(project: Path, cells: int, stage: str = "train") -> None:
    file = project / "params.yaml"
    params = yaml.safe_load(file.read_text())
    params[stage]["parallel_cells"] = cells
    file.write_text(yaml.safe_dump(params, sort_keys=False))


class Cluster:
    """A scheduler and two workers on 127.0.0.1 (each `dask worker` its own process)."""

    def __init__(self, folder: Path, env: dict[str, str], nanny: bool, preload: str | None):
        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        env = {**env, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
        if preload:
            env["MLPSTUDY_TEST_FAULT"] = preload
        self.scheduler = processes.spawn(
            [
                BIN / "dask",
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
            ],
            log=folder / "scheduler.log",
            env=env,
        )
        worker = [BIN / "dask", "worker", self.address, "--nthreads", "1", "--host", "127.0.0.1"]
        worker += ["--no-dashboard", "--nanny" if nanny else "--no-nanny"]
        worker += ["--preload", str(FAULTS)] if preload else []
        self.workers = [
            processes.spawn(worker, log=folder / f"worker-{index}.log", env=env)
            for index in range(2)
        ]
        self.client = Client(self.address, timeout="60s")
        self.client.wait_for_workers(2, timeout=120)

    def worker_pids(self) -> dict[str, int]:
        return self.client.run(os.getpid)

    def stop(self) -> None:
        self.client.close()
        for child in [*self.workers, self.scheduler]:
            child.kill()

    def logs(self) -> str:
        return "\n".join(child.output()[-2000:] for child in [self.scheduler, *self.workers])


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Cluster] = []

    def start(env: dict[str, str], *, nanny: bool = False, preload: str | None = None) -> Cluster:
        folder = tmp_path / f"cluster-{len(started)}"
        folder.mkdir()
        started.append(Cluster(folder, env, nanny, preload))
        return started[-1]

    yield start
    for cluster in started:
        cluster.stop()


def history(project: Path, key: str) -> list[dict[str, str]]:
    with (Paths.at(project).train_reports(key) / "history.csv").open(newline="") as handle:
        return [
            {name: value for name, value in row.items() if name != "epoch_seconds"}
            for row in csv.DictReader(handle)
        ]


def weights(project: Path, key: str) -> list[np.ndarray]:
    import keras

    return keras.models.load_model(Paths.at(project).model_file(key)).get_weights()


def cell_runs(project: Path) -> dict[str, list[Any]]:
    client = MlflowClient(f"sqlite:///{Paths.at(project).mlflow_db}")
    study = yaml.safe_load((project / "params.yaml").read_text())["study"]["name"]
    experiment = client.get_experiment_by_name(study)
    found = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ACTIVE_ONLY)
    runs: dict[str, list[Any]] = {}
    for found_run in found:
        if found_run.data.tags.get("kind") == "cell":
            runs.setdefault(found_run.data.tags["cell"], []).append(found_run)
    return runs


def prepared_project(tmp_path: Path, name: str) -> tuple[Path, dict[str, str]]:
    project, env = make_project(tmp_path / name, slow_cells, n_train=6000)
    run(project, env, str(BIN / "dvc"), "repro", "preprocess")
    env = {key: value for key, value in env.items() if key != "DVC_ROOT"}
    return project, env


def checkpoints_in_progress(project: Path) -> list[Path]:
    """The checkpoint folders of cells that have committed an epoch and have two or more left:
    training right now, with time for a kill to land before they finish."""
    return [
        metadata.parent
        for metadata in Paths.at(project).checkpoints.glob(f"*/{checkpoint.METADATA_FILE}")
        if 1 <= committed_epochs(metadata.parent) <= EPOCHS - 2
    ]


def wait_for_checkpoint(project: Path, child: processes.Child) -> None:
    """Until a cell is training with a committed epoch."""
    deadline = time.monotonic() + 300
    while not checkpoints_in_progress(project):
        assert child.process.poll() is None, child.output()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)


def worker_training_a_checkpointed_cell(
    child: processes.Child, cluster: Cluster
) -> tuple[str, str]:
    """(worker address, cell key) of a cell that is training on the cluster right now with an
    epoch committed and two or more left, whichever worker started first and however far apart.

    Read where a user reads it: the stage's progress lines. A cell announced at epoch 2 has
    committed epoch 1 (each epoch's checkpoint is committed before the next epoch starts).
    """
    deadline = time.monotonic() + 300
    while True:
        assert child.process.poll() is None, child.output()[-3000:]
        assert time.monotonic() < deadline, "no cell past its first epoch within 300 s"
        output = child.output()
        finished = set(re.findall(r"^train \[\d+/\d+\] (\S+):", output, re.M))
        last_epoch = dict(re.findall(rf"^train (\S+) epoch (\d+)/{EPOCHS}:", output, re.M))
        training = [
            key
            for key, epoch in last_epoch.items()
            if key not in finished and 2 <= int(epoch) <= EPOCHS - 2
        ]
        for address, tasks in cluster.client.processing().items():
            for key in training:
                if any(f"train-{key}-" in task for task in tasks):
                    return address, key
        time.sleep(0.05)


def test_a_worker_killed_mid_cell_is_replaced_and_the_numbers_match_one_worker(
    tmp_path, cluster_factory
) -> None:
    alone, env = prepared_project(tmp_path, "alone")
    set_parallel(alone, 1)
    run(alone, env, str(BIN / "mlpstudy"), "train")  # one worker: a thread of this process

    project, env = prepared_project(tmp_path, "cluster")
    cluster = cluster_factory(env)
    pids = cluster.worker_pids()
    remote = {**env, "DASK_SCHEDULER_ADDRESS": cluster.address}
    child = processes.spawn(
        [BIN / "mlpstudy", "train"], log=tmp_path / "train.log", cwd=project, env=remote
    )
    victim, killed = worker_training_a_checkpointed_cell(child, cluster)
    os.kill(pids[victim], signal.SIGKILL)

    assert child.wait(timeout=600) == 0, child.output()[-4000:] + cluster.logs()
    output = child.output()
    assert f"train: on 2 workers at {cluster.address}" in output
    assert re.search(
        rf"^train {re.escape(killed)}: \d epochs? trained before; training on", output, re.M
    )
    for key in CELLS:  # bitwise what one worker trained, the killed cell included
        assert history(project, key) == history(alone, key), key
        assert all(
            np.array_equal(a, b)
            for a, b in zip(weights(project, key), weights(alone, key), strict=True)
        ), key
    runs = cell_runs(project)
    assert sorted(runs) == sorted(CELLS) and all(len(found) == 1 for found in runs.values())
    client = MlflowClient(f"sqlite:///{Paths.at(project).mlflow_db}")
    steps = [m.step for m in client.get_metric_history(runs[killed][0].info.run_id, "val_loss")]
    assert steps == list(range(1, EPOCHS + 1))  # one run, continued: no epoch lost or repeated
    assert not list(Paths.at(project).checkpoints.glob("*"))


def six_quick_cells(params: dict[str, Any]) -> None:
    shrink(params)
    params["train"].update(optimizer=["adam", "sgd"], seed=[0, 1, 2])


def restart_lines(output: str) -> list[str]:
    """The lines a stage printed for LocalCluster workers restarted after one cell each."""
    return re.findall(
        r"^train: worker tcp://127\.0\.0\.1:\d+ restarts after 1 cell: [\d.]+ GiB resident, "
        r"over 0% of its [\d.]+ GiB limit",
        output,
        flags=re.M,
    )


def test_workers_restart_between_cells_past_their_memory_share_and_each_cell_trains_once(
    tmp_path,
) -> None:
    """A memory share of 0 restarts each LocalCluster worker after every cell: no cell is cut
    off or trained twice, and the numbers are one in-process worker's, which never restarts."""
    alone, env = make_project(tmp_path / "alone", six_quick_cells)
    set_parallel(alone, 1)
    recycle_always = {**env, "DASK_MLPSTUDY__WORKER_RECYCLE_FRACTION": "0"}
    first = run(alone, recycle_always, str(BIN / "dvc"), "repro", "train")
    assert "restarts after" not in first  # a worker thread of the stage: nothing to restart

    project, env = make_project(tmp_path / "recycled", six_quick_cells)
    set_parallel(project, 2)
    output = run(
        project,
        {**env, "DASK_MLPSTUDY__WORKER_RECYCLE_FRACTION": "0"},
        str(BIN / "dvc"),
        "repro",
        "train",
    )

    assert len(restart_lines(output)) >= 4, output[-4000:]  # each worker twice, at least
    keys = sorted(cell_runs(alone))
    assert len(keys) == 6
    for key in keys:  # trained once: one first epoch announced, one MLflow run
        assert len(re.findall(rf"^train {re.escape(key)} epoch 1/1:", output, re.M)) == 1, key
        assert history(project, key) == history(alone, key), key
        assert all(
            np.array_equal(a, b)
            for a, b in zip(weights(project, key), weights(alone, key), strict=True)
        ), key
    assert {key: len(found) for key, found in cell_runs(project).items()} == dict.fromkeys(keys, 1)
    assert not list(Paths.at(project).checkpoints.glob("*"))  # nor a lock file left behind


def run_trivial_cells(client: Client, count: int) -> None:
    """Run `count` trivial cells on `client`'s cluster, each worker restarting after every cell
    (a memory share of 0). Checks that each cell ran once and none failed."""
    cells = [trivial_cells.Cell(f"cell-{index}") for index in range(count)]
    started: list[str] = []
    done: list[str] = []
    with dask.config.set({recycling.SETTING: 0}):
        failures = engine.run(
            client,
            "train",
            trivial_cells.sleep,
            cells,
            None,
            done.append,
            on_event=lambda message: started.append(message["started"]),
        )
    assert failures == [], failures
    keys = [cell.key for cell in cells]
    assert sorted(done) == sorted(keys)
    assert Counter(started) == dict.fromkeys(keys, 1)  # each cell ran once: none cut off or rerun


def test_workers_restarted_after_every_cell_send_back_the_cells_sent_to_them(capsys) -> None:
    """Each of two workers restarts after every cell. The scheduler sends a worker its next cell
    before it hears that the worker takes no more: that cell goes back and runs on another
    worker, instead of dying with its worker (a cell whose worker dies twice fails). The 20
    cells also outlast Dask's 15 s check for lost workers, which must not take a restarting
    worker away for good."""
    with engine.connect(2) as client:
        run_trivial_cells(client, 20)
        client.wait_for_workers(2, timeout=60)  # both workers are back after their last restart
    assert len(restart_lines(capsys.readouterr().out)) >= 10


@pytest.mark.timeout(300)  # without the fix, each restart waited a minute
def test_a_lone_worker_restarted_after_every_cell_runs_each_cell_once(capsys) -> None:
    """On a cluster of one worker (a scheduler of its own), the worker waits for the stage to
    take its result before it restarts; the stage lets go of each result once handled, not when
    the next cell ends, which only this worker can run (else each restart waits a minute and
    then loses the result, so its cell runs again)."""
    with (
        mock.patch.dict(os.environ),  # Dask's nanny leaves MALLOC_TRIM_THRESHOLD_ in it
        LocalCluster(
            n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        run_trivial_cells(client, 4)
    assert len(restart_lines(capsys.readouterr().out)) >= 3


def evaluate_files(project: Path) -> dict[str, bytes]:
    """Every file evaluate wrote (the cells' records included), by its path in the project."""
    paths = Paths.at(project)
    return {
        file.relative_to(project).as_posix(): file.read_bytes()
        for folder in paths.evaluate_outputs
        for file in sorted(folder.rglob("*"))
        if file.is_file()
    }


def test_evaluate_on_two_workers_writes_the_bytes_of_one_worker_and_a_bad_model_fails_alone(
    tmp_path, cluster_factory
) -> None:
    """evaluate's cells on a real scheduler and two workers, then on a LocalCluster of two
    processes: every file byte for byte what the stage's own process writes, each cell's files
    logged into its own run; a model that does not load fails its cell only, in one line."""
    project, env = make_project(tmp_path / "project", six_quick_cells)
    run(project, env, str(BIN / "dvc"), "repro", "train")
    env = {key: value for key, value in env.items() if key != "DVC_ROOT"}
    run(project, env, str(BIN / "mlpstudy"), "evaluate")  # parallel_cells 1: this process
    expected = evaluate_files(project)
    paths = Paths.at(project)
    keys = sorted(cell_runs(project))
    assert len(keys) == 6 and len(expected) == 6 * 8

    for key in keys:  # every cell pending again, its files still there to be replaced
        paths.evaluate_record(key).unlink()
    cluster = cluster_factory(env)
    remote = {**env, "DASK_SCHEDULER_ADDRESS": cluster.address}
    output = run(project, remote, str(BIN / "mlpstudy"), "evaluate")
    assert f"evaluate: 6 cells on 2 workers at {cluster.address}" in output
    assert "evaluate: 6 cells evaluated, 0 up to date" in output
    progress = [line for line in output.splitlines() if line.startswith("evaluate [")]
    assert [line.split("]")[0] for line in progress] == [f"evaluate [{n}/6" for n in range(1, 7)]
    for line in progress[:5]:
        assert re.search(r": test accuracy [01]\.\d{4} \| ~\d+ s left$", line), line
    assert progress[5].endswith(" | all evaluated"), progress
    assert evaluate_files(project) == expected
    client = MlflowClient(f"sqlite:///{paths.mlflow_db}")
    for key, (found,) in cell_runs(project).items():
        logged = {item.path for item in client.list_artifacts(found.info.run_id, "evaluation")}
        assert "evaluation/confusion.png" in logged and "evaluation/metrics.json" in logged, key
        history = client.get_metric_history(found.info.run_id, "test/accuracy")
        assert len(history) == 1, key  # the same value again: no new point

    broken, model = keys[0], paths.model_file(keys[0])
    original = model.read_bytes()
    for key in keys:
        paths.evaluate_record(key).unlink()
    with zipfile.ZipFile(model, "w") as archive:  # passes the cheap check, does not load
        archive.writestr("config.json", "{}")
        archive.writestr("metadata.json", "{}")
    set_parallel(project, 2, "evaluate")  # a LocalCluster of two worker processes
    result = processes.run([BIN / "mlpstudy", "evaluate"], cwd=project, env=env, timeout=600)
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]  # bad input
    assert "evaluate: 6 cells on 2 workers (a LocalCluster on 127.0.0.1)" in result.stdout
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(
        f"error: evaluate: 1 of 6 cells failed ({broken}: "
        f"data/models/{broken}/model.keras: cannot load the Keras model"
    ), line
    assert line.endswith(
        "the 5 others are saved; run `dvc repro evaluate` again to evaluate only the failed ones"
    )
    assert "Traceback" not in result.stderr, result.stderr[-5000:]
    assert not paths.evaluate_record(broken).exists()
    assert all(paths.evaluate_record(key).is_file() for key in keys[1:])

    model.write_bytes(original)
    output = run(project, env, str(BIN / "mlpstudy"), "evaluate")
    assert "evaluate: 1 cell evaluated, 5 up to date" in output
    assert evaluate_files(project) == expected


def test_a_bad_worker_memory_share_is_refused_before_any_cluster_starts(tmp_path) -> None:
    project, env = make_project(tmp_path, shrink)
    run(project, env, str(BIN / "dvc"), "repro", "preprocess")
    bad = {**env, "DASK_MLPSTUDY__WORKER_RECYCLE_FRACTION": "1.5"}

    result = processes.run([BIN / "mlpstudy", "train"], cwd=project, env=bad)

    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: Dask setting mlpstudy.worker-recycle-fraction "
        "(DASK_MLPSTUDY__WORKER_RECYCLE_FRACTION) is 1.5; allowed: a number from 0 to 1, the "
        "share of a worker's memory limit at which it restarts between cells"
    )
    assert not Paths.at(project).checkpoints.exists()


def test_a_cell_that_kills_its_worker_every_time_fails_alone_after_one_retry(
    tmp_path, cluster_factory
) -> None:
    project, env = prepared_project(tmp_path, "project")
    crashing = CELLS[0]
    cluster = cluster_factory(env, nanny=True, preload=f"crash:{crashing}")
    remote = {**env, "DASK_SCHEDULER_ADDRESS": cluster.address}

    result = processes.run([BIN / "mlpstudy", "train"], cwd=project, env=remote, timeout=600)

    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: train: 1 of 2 cells failed ({crashing}: its worker died")
    assert "2 times" in line and "run `dvc repro train` again" in line
    assert "Traceback" not in result.stderr
    paths = Paths.at(project)
    assert (paths.model_file(CELLS[1])).is_file()  # the other cell finished and was saved
    assert not paths.model_dir(crashing).exists()
    cluster.client.wait_for_workers(2, timeout=60)  # both alive again: their nannies restarted them


def test_a_worker_of_other_versions_is_refused_in_one_line_before_any_cell_trains(
    tmp_path, cluster_factory
) -> None:
    project, env = prepared_project(tmp_path, "project")
    cluster = cluster_factory(env, preload="tensorflow:0.0.1")
    remote = {**env, "DASK_SCHEDULER_ADDRESS": cluster.address}

    result = processes.run([BIN / "mlpstudy", "train"], cwd=project, env=remote, timeout=300)

    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    expected = re.compile(
        r"error: Dask worker tcp://127\.0\.0\.1:\d+ runs tensorflow 0\.0\.1 where this stage runs "
        r"2\.21\.\d+; install the same requirements\.lock and project code on every worker"
    )
    assert expected.match(result.stderr.strip().splitlines()[-1]), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not Paths.at(project).checkpoints.exists()
    assert not (project / "data" / "models").exists()


def test_the_local_cluster_listens_on_loopback_only_and_dies_with_its_stage(tmp_path) -> None:
    project, env = prepared_project(tmp_path, "project")
    set_parallel(project, 2)
    child = processes.spawn(
        [BIN / "mlpstudy", "train"], log=tmp_path / "train.log", cwd=project, env=env
    )
    wait_for_checkpoint(project, child)
    workers = [
        process
        for process in psutil.Process(child.pid).children(recursive=True)
        if "spawn_main" in " ".join(process.cmdline())
    ]
    assert len(workers) == 2, [process.cmdline() for process in workers]
    listening = {
        connection.laddr.ip
        for process in [psutil.Process(child.pid), *workers]
        for connection in process.net_connections("inet")
        if connection.status == psutil.CONN_LISTEN
    }
    assert listening == {"127.0.0.1"}, listening
    assert "train: on 2 workers (a LocalCluster on 127.0.0.1)" in child.output()

    os.kill(child.pid, signal.SIGKILL)  # the stage alone, as when `dvc repro` is killed

    gone = psutil.wait_procs(workers, timeout=60)[1]
    assert gone == [], f"workers outlived their stage: {[p.pid for p in gone]}"
    child.kill()


BREAKPOINT_HOOK = """
import sys

if sys.argv and sys.argv[0].endswith("mlpstudy"):  # the stage's process, not dvc's
    from stages.lib.training import fitting

    fit_cell = fitting.fit_cell

    def stop_first(*args, **kwargs):
        breakpoint()  # as a user would put one in the fitting code
        return fit_cell(*args, **kwargs)

    fitting.fit_cell = stop_first
"""


def test_a_breakpoint_in_the_fitting_code_stops_dvc_repro_with_one_worker(tmp_path) -> None:
    """With `parallel_cells: 1` the worker is a thread of the stage's own process, which reads
    the terminal DVC gave it: pdb takes its commands from there."""
    project, env = make_project(tmp_path, shrink)
    set_parallel(project, 1)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(BREAKPOINT_HOOK)
    env = {**env, "PYTHONPATH": str(hooks), "PYTHONBREAKPOINT": "pdb.set_trace"}

    result = processes.run(
        [BIN / "dvc", "repro", "train"],
        cwd=project,
        env=env,
        input_text="p 'stopped in ' + args[1].cell.key\nc\n",
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    key = shrunk_cell("relu", "glorot_uniform", "adam", 0).key
    assert f"'stopped in {key}'" in result.stdout, result.stdout[-3000:]
    assert "(Pdb)" in result.stdout
    assert re.search(rf"^train \[1/1\] {re.escape(key)}: ", result.stdout, re.M)


def test_a_stage_exits_2_only_when_every_failed_cell_was_bad_input() -> None:
    """The one line of a stage whose cells failed: each cell and its cause, how many are saved;
    ConfigError (exit 2) only when every failed cell was refused as bad input."""
    refused = engine.Failure("a", "train.device: 'gpu' but TensorFlow sees no GPU", True)
    died = engine.Failure("b", "its worker died while running it, 2 times", False)
    engine.raise_failures("train", [], 3)  # nothing failed: nothing raised

    with pytest.raises(ConfigError) as bad_input:
        engine.raise_failures("evaluate", [refused], 3)
    assert str(bad_input.value) == (
        "evaluate: 1 of 3 cells failed (a: train.device: 'gpu' but TensorFlow sees no GPU); the "
        "2 others are saved; run `dvc repro evaluate` again to evaluate only the failed ones"
    )
    with pytest.raises(StageError) as mixed:
        engine.raise_failures("train", [refused, died], 5)
    assert str(mixed.value) == (
        "train: 2 of 5 cells failed (a: train.device: 'gpu' but TensorFlow sees no GPU; b: its "
        "worker died while running it, 2 times); the 3 others are saved; run `dvc repro train` "
        "again to train only the failed ones"
    )


def test_the_local_clusters_workers_keep_glibcs_dynamic_mmap_threshold() -> None:
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_ in its workers, which turns off glibc's dynamic
    mmap threshold and slows every fit (docs/scaling.md); the stage's LocalCluster does not."""
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ
    with engine.connect(2) as client:
        found = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_", "unset"))
    assert list(found.values()) == ["unset", "unset"], found


def test_the_local_clusters_workers_share_the_cores_among_tensorflows_inter_op_pools(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each worker process gets its share of the cores as TensorFlow's inter-op pool, not the
    whole machine each (docs/scaling.md); a TF_NUM_INTEROP_THREADS in the user's environment
    wins."""
    monkeypatch.delenv("TF_NUM_INTEROP_THREADS", raising=False)
    share = str(engine.interop_threads(2))
    with engine.connect(2) as client:
        found = client.run(lambda: os.environ.get("TF_NUM_INTEROP_THREADS", "unset"))
    assert list(found.values()) == [share, share], found
    monkeypatch.setenv("TF_NUM_INTEROP_THREADS", "3")
    with engine.connect(2) as client:
        found = client.run(lambda: os.environ.get("TF_NUM_INTEROP_THREADS", "unset"))
    assert list(found.values()) == ["3", "3"], found
