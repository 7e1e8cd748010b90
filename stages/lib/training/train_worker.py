"""A process of the warm training process's pool, which trains cells ahead of their stages, and
the pool's handle on it (`Worker`).

Started by train_pool.py as `python -m stages.cli train-worker`. It reads one task per line on
standard input (a cell, the project root, the client's environment and working directory, the
`dvc repro` session) and trains that cell's epochs into its checkpoint with
`stages.train.train_ahead` (no MLflow: the cell's stage takes the checkpoint over and logs it).
Standard output carries JSON lines for the pool: `{"key", "out"|"err": text}` and, last,
`{"key", "done": 0 | 1 | SKIPPED}`. Everything else (TensorFlow's own logging) goes to standard
error, the service's log. It ends when its parent does (Linux's parent-death signal) or when
standard input closes.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import keras

from stages.lib.core.config import load_params
from stages.lib.core.grid import Cell
from stages.lib.core.paths import Paths
from stages.lib.training import progress
from stages.lib.training.service_protocol import failure, use_environment

Task = dict[str, Any]  # what a worker reads: cell, root, cwd, session, env, code
# `stages.train.train_ahead(params, cell, paths, code, observers=...) -> bool`, handed in by the
# command that starts this process (code here never imports the stages).
TrainAhead = Callable[..., bool]
PR_SET_PDEATHSIG = 1
SKIPPED = "skipped"  # the result when a stage's own run holds the cell's checkpoint


class Channel:
    """A text stream whose writes reach the pool as `{"key": key, kind: text}` lines."""

    def __init__(self, stream: IO[str], key: str, kind: str) -> None:
        self.stream, self.key, self.kind = stream, key, kind

    def write(self, text: str) -> int:
        if text:
            send(self.stream, {"key": self.key, self.kind: text})
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def send(stream: IO[str], message: dict[str, Any]) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


def work(train_ahead: TrainAhead) -> int:
    """Train the cells read on standard input, one after the other, until it closes."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the pool's process gone: this one too
    if os.getppid() == 1:  # it was gone before the signal was armed
        return 1
    stream = os.fdopen(os.dup(1), "w")  # messages for the pool
    os.dup2(2, 1)  # anything else written to standard output lands in the log
    for line in sys.stdin:
        task = json.loads(line)
        cell = Cell(**task["cell"])
        print(f"training worker {os.getpid()}: {cell.key}", file=sys.stderr, flush=True)
        done, healthy = train_one(train_ahead, task, cell, task["code"], stream)
        send(stream, {"key": cell.key, "done": done, "retiring": not healthy})
        if not healthy:
            return 1
    return 0


def train_one(
    train_ahead: TrainAhead, task: dict[str, Any], cell: Cell, code: str, stream: IO[str]
) -> tuple[int | str, bool]:
    """Train one cell ahead: (its result, whether this process may train another)."""
    saved = sys.stdout, sys.stderr
    sys.stdout = Channel(stream, cell.key, "out")
    sys.stderr = err = Channel(stream, cell.key, "err")
    try:
        use_environment(task["env"], task["cwd"])
        paths = Paths.at(task["root"])
        params = load_params(paths.params)
        tracker = progress.for_cell(
            params, cell, paths.progress_file, task["session"], params.train.parallel_cells
        )
        observers = [progress.EpochProgress(tracker)]
        if not train_ahead(params, cell, paths, code, observers=observers):
            return SKIPPED, True
        tracker.record_finished()
        print(f"{tracker.label}: trained in {time.monotonic() - tracker.started:.1f} s", flush=True)
        return 0, True
    except Exception as error:
        code, text, healthy = failure(error)
        err.write(text)
        return code, healthy
    finally:
        sys.stdout, sys.stderr = saved
        keras.backend.clear_session()
        gc.collect()


class Worker:
    def __init__(self, log: IO[bytes], root: Path, on_message: Callable, on_exit: Callable) -> None:
        command = [sys.executable, "-m", "stages.cli", "train-worker"]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=root
        )
        self.key: str | None = None  # the cell it trains
        self.ended = False  # exited, or retiring: it gets no more cells
        threading.Thread(target=self._read, args=(on_message, on_exit), daemon=True).start()

    def _read(self, on_message: Callable, on_exit: Callable) -> None:
        try:
            for line in self.process.stdout or ():
                with contextlib.suppress(ValueError):  # not a message (a stray print): skip it
                    on_message(self, json.loads(line))
        finally:
            on_exit(self)

    def start(self, task: Task) -> bool:
        """Hand `task` over; False when the worker is gone (it then counts as ended)."""
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps(task).encode() + b"\n")
            self.process.stdin.flush()
        except (OSError, ValueError):  # a broken pipe, or the pipe closed
            self.ended = True
            return False
        self.key = Cell(**task["cell"]).key
        return True
