"""The cluster that trains a grid's pending cells: Dask distributed, local by default.

- By default a `LocalCluster` starts by itself, bound to 127.0.0.1 (a Dask scheduler runs pickled
  code from any client that reaches it, so it is never exposed), with `train.parallel_cells`
  worker processes of one thread each. With `parallel_cells: 1` the one worker is a thread of
  the stage's own process, so a `breakpoint()` in the fitting code stops `dvc repro` there.
- `DASK_SCHEDULER_ADDRESS` (Dask's own setting) names a running scheduler instead: a SLURM
  cluster through dask-jobqueue, a TLS-secured one through Dask's `distributed.comm.tls` settings.
  It is not a param, so moving to a cluster re-trains nothing.

Every worker must run what the stage runs: Python, Dask, TensorFlow, Keras, MLflow and NumPy of
the same versions, and the same training code (its digest). A worker that differs is refused
with one line naming the worker, the package and both versions, at the start and again by each
task (a worker may join later), instead of training with other numbers.

The prepared data travels once per worker, as a worker plugin (also sent to workers that join
later). A worker that dies mid-cell has its cell retried once on another worker, which continues
the cell's checkpoint when it shares the machine; a cell that kills its worker twice fails with
that error and the other cells go on (`distributed.scheduler.allowed-failures: 1`). A worker
restarts between cells once its memory passes half its limit (stages/lib/training/recycling.py).
"""

from __future__ import annotations

import logging
import platform
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import dask
from distributed import Client, LocalCluster, Reschedule, WorkerPlugin, as_completed, get_worker
from distributed.scheduler import KilledWorker

from stages.lib.core.code import stage_digest
from stages.lib.core.errors import StageError
from stages.lib.training import recycling
from stages.lib.training.cell_job import CellJob, CellResult, Splits

SCHEDULER_VARIABLE = "DASK_SCHEDULER_ADDRESS"
LOOPBACK = "127.0.0.1"
ALLOWED_FAILURES = 1  # a cell whose worker dies is retried once, then fails
PACKAGES = ("dask", "distributed", "tensorflow", "keras", "mlflow", "numpy")


class VersionSkew(RuntimeError):
    """A worker runs other versions or other training code than the stage."""


def environment() -> dict[str, str]:
    """What must match between the stage and every worker, by name."""
    return {
        "python": platform.python_version(),
        **{package: version(package) for package in PACKAGES},
        "training code": stage_digest("train")[:12],
    }


def skew(worker: str, found: dict[str, str], expected: dict[str, str]) -> str | None:
    """One line naming what differs on `worker`, or None."""
    for name, wanted in expected.items():
        if found.get(name) != wanted:
            return (
                f"Dask worker {worker} runs {name} {found.get(name)} where this stage runs "
                f"{wanted}; install the same requirements.lock and project code on every worker "
                f"(or unset {SCHEDULER_VARIABLE} to train on this machine)"
            )
    return None


@dataclass(frozen=True)
class Failure:
    key: str
    message: str


