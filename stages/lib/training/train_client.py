"""`mlpstudy train` hands its cell to a warm training process, so a grid pays start-up once.

Importing TensorFlow, Keras and MLflow costs a cell several seconds, as much as training it. DVC
runs each `train@<cell>` stage as its own command, so the command stays a thin client: it
validates `params.yaml`, then sends the cell to a training process that has everything imported
already (stages/lib/training/train_service.py), starting one when none is listening, and relays its
output and exit code. Every cell keeps its own DVC stage, outputs and MLflow run; the process
only trains them one after the other.

- One process per project root, code version, Python and device settings (its socket's name
  says so), so an edit of the code or of `train.device` (or `cpu_threads`) starts a
  fresh one.
- It lives while its client does: if `dvc repro` is interrupted or killed, the training process
  ends with it, and the next `dvc repro` resumes the cell from its last completed epoch.
- Idle for `$MLPSTUDY_TRAIN_SERVICE_IDLE` seconds (default 120), it exits.
- Its output goes to `.mlpstudy/train-service.log`; a log past LOG_KEEP_BYTES becomes
  `train-service.log.1` (replacing the one before) when the next process starts.
- `MLPSTUDY_TRAIN_SERVICE=off` trains in the command's own process instead (the same code), as
  does every platform but Linux.
- Two `mlpstudy train` commands for one project at once train one after the other.

This module imports no TensorFlow: the client starts in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stages.lib.core.config import Params
from stages.lib.core.errors import StageError
from stages.lib.core.grid import Cell
from stages.lib.core.paths import Paths, display_path
from stages.lib.training import lookahead, preflight
from stages.lib.training.service_protocol import FORWARDED_PREFIXES, abstract, service_address

SERVICE_ENV = "MLPSTUDY_TRAIN_SERVICE"
IDLE_ENV = "MLPSTUDY_TRAIN_SERVICE_IDLE"
DEFAULT_IDLE_SECONDS = 120.0
STARTUP_SECONDS = 300.0  # importing TensorFlow on a loaded machine
LOG_KEEP_BYTES = 5_000_000  # the log of many grids: TensorFlow's start-up lines, workers' errors


def train(
    params: Params, cell: Cell, paths: Paths, here: Callable[[Params, Cell, Paths, str], object]
) -> int:
    """Train `cell` in the warm process, or with `here(params, cell, paths, session)` in this
    process when the service is off; the exit code."""
    preflight.check(cell, paths)
    session = str(lookahead.session(os.getppid()))  # the `dvc repro` (or shell) running this
    # Linux's abstract sockets carry the requests; elsewhere each command trains in-process.
    if os.environ.get(SERVICE_ENV, "on") == "off" or not sys.platform.startswith("linux"):
        here(params, cell, paths, session)
        return 0
    address = service_address(params, paths)
    with _connected(address, paths) as connection:
        request = {
            "cell": cell.model_dump(),
            "root": str(paths.root),
            "cwd": os.getcwd(),
            "session": session,
            "env": {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)},
        }
        connection.sendall(json.dumps(request).encode() + b"\n")
        return _relay(connection, cell, paths)


@contextlib.contextmanager
def _connected(address: str, paths: Paths) -> Any:
    connection = _connect(address)
    if connection is None:
        connection = _start(address, paths)
    try:
        yield connection
    finally:
        connection.close()


def _connect(address: str) -> socket.socket | None:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(abstract(address))
    except OSError:  # nobody listens (yet)
        connection.close()
        return None
    return connection


def rotate_log(log: Path, keep_bytes: int = LOG_KEEP_BYTES) -> None:
    """Move a log past `keep_bytes` to `<name>.1`, so the logs of a project stay bounded.

    A process still writing to the old log goes on writing to the moved file.
    """
    with contextlib.suppress(FileNotFoundError):
        if log.stat().st_size > keep_bytes:
            log.replace(log.with_name(log.name + ".1"))


def _start(address: str, paths: Paths) -> socket.socket:
    """Start a training process and connect to it (or to one started meanwhile by another)."""
    log = paths.train_service_log
    log.parent.mkdir(parents=True, exist_ok=True)
    rotate_log(log)
    idle = os.environ.get(IDLE_ENV, str(DEFAULT_IDLE_SECONDS))
    command = [
        sys.executable,
        "-m",
        "stages.cli",
        "train-service",
        address,
        str(paths.root),
        idle,
    ]
    with log.open("ab") as output:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=paths.root,
            start_new_session=True,  # not in DVC's process group: it outlives this cell
        )
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        connection = _connect(address)
        if connection is not None:
            return connection
        code = process.poll()
        if code not in (None, 0):  # 0: another client's process won the address
            raise StageError(
                f"the training process exited with code {code} before it could train; "
                f"see {display_path(log, paths.root)}"
            )
        time.sleep(0.05)
    process.kill()
    raise StageError(
        f"the training process did not start within {STARTUP_SECONDS:.0f} s; "
        f"see {display_path(log, paths.root)}, or set {SERVICE_ENV}=off to train in-process"
    )


def _relay(connection: socket.socket, cell: Cell, paths: Paths) -> int:
    """Copy the process's output here until it reports the exit code."""
    for line in connection.makefile("rb"):
        message = json.loads(line)
        if "exit" in message:
            return int(message["exit"])
        stream = sys.stderr if "err" in message else sys.stdout
        stream.write(message.get("err", message.get("out", "")))
        stream.flush()
    raise StageError(
        f"the training process ended while training {cell.key} (see "
        f"{display_path(paths.train_service_log, paths.root)}); run `dvc repro` again: the "
        "cell resumes from its last completed epoch"
    )
