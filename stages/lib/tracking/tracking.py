"""The MLflow side of the study: which store, which experiment, and the runs in it.

train, evaluate, report and compare all go through here, so they agree on the store and on how a
cell's run is found. The store is `$MLFLOW_TRACKING_URI` when set, else `mlflow.db` at the project
root (`$DVC_ROOT` when DVC runs the stage, so every cell of a `dvc repro` writes one store).
A fresh sqlite store is created under an exclusive file lock: cells started in parallel would
otherwise race on creating its tables and the study's experiment.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import mlflow
from mlflow.entities import Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.entities import PagedList
from mlflow.tracking import MlflowClient

from stages.lib.core.errors import AGAIN, StageError
from stages.lib.core.paths import Paths
from stages.lib.tracking.store_check import check_server, check_sqlite_file, store_errors

CELL_KIND = "cell"  # value of the `kind` tag on each cell's run (the report's run has another)
DVC_EXP_TAG = "dvc_exp"  # the DVC experiment a run belongs to, on cell and report runs
PAGE_SIZE = 1000  # results per search call (MLflow's default page size)
T = TypeVar("T")
SERVER_REMEDY = "; start it, or unset MLFLOW_TRACKING_URI to use mlflow.db at the project root"


def dvc_experiment() -> str | None:
    """The DVC experiment running this stage (DVC sets DVC_EXP_NAME in `dvc exp run`), if any."""
    return os.environ.get("DVC_EXP_NAME") or None


@dataclass(frozen=True)
class Experiment:
    """The study's experiment in a reachable store."""

    tracking_uri: str
    experiment_id: str
    name: str

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)


def tracking_root(paths: Paths) -> Paths:
    """The project root that holds the default store: `$DVC_ROOT` when DVC runs the stage."""
    dvc_root = os.environ.get("DVC_ROOT")
    return Paths.at(dvc_root) if dvc_root else paths


def tracking_uri(paths: Paths) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{tracking_root(paths).mlflow_db}"


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (None for other stores and in-memory sqlite)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0]).resolve()


def check_store(paths: Paths) -> None:
    """Before long work: the store answers (a server) or can be one (a sqlite file); this creates
    nothing, so a stage that fails later leaves no empty experiment (see `open_experiment`)."""
    uri = tracking_uri(paths)
    database = sqlite_file(uri)
    if uri.startswith(("http://", "https://")):
        check_server(uri, "MLFLOW_TRACKING_URI", SERVER_REMEDY)
    elif database is not None:
        check_sqlite_file(database)


