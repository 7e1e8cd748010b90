"""Several cells at once: the warm process trains the next cells ahead while DVC runs this one.

DVC runs a grid's `train@<cell>` stages one after the other, and one cell keeps one core busy
(`train.cpu_threads: 1`). With `train.parallel_cells: N` the warm training process keeps N
worker processes (train_worker.py) training: the cell a stage asks for first, then the next cells
that this `dvc repro` will run (lookahead.py). A worker trains a cell's epochs into its checkpoint
without MLflow; the stage then takes the checkpoint over in the warm process
(`stages.train.run`): it creates the cell's MLflow run, logs every epoch, logs the model and
writes the outputs. Each cell keeps its own DVC stage, outputs and MLflow run, and its numbers are
bitwise those of a cell trained alone (its own process, seeds and data order).

The stage's client sees the worker's progress lines for its cell, including those printed
before it asked. A worker that dies (killed, out of memory) is replaced; the stage then trains
what is left of its cell in the warm process. A checkpoint trained ahead that no stage takes over
is removed when the pool closes (the warm process idle); one cut short because DVC was
interrupted stays for the next `dvc repro`, which resumes it.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Callable
from typing import IO, Any

from stages.lib.core.code import code_digest
from stages.lib.core.grid import Cell
from stages.lib.core.paths import Paths
from stages.lib.training import lookahead, resume
from stages.lib.training.train_worker import Task, Worker

ENDED = "ended"  # the result of a cell whose worker died while training it


class Pool:
    """Worker processes, the cells queued for them, and what they printed and returned."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.code = code_digest()  # the code this process runs, which its workers train with
        self.workers: list[Worker] = []
        self.queue: list[Task] = []
        self.messages: dict[str, list[dict[str, Any]]] = {}  # per cell, in order
        self.results: dict[str, int | str] = {}  # per finished cell: 0, 1, SKIPPED or ENDED
        self.changed = threading.Condition()
        self.log: IO[bytes] | None = None  # the workers' standard error: the service's log
        self.size, self.session = 0, ""

    # ------------------------------------------------------------------ what the service calls
    def train(self, cell: Cell, cells: list[Cell], task: Task, size: int) -> None:
        """Make sure `cell` trains first, then the cells this `dvc repro` runs after it, up to
        twice `size` trained or training and not yet taken over by their stages."""
        with self.changed:
            if task["session"] != self.session:  # another `dvc repro`: forget the last one's
                self.session = task["session"]
                self.results.clear()
                self.messages = {key: self.messages.get(key, []) for key in self._in_flight()}
            self.size = size
            self._resize()
            task = {**task, "code": self.code}
            if not self._known(cell.key):
                self.queue.insert(0, task)
                self.messages[cell.key] = []
            ahead = lookahead.pending_after(cell, cells, self.paths, int(task["session"]))
            # Twice the workers: none idles while DVC takes a cell over.
            while len(self._in_flight()) + len(self.results) < 2 * size:
                later = next(ahead, None)
                if later is None:
                    break
                if not self._known(later.key):
                    self.queue.append({**task, "cell": later.model_dump()})
                    self.messages[later.key] = []
            self._dispatch()

    def follow(self, key: str, show: Callable[[dict[str, Any]], None]) -> int | str:
        """Pass `key`'s messages to `show` as they come; its result when it is done."""
        shown = 0
        while True:
            with self.changed:
                if self.queue:  # replace a worker that died (in the thread that lives on)
                    self._resize()
                    self._dispatch()
                messages = self.messages.get(key, [])[shown:]
                result = self.results.get(key) if not messages else None
                if not messages and result is None:
                    self.changed.wait(timeout=5.0)
                    continue
            for message in messages:
                show(message)
            shown += len(messages)
            if result is not None:
                with self.changed:
                    self.results.pop(key, None)
                    self.messages.pop(key, None)
                return result

    def close(self) -> None:
        """End the workers; drop checkpoints trained ahead that no stage took over."""
        with self.changed:
            self.queue.clear()
            self.size = 0
        for worker in self.workers:
            if worker.process.stdin is not None:
                with contextlib.suppress(OSError):
                    worker.process.stdin.close()
        for worker in self.workers:
            try:
                worker.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
        self.workers = []
        if self.log is not None:
            self.log.close()
            self.log = None
        for marker in self.paths.checkpoints.glob(f"*/{resume.AHEAD_FILE}"):
            if resume.trained_ahead(marker.parent) == self.code:  # another process's are its own
                resume.remove(marker.parent)  # trained ahead, and no stage took it over

    # ----------------------------------------------------------------------------- internals
    def _in_flight(self) -> list[str]:
        running = [worker.key for worker in self.workers if worker.key is not None]
        return running + [Cell(**task["cell"]).key for task in self.queue]

    def _known(self, key: str) -> bool:
        return key in self._in_flight() or key in self.results

    def _resize(self) -> None:
        self.workers = [w for w in self.workers if not (w.ended and w.key is None)]
        if self.log is None:
            self.log = self.paths.train_service_log.open("ab")
        while len([w for w in self.workers if not w.ended]) < self.size:
            worker = Worker(self.log, self.paths.root, self._on_message, self._on_exit)
            self.workers.append(worker)

    def _dispatch(self) -> None:
        for worker in self.workers:
            if worker.key is None and self.queue and not worker.ended:
                task = self.queue.pop(0)
                if not worker.start(task):
                    self.queue.insert(0, task)

    def _on_message(self, worker: Worker, message: dict[str, Any]) -> None:
        with self.changed:
            key = message["key"]
            if "done" in message:
                self.results[key] = message["done"]
                worker.key = None
                worker.ended = worker.ended or bool(message.get("retiring"))
                self._dispatch()
            else:
                self.messages.setdefault(key, []).append(message)
            self.changed.notify_all()

    def _on_exit(self, worker: Worker) -> None:
        with self.changed:
            if worker.key is not None and worker.key not in self.results:
                log = self.paths.train_service_log.relative_to(self.paths.root)
                text = f"the training worker ended while training {worker.key} (see {log})\n"
                self.messages.setdefault(worker.key, []).append({"err": text})
                self.results[worker.key] = ENDED
            worker.key, worker.ended = None, True
            self.changed.notify_all()
