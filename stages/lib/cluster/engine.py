"""The Dask cluster that runs a stage's cells, local by default (train and evaluate use it).

- By default a `LocalCluster` starts by itself, bound to 127.0.0.1 (a Dask scheduler runs pickled
  code from any client that reaches it, so it is never exposed), with the stage's `parallel_cells`
  worker processes of one thread each, each with its share of the cores as TensorFlow's inter-op
  pool. With `parallel_cells: 1` the one worker is a thread of the stage's own process, so a
  `breakpoint()` in a cell's code stops `dvc repro` there.
- `DASK_SCHEDULER_ADDRESS` (Dask's own setting) names a running scheduler instead: a SLURM
  cluster through dask-jobqueue, a TLS-secured one through Dask's `distributed.comm.tls` settings.
  It is not a param, so moving to a cluster re-runs no cell.

Every worker must run what the stage runs: Python, Dask, TensorFlow, Keras, MLflow and NumPy of
the same versions, and the same code of the stage (its digest). A worker that differs is refused
with one line naming the worker, the package and both versions, at the start and again by each
task (a worker may join later), instead of computing other numbers.

What every cell of a run shares (the prepared data, the test split) travels once per worker, as
a worker plugin (also sent to workers that join later); a cell's own inputs and outputs travel
with its task, so workers on other machines need no shared file system. A worker that dies
mid-cell has its cell retried once on another worker; a cell that kills its worker twice fails
with that error and the other cells go on (`distributed.scheduler.allowed-failures: 1`). A
worker restarts between cells once its memory passes half its limit (recycling.py).

The engine changes no number, so it is plumbing (stages/lib/core/code.py): editing it re-runs no
cell. A stage hands it a module-level function of its own as the task (pickled by reference:
the stage's import graph shows the code its workers run, which its digest covers).
"""

from __future__ import annotations

import itertools
import logging
import os
import platform
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, Protocol

import dask
from distributed import Client, LocalCluster, Reschedule, WorkerPlugin, as_completed, get_worker
from distributed.scheduler import KilledWorker

from stages.lib.cluster import recycling
from stages.lib.core.code import stage_digest
from stages.lib.core.config import ConfigError
from stages.lib.core.errors import StageError

SCHEDULER_VARIABLE = "DASK_SCHEDULER_ADDRESS"
LOOPBACK = "127.0.0.1"
ALLOWED_FAILURES = 1  # a cell whose worker dies is retried once, then fails
NEVER_LOST = "3650 days"  # distributed.deploy.lost-worker-timeout of the stage's LocalCluster
PACKAGES = ("dask", "distributed", "tensorflow", "keras", "mlflow", "numpy")

Publish = Callable[[dict[str, Any]], None]  # a task's message to the stage (an epoch, ...)


class Job(Protocol):
    """What the engine needs of a cell's job: its key (the rest is the task's business)."""

    @property
    def key(self) -> str: ...


class VersionSkew(RuntimeError):
    """A worker runs other versions or other code of the stage than the stage itself."""


def environment(stage: str) -> dict[str, str]:
    """What must match between the stage and every worker, by name."""
    return {
        "python": platform.python_version(),
        **{package: version(package) for package in PACKAGES},
        f"{stage} code": stage_digest(stage)[:12],
    }


def skew(worker: str, found: dict[str, str], expected: dict[str, str]) -> str | None:
    """One line naming what differs on `worker`, or None."""
    for name, wanted in expected.items():
        if found.get(name) != wanted:
            return (
                f"Dask worker {worker} runs {name} {found.get(name)} where this stage runs "
                f"{wanted}; install the same requirements.lock and project code on every worker "
                f"(or unset {SCHEDULER_VARIABLE} to run on this machine)"
            )
    return None


@dataclass(frozen=True)
class Failure:
    key: str
    message: str
    bad_input: bool  # the cell's own input was refused (ConfigError): its message says why