@contextmanager
def connect(parallel_cells: int) -> Iterator[Client]:
    """A client of the scheduler named by DASK_SCHEDULER_ADDRESS, else of a new LocalCluster."""
    recycling.fraction()  # a bad setting is refused before any cluster starts
    address = dask.config.get("scheduler-address", None)
    if address:
        try:
            client = Client(address, timeout="30s")
        except (OSError, TimeoutError) as error:
            raise StageError(
                f"{SCHEDULER_VARIABLE}={address}: no Dask scheduler answers ({error}); start "
                f"it, or unset {SCHEDULER_VARIABLE} to train on this machine"
            ) from None
        with client:
            yield client
        return
    settings = {"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}
    processes = parallel_cells > 1  # else a worker thread here, reached in-process (inproc://)
    with dask.config.set(settings):
        cluster = LocalCluster(
            n_workers=parallel_cells,
            threads_per_worker=1,
            processes=processes,
            **({"host": LOOPBACK} if processes else {}),
            dashboard_address=f"{LOOPBACK}:0",  # Dask's HTTP endpoints too: loopback only
            worker_dashboard_address=f"{LOOPBACK}:0",
            silence_logs=logging.ERROR,
        )
    with cluster, Client(cluster) as client:
        yield client


def worker_count(client: Client) -> int:
    return len(client.scheduler_info().get("workers", {}))


def remote(client: Client) -> bool:
    """Connected to a scheduler of its own (DASK_SCHEDULER_ADDRESS), not a LocalCluster here."""
    return not isinstance(client.cluster, LocalCluster)


def describe(client: Client) -> str:
    """`2 workers (LocalCluster on 127.0.0.1)` or `3 workers at tcp://...`."""
    workers = worker_count(client)
    noun = "worker" if workers == 1 else "workers"
    if not remote(client):
        where = "on 127.0.0.1" if client.scheduler.address.startswith("tcp") else "in this process"
        return f"{workers} {noun} (a LocalCluster {where})"
    return f"{workers} {noun} at {client.scheduler.address}"


def check_workers(client: Client) -> None:
    """Refuse version skew among the workers present now (each task checks its own worker)."""
    expected = environment()
    for worker, found in sorted(client.run(environment).items()):
        problem = skew(worker, found, expected)
        if problem:
            raise StageError(problem)


class PreparedData(WorkerPlugin):
    """The training and validation splits, sent to each worker once (and to late joiners)."""

    def __init__(self, name: str, splits: Splits) -> None:
        self.name = name
        self.splits = splits


def train(
    client: Client,
    jobs: Sequence[CellJob],
    splits: Splits,
    on_epoch: Callable[[dict[str, Any]], None],
    on_done: Callable[[CellResult], None],
) -> list[Failure]:
    """Train every job on the cluster; `on_done` gets each result as it arrives (in any order).

    Returns the cells that failed; raises StageError at once on version skew.
    """
    session = uuid.uuid4().hex[:12]
    data = PreparedData(f"mlpstudy-data-{session}", splits)
    client.register_plugin(data)
    topic = f"mlpstudy-epochs-{session}"
    client.register_plugin(recycling.Recycling(recycling.fraction(), topic))
    client.subscribe_topic(topic, lambda event: on_epoch(event[1]))
    expected = environment()
    futures = {
        client.submit(
            _train_on_worker,
            job,
            data.name,
            topic,
            expected,
            key=f"train-{job.key}-{session}",
            priority=-index,  # the grid's order
        ): job.key
        for index, job in enumerate(jobs)
    }
    failures = []
    try:
        for future in as_completed(futures):
            key = futures.pop(future)  # released once handled: its result leaves the worker
            if future.status == "finished":
                on_done(future.result())
                continue
            error = future.exception()
            if isinstance(error, VersionSkew):
                raise StageError(str(error))
            failures.append(Failure(key, _message(error)))
            print(f"train {key}: failed: {_message(error)}", flush=True)
    finally:
        client.cancel(list(futures))
        client.unsubscribe_topic(topic)
        client.unregister_worker_plugin(data.name)
        client.unregister_worker_plugin(recycling.NAME)
    return failures


def _message(error: BaseException | None) -> str:
    if isinstance(error, KilledWorker):
        return (
            f"its worker died while training it, {ALLOWED_FAILURES + 1} times (killed, out of "
            "memory or crashed); the other cells went on"
        )
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _train_on_worker(job: CellJob, data: str, topic: str, expected: dict[str, str]) -> CellResult:
    """The task: refuse skew, then train the cell on the data this worker holds."""
    worker = get_worker()
    problem = skew(worker.address, environment(), expected)
    if problem:
        raise VersionSkew(problem)
    from stages.lib.training.cell_training import train_cell  # TensorFlow: on workers only
    from stages.lib.training.progress import EpochEvents

    memory = worker.plugins[recycling.NAME]
    if not memory.admit():
        raise Reschedule()  # this worker restarts first; the cell trains on a fresh one
    splits = worker.plugins[data].splits
    try:
        return train_cell(job, splits, [EpochEvents(worker, topic, job)])
    finally:
        memory.trained()
