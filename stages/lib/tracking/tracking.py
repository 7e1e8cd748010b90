"""The MLflow side of the study: which store and which experiment (the runs in it: runs.py).

train, evaluate, report and compare all go through here, so they agree on the store and on how a
cell's run is found. The store is `$MLFLOW_TRACKING_URI` when set, else `mlflow.db` at the project
root (`$DVC_ROOT` when DVC runs the stage, so every cell of a `dvc repro` writes one store).
A fresh sqlite store is created under an exclusive file lock: cells started in parallel would
otherwise race on creating its tables and the study's experiment.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from stages.lib.core.errors import AGAIN, StageError
from stages.lib.core.paths import Paths
from stages.lib.tracking.store_check import check_server, check_sqlite_file, store_errors

SERVER_REMEDY = "; start it, or unset MLFLOW_TRACKING_URI to use mlflow.db at the project root"


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


def open_experiment(
    study_name: str, paths: Paths, *, create: bool = True, uri: str | None = None
) -> Experiment:
    """Check the store, get the study's experiment (or create it), make the store MLflow's default.

    Everything that can fail is checked before anything is created: a tracking server that does
    not answer, a sqlite file that is no database, a store that is locked or damaged; each is a
    StageError naming the store and what to do. With `create=False` a missing experiment is a
    StageError too (evaluate logs into runs that train created). `uri`: the store the stage
    resolved, for a worker of the cluster (whose `paths` are a scratch folder).
    """
    uri = uri or tracking_uri(paths)
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