def raise_failures(stage: str, failures: list[Failure], cells: int) -> None:
    """The stage's one error once `run` returns, if any of its `cells` failed: one line naming
    each failed cell and its cause. The others were saved, so running the stage again redoes
    only the failed ones. Exit 2 (ConfigError) when every failed cell was refused as bad input,
    else 1 (StageError)."""
    if not failures:
        return
    listed = "; ".join(f"{failure.key}: {failure.message}" for failure in failures)
    error = ConfigError if all(failure.bad_input for failure in failures) else StageError
    raise error(
        f"{stage}: {len(failures)} of {cells} cells failed ({listed}); the "
        f"{cells - len(failures)} others are saved; run `dvc repro {stage}` again to {stage} "
        "only the failed ones"
    )


def interop_threads(parallel_cells: int) -> int:
    """TensorFlow inter-op threads for each of `parallel_cells` worker processes on this machine:
    the cores this process may run on (a SLURM job's or a container's, as TensorFlow counts
    them) shared out, at least one."""
    return max(1, usable_cores() // parallel_cells)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


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
                f"it, or unset {SCHEDULER_VARIABLE} to run on this machine"
            ) from None
        with client:
            yield client
        return
    settings = {
        "distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
        # Dask sets MALLOC_TRIM_THRESHOLD_ in its worker processes, which turns off glibc's
        # dynamic mmap threshold: each of TensorFlow's tensors over 128 KiB is then mapped and
        # unmapped anew, and a cell fits slower (benchmarks/default_study.py). Not set here.
        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
        # TensorFlow gives each process an inter-op pool as large as the machine; with a worker
        # per core, the pools of all workers contend for the same cores. A share of the cores
        # each (a TF_NUM_INTEROP_THREADS in the environment wins).
        "distributed.nanny.pre-spawn-environ.TF_NUM_INTEROP_THREADS": interop_threads(
            parallel_cells
        ),
        # A LocalCluster closes for good the nanny of a worker that is not back 15 s after it
        # left (a lost job, to a cluster manager). Here a nanny restarts its worker itself (a
        # crash, or recycling.py between cells), and a check that falls in a later restart
        # would take the worker away for the rest of the stage. Read at each worker's exit,
        # so set for the cluster's whole life.
        "distributed.deploy.lost-worker-timeout": NEVER_LOST,
    }
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
            client.register_plugin(ReportedFailures())
            yield client


class ReportedFailures(WorkerPlugin):
    """On the stage's own LocalCluster, whose workers log into the stage's terminal: a failed
    task's "Compute Failed" log (with its traceback) is left out, as the stage reports each
    failed cell in one line. The workers of a cluster of its own keep their logs."""

    name = "mlpstudy-reported-failures"

    def setup(self, worker: Any) -> None:
        logging.getLogger("distributed.worker").addFilter(_not_a_failed_task)


