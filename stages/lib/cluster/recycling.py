"""Worker processes restarted between cells before TensorFlow's leftovers fill their memory.

TensorFlow keeps memory of every model a process fits (7.6 MB per small MLP; 5.5 MB whatever
Keras, the garbage collector or `malloc_trim` release: `benchmarks/worker_memory.py`) or loads
and predicts with; a train worker grows by about 14 MB per trivial cell (5.9 GiB after 370 of
them), and Dask pauses a worker at 80% of its memory limit. A fresh process has none of it, and
TensorFlow stays imported from one cell to the next.

Each worker carries a `Recycling` plugin. A task asks it before running its cell (`admit`);
once the worker has run at least one cell and its resident memory passes `fraction` of its Dask
memory limit, the answer is no: the task hands its cell back to the scheduler
(`distributed.Reschedule`, which counts as no failure); the worker takes no new task, and its
nanny restarts it once no cell runs on it, the scheduler counts no cell as its (a cell the
scheduler sent before it heard goes back the same way), and the stage has collected every
result it holds. So no cell is ever cut off, none dies with a restarting worker (the scheduler
would count that against the cell: twice fails it), and none runs twice. A worker without a
nanny (the in-process worker of `parallel_cells: 1`) cannot be restarted and is left alone.

`fraction` is Dask configuration (`mlpstudy.worker-recycle-fraction`, from the environment as
`DASK_MLPSTUDY__WORKER_RECYCLE_FRACTION`), not a param: it changes no number.
"""

from __future__ import annotations

import asyncio
import threading
from contextlib import suppress
from time import time
from typing import Any

import dask
import psutil
from distributed import WorkerPlugin
from distributed.comm import CommClosedError
from distributed.core import Status

from stages.lib.core.errors import StageError

NAME = "mlpstudy-recycling"
SETTING = "mlpstudy.worker-recycle-fraction"
FRACTION = 0.5  # of the worker's memory limit; Dask itself pauses a worker at 0.8
IDLE_POLL_SECONDS = 0.1
RESULTS_WAIT_SECONDS = 60.0  # for the stage to collect the results the worker holds


def fraction() -> float:
    """The configured fraction, checked: 0 restarts a worker after every cell."""
    value = dask.config.get(SETTING, FRACTION)
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = -1.0
    if not 0 <= value <= 1:
        raise StageError(
            f"Dask setting {SETTING} (DASK_MLPSTUDY__WORKER_RECYCLE_FRACTION) is "
            f"{dask.config.get(SETTING)!r}; allowed: a number from 0 to 1, the share of a "
            "worker's memory limit at which it restarts between cells"
        )
    return value


class Recycling(WorkerPlugin):
    """On a worker: admits cells until its memory passes the limit, then restarts it idle."""

    name = NAME

    def __init__(self, fraction: float, topic: str) -> None:
        self.fraction = fraction
        self.topic = topic  # where the stage hears of a restart (engine.restart_line)

    def setup(self, worker: Any) -> None:
        self.worker = worker
        self.cells = 0  # run by this process
        self.draining = False
        self.lock = threading.Lock()

    def admit(self) -> bool:
        """May a cell start here? False once this worker is due to restart."""
        with self.lock:
            if not self.draining and self.cells and self.worker.nanny and self.worn():
                self.draining = True
                self.worker.loop.add_callback(self._restart_when_idle)
            return not self.draining

    def finished(self) -> None:
        """A cell ended on this worker (finished or failed)."""
        with self.lock:
            self.cells += 1

    def worn(self) -> bool:
        return psutil.Process().memory_info().rss >= self.fraction * self._limit()

    async def _restart_when_idle(self) -> None:
        # The worker starts no cell in this state, and the scheduler sends it none once it has
        # heard of it; a graceful close would also make the scheduler drop the worker, which
        # then asks its nanny not to restart it.
        worker = self.worker
        worker.status = Status.closing_gracefully
        while not await self._holds_no_cell():
            await asyncio.sleep(IDLE_POLL_SECONDS)
        waited = 0.0
        while waited < RESULTS_WAIT_SECONDS and any(
            task.state == "memory" for task in worker.state.tasks.values()
        ):  # a restart loses them: their cells would be computed again
            await asyncio.sleep(IDLE_POLL_SECONDS)
            waited += IDLE_POLL_SECONDS
        restart = {
            "worker": worker.address,
            "cells": self.cells,
            "resident": psutil.Process().memory_info().rss,
            "limit": self._limit(),
            "fraction": self.fraction,
        }
        worker.log_event(self.topic, {"restart": restart})
        await asyncio.sleep(IDLE_POLL_SECONDS)  # the event leaves before the process goes
        with suppress(CommClosedError):  # this process stops before the nanny's answer comes
            async with worker.rpc(worker.nanny) as nanny:  # stops this process, starts anew
                await nanny.restart(reason=f"mlpstudy: {restart}")

    async def _holds_no_cell(self) -> bool:
        """True once no cell runs here and the scheduler counts none as this worker's.

        The scheduler counts a worker's death against every cell it has sent that worker, and
        a cell counted twice fails (`allowed-failures`). Until it hears that this worker takes
        no more, it may send cells that then wait here, never started: each goes back to the
        scheduler (the message a cell's `Reschedule` sends), which gives it to another worker.
        """
        worker = self.worker
        if worker.state.executing_count:
            return False
        address = worker.address
        if await worker.scheduler.ncores_running(workers=[address]):
            return False  # the scheduler still counts this worker as running: it may send more
        held = (await worker.scheduler.processing(workers=[address])).get(address, [])
        for key in held:
            worker.batched_send(
                {"op": "reschedule", "key": key, "stimulus_id": f"mlpstudy-recycling-{time()}"}
            )
        return not held

    def _limit(self) -> int:
        return self.worker.memory_manager.memory_limit or psutil.virtual_memory().total