def open_experiment(study_name: str, paths: Paths, *, create: bool = True) -> Experiment:
    """Check the store, get the study's experiment (or create it), make the store MLflow's default.

    Everything that can fail is checked before anything is created: a tracking server that does
    not answer, a sqlite file that is no database, a store that is locked or damaged; each is a
    StageError naming the store and what to do. With `create=False` a missing experiment is a
    StageError too (evaluate logs into runs that train created).
    """
    uri = tracking_uri(paths)
    mlflow.set_tracking_uri(uri)
    database = sqlite_file(uri)
    if uri.startswith(("http://", "https://")):
        check_server(uri, "MLFLOW_TRACKING_URI", SERVER_REMEDY)
    artifacts = None
    if database is not None:
        check_sqlite_file(database)
        database.parent.mkdir(parents=True, exist_ok=True)
        artifacts = (database.parent / paths.mlflow_artifacts.name).as_uri()
    with store_lock(uri), store_errors(uri):
        return Experiment(uri, _get_or_create(uri, study_name, artifacts, create), study_name)


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold the exclusive lock of a sqlite store (the one its creation takes); servers: no-op."""
    database = sqlite_file(uri)
    if database is None:
        yield
        return
    with _exclusive(database.with_name(database.name + "-lock")):
        yield


@contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    try:
        handle = lock_file.open("a")
    except OSError as error:
        raise StageError(
            f"{lock_file}: cannot be created ({error.strerror}), so the MLflow store beside it "
            "cannot be written; make its folder writable, or set MLFLOW_TRACKING_URI to a "
            f"writable store, {AGAIN}"
        ) from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _get_or_create(uri: str, name: str, artifact_location: str | None, create: bool) -> str:
    client = MlflowClient(uri)  # the first call on a fresh sqlite store creates its tables
    experiment = client.get_experiment_by_name(name)
    if experiment is not None and experiment.lifecycle_stage == "deleted":
        raise StageError(
            f"study.name: the MLflow experiment {name!r} is deleted in {uri}; restore it "
            f"(`mlflow experiments restore --experiment-id {experiment.experiment_id}`) "
            "or choose another study.name"
        )
    if experiment is not None:
        return experiment.experiment_id
    if not create:
        raise StageError(
            f"study.name: the MLflow store {uri} has no experiment {name!r}; train the grid "
            "into this store first (`dvc repro`), or set MLFLOW_TRACKING_URI to the store "
            "it was trained into"
        )
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:  # created meanwhile by another process (remote stores only)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def create_run(
    experiment: Experiment, run_name: str, params: Mapping[str, str], tags: Mapping[str, str]
) -> str:
    """A new run with its params and tags, in one call to the store; returns its id."""
    client = experiment.client
    run = client.create_run(experiment.experiment_id, run_name=run_name, tags=dict(tags))
    client.log_batch(run.info.run_id, params=[_param(k, v) for k, v in params.items()])
    return run.info.run_id


def _param(key: str, value: str) -> Param:
    return Param(key, value)


def run_exists(experiment: Experiment, run_id: str) -> bool:
    """Whether `run_id` is a live run of the experiment (a deleted store or run is not)."""
    try:
        run = experiment.client.get_run(run_id)
    except MlflowException:
        return False
    return (
        run.info.experiment_id == experiment.experiment_id and run.info.lifecycle_stage == "active"
    )


def set_tags(experiment: Experiment, run_id: str, tags: Mapping[str, str]) -> None:
    experiment.client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])


def refresh_dvc_exp(client: MlflowClient, run_id: str) -> None:
    """For a run used again (a resumed cell; evaluate logging into a cell's run, which DVC may
    have restored from its run cache in another experiment): its `dvc_exp` tag names the DVC
    experiment running now, and goes when none is, so it never names one the run has left."""
    current = dvc_experiment()
    tagged = client.get_run(run_id).data.tags.get(DVC_EXP_TAG)
    if current and tagged != current:
        client.set_tag(run_id, DVC_EXP_TAG, current)
    elif not current and tagged is not None:
        client.delete_tag(run_id, DVC_EXP_TAG)


@contextmanager
def active_run(run_id: str) -> Iterator[mlflow.ActiveRun]:
    """Make an existing run MLflow's active run (status RUNNING; FINISHED or FAILED on exit)."""
    with mlflow.start_run(run_id=run_id) as run:
        yield run


@contextmanager
def open_run(run_id: str, paths: Paths) -> Iterator[mlflow.ActiveRun]:
    """For later stages: continue a cell's run (the id in its run.json) to log more into it."""
    uri = tracking_uri(paths)
    if uri.startswith(("http://", "https://")):
        check_server(uri, "MLFLOW_TRACKING_URI", SERVER_REMEDY)
    mlflow.set_tracking_uri(uri)
    with active_run(run_id) as run:
        yield run


def git_commit(root: Path) -> str:
    """The commit checked out at `root`, or "unknown" outside a git repository."""
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def every_page(search: Callable[..., PagedList[T]]) -> list[T]:
    """Every result of an MLflow search (`client.search_runs` with its arguments bound, ...):
    one call returns one page, so this calls it again with each page's token until the last."""
    results: list[T] = []
    token = None
    while True:
        page = search(max_results=PAGE_SIZE, page_token=token)
        results.extend(page)
        token = page.token
        if not token:
            return results


def find_runs(study_name: str, tracking_uri: str) -> list[Run]:
    """Every cell run of the study, newest first (compare and report read them)."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(study_name)
    if experiment is None:
        return []
    search = partial(
        client.search_runs,
        [experiment.experiment_id],
        filter_string=f"tags.kind = '{CELL_KIND}'",
        order_by=["attributes.start_time DESC"],
    )
    return every_page(search)