def _not_a_failed_task(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Compute Failed")


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


def check_workers(client: Client, stage: str) -> None:
    """Refuse version skew among the workers present now (each task checks its own worker)."""
    expected = environment(stage)
    for worker, found in sorted(client.run(environment, stage).items()):
        problem = skew(worker, found, expected)
        if problem:
            raise StageError(problem)


class SharedData(WorkerPlugin):
    """What every cell of a run reads (a stage's data splits), sent to each worker once (and to
    workers that join later)."""

    def __init__(self, name: str, data: Any) -> None:
        self.name = name
        self.data = data


def run(
    client: Client,
    stage: str,
    task: Callable[[Any, Any, Publish], Any],
    jobs: Iterable[Job],
    shared: Any,
    on_done: Callable[[Any], None],
    on_event: Publish | None = None,
    in_flight: int | None = None,
) -> list[Failure]:
    """Run `task` on the cluster for every job: on a worker, `task(job, shared, publish)`
    returns the cell's result, and `on_done` gets each result
    here as it arrives (in any order); `on_event` gets what tasks publish. With `in_flight`, at
    most that many jobs are submitted at a time, each taken from `jobs` only then (jobs that
    carry large inputs); else all at once, in the order of `jobs` (earlier first).

    Returns the cells that failed; raises StageError at once on version skew.
    """
    session = uuid.uuid4().hex[:12]
    data = SharedData(f"mlpstudy-{stage}-data-{session}", shared)
    client.register_plugin(data)
    topic = f"mlpstudy-{stage}-events-{session}"
    client.register_plugin(recycling.Recycling(recycling.fraction(), topic))

    def heard(event: tuple[float, dict[str, Any]]) -> None:
        message = event[1]
        if "restart" in message:
            print(restart_line(stage, message["restart"]), flush=True)
        elif on_event is not None:
            on_event(message)

    client.subscribe_topic(topic, heard)
    expected = environment(stage)
    pending = iter(jobs)
    futures: dict[Any, str] = {}
    completed = as_completed()
    order = itertools.count()

    def submit_next() -> bool:
        job = next(pending, None)
        if job is None:
            return False
        future = client.submit(
            _run_on_worker,
            task,
            stage,
            job,
            data.name,
            topic,
            expected,
            key=f"{stage}-{job.key}-{session}",
            priority=-next(order),  # the order of `jobs`
        )
        futures[future] = job.key
        completed.add(future)
        return True

    failures: list[Failure] = []
    try:
        while (in_flight is None or len(futures) < in_flight) and submit_next():
            pass
        for future in completed:
            key = futures.pop(future)
            if future.status == "finished":
                on_done(future.result())
            else:
                error = future.exception()
                if isinstance(error, VersionSkew):
                    raise StageError(str(error))
                bad_input = isinstance(error, ConfigError)
                failures.append(Failure(key, _message(error), bad_input))
                print(f"{stage} {key}: failed: {_message(error)}", flush=True)
            # Released now, not when the next cell ends: a worker due to restart waits until
            # the stage has its results (recycling.py), and may be the only one left to run
            # that next cell.
            del future
            if in_flight is not None:
                submit_next()
    finally:
        client.cancel(list(futures))
        client.unsubscribe_topic(topic)
        client.unregister_worker_plugin(data.name)
        client.unregister_worker_plugin(recycling.NAME)
    return failures


def restart_line(stage: str, restart: dict[str, Any]) -> str:
    """What the stage prints when a worker restarts between cells (recycling.py)."""
    cells = restart["cells"]
    return (
        f"{stage}: worker {restart['worker']} restarts after {cells} cell{'s'[: cells != 1]}: "
        f"{restart['resident'] / 2**30:.1f} GiB resident, over {restart['fraction']:.0%} of "
        f"its {restart['limit'] / 2**30:.1f} GiB limit (TensorFlow keeps some of every model)"
    )


def _message(error: BaseException | None) -> str:
    if isinstance(error, KilledWorker):
        return (
            f"its worker died while running it, {ALLOWED_FAILURES + 1} times (killed, out of "
            "memory or crashed); the other cells went on"
        )
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(error, ConfigError):
        return first  # a message for the user: names the file, the value and what to do
    return f"{type(error).__name__}: {first}".rstrip(": ")


def _run_on_worker(
    task: Callable[[Any, Any, Publish], Any],
    stage: str,
    job: Job,
    data: str,
    topic: str,
    expected: dict[str, str],
) -> Any:
    """The task: refuse skew, then run the cell on the shared data this worker holds."""
    worker = get_worker()
    problem = skew(worker.address, environment(stage), expected)
    if problem:
        raise VersionSkew(problem)
    memory = worker.plugins[recycling.NAME]
    if not memory.admit():
        raise Reschedule()  # this worker restarts first; the cell runs on a fresh one
    try:
        shared = worker.plugins[data].data
        return task(job, shared, lambda message: worker.log_event(topic, message))
    finally:
        memory.finished()
