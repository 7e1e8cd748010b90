"""What `mlpstudy train` (train_client.py) and the warm training process (train_service.py)
agree on: the process's address, which says what it may train, and the environment a request
carries.

Messages are JSON lines: the client sends one request (`cell`, `root`, `cwd`, `session`, `env`),
the process answers with `{"out": text}` / `{"err": text}` lines and a final `{"exit": code}`.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import threading
import traceback
from typing import Any

from stages.lib.core.code import PACKAGE, code_digest
from stages.lib.core.config import ConfigError, Params
from stages.lib.core.errors import StageError, describe
from stages.lib.core.paths import Paths

# Environment a request carries into the training process (where the store is, which DVC
# experiment and stage runs, the data mirror); the rest is the process's own.
FORWARDED_PREFIXES = ("DVC_", "MLFLOW_", "MLPSTUDY_")
# Environment read once, when TensorFlow starts: a process started under other values differs.
STARTUP_PREFIXES = ("TF_", "CUDA_", "XLA_", "OMP_", "MKL_", "PYTHONHASHSEED")


def service_address(params: Params, paths: Paths) -> str:
    """The socket name of the process that may train this project's cells."""
    startup = sorted((k, v) for k, v in os.environ.items() if k.startswith(STARTUP_PREFIXES))
    identity = json.dumps(
        [
            str(paths.root),
            str(PACKAGE),
            code_digest(),
            sys.executable,
            params.train.device,
            params.train.distribute,
            params.train.cpu_threads,  # fixed when TensorFlow initialises
            startup,
        ]
    )
    return "mlpstudy-train-" + hashlib.sha256(identity.encode()).hexdigest()[:32]


def use_environment(forwarded: dict[str, str], cwd: str) -> None:
    """Take on a request's forwarded environment and working directory."""
    for key in [k for k in os.environ if k.startswith(FORWARDED_PREFIXES)]:
        if key not in forwarded:
            del os.environ[key]
    os.environ.update(forwarded)
    os.chdir(cwd)


def failure(error: Exception) -> tuple[int, str, bool]:
    """What a process that trains cells reports for `error`: the exit code (2 bad input, 1 other),
    the text for the user (one line, or a bug's traceback), and whether it may train another cell
    (not after a bug)."""
    if isinstance(error, ConfigError):
        return 2, f"error: {error}\n", True
    message = str(error) if isinstance(error, StageError) else describe(error)
    if message is None:  # a bug: the user sees it, and the process retires
        return 1, traceback.format_exc(), False
    return 1, f"error: {message}\n", True  # e.g. the store or a disk failing mid-cell


def abstract(name: str) -> str:
    """A name in Linux's abstract socket namespace: no file, gone with its process."""
    return "\0" + name


class Relay:
    """A text stream that sends what is written to the client as `{kind: text}` lines."""

    def __init__(self, connection: socket.socket, kind: str, lock: threading.Lock) -> None:
        self.connection, self.kind, self.lock = connection, kind, lock

    def write(self, text: str) -> int:
        if text:
            self.send({self.kind: text})
        return len(text)

    def send(self, message: dict[str, Any]) -> None:
        with self.lock:
            self.connection.sendall(json.dumps(message).encode() + b"\n")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False
