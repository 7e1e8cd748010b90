"""The warm training process: trains the cells that `mlpstudy train` clients hand it, in turn.

Started by train_client.py as `python -m stages.cli train-service ADDRESS ROOT IDLE`.
It imports TensorFlow, Keras, MLflow and the train stage once, listens on ADDRESS (an abstract
unix socket), and for each request trains one cell exactly as `mlpstudy train` in a fresh process
would: the client's DVC and MLflow environment and working directory, the cell's own seeds
(`stages.train.run` seeds everything before it builds the model), a cleared Keras session after
it. Output goes back to the client, a line at a time; the last message is the exit code.

When its client goes away mid-cell (DVC interrupted or killed), the process exits on the spot,
as a killed `mlpstudy train` would; the checkpoint of the last completed epoch is what survives.
After an unexpected error it answers and exits, so a damaged process never trains another cell.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import keras

from stages.lib.core.config import load_params
from stages.lib.core.grid import Cell
from stages.lib.core.paths import Paths
from stages.lib.training import served_cell, train_pool
from stages.lib.training.service_protocol import Relay, abstract, failure, use_environment

CHECK_SECONDS = 5.0  # how often an idle process looks at its clock and its project root


def _exit_when_client_leaves(connection: socket.socket, finished: threading.Event) -> None:
    """The client sends nothing after its request: end of stream means it is gone."""
    with contextlib.suppress(OSError):
        connection.recv(1)
    if not finished.is_set():
        os._exit(3)  # like a killed `mlpstudy train`: no cleanup, the checkpoint stays


def handle(connection: socket.socket, run: served_cell.RunCell, pool: train_pool.Pool) -> bool:
    """Serve one request; False when the process should not train another cell."""
    request = json.loads(connection.makefile("rb").readline() or b"{}")
    if "cell" not in request:
        return True
    finished = threading.Event()
    threading.Thread(
        target=_exit_when_client_leaves, args=(connection, finished), daemon=True
    ).start()
    lock = threading.Lock()
    out, err = Relay(connection, "out", lock), Relay(connection, "err", lock)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    code, healthy = 0, True
    try:
        use_environment(request["env"], request["cwd"])
        paths = Paths.at(request["root"])
        params = load_params(paths.params)
        cell = Cell(**request["cell"])
        if served_cell.pool_size(params):
            code = served_cell.train_in_pool(pool, run, params, cell, paths, request)
        else:
            pool.close()  # e.g. parallel_cells set to 1: no worker may still write a checkpoint
            served_cell.train_here(run, params, cell, paths, request["session"])
    except Exception as error:
        code, text, healthy = failure(error)
        err.write(text)
    finally:
        sys.stdout, sys.stderr = saved
        keras.backend.clear_session()
        gc.collect()
    finished.set()
    out.send({"exit": code})
    connection.shutdown(socket.SHUT_RDWR)
    return healthy


def _end_older_processes(root: Path, address: str) -> None:
    """End this project's processes of other code or settings (an edit mid-`dvc repro`): their
    workers must not go on writing checkpoints that this process's workers train."""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # not a process, or gone meanwhile
            continue
        ours = len(argv) > 5 and argv[3] == b"train-service" and argv[5] == str(root).encode()
        if ours and argv[4] != address.encode() and int(entry.name) != os.getpid():
            print(f"ending the training process {entry.name} of other code", flush=True)
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGTERM)


def _age() -> float:
    """Seconds since this process started (Linux: /proc), interpreter and imports included."""
    started = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - started / os.sysconf("SC_CLK_TCK")


def serve(address: str, root: Path, idle_seconds: float, run: served_cell.RunCell) -> int:
    """Train the cells that clients send to `address` until idle for `idle_seconds`."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(abstract(address))
    except OSError:  # another process took the address first: it serves
        return 0
    listener.listen(16)
    listener.settimeout(min(CHECK_SECONDS, idle_seconds))
    print(f"training process {os.getpid()} ready for {root} after {_age():.2f} s", flush=True)
    _end_older_processes(root, address)
    pool = train_pool.Pool(Paths.at(root))
    try:
        return _serve(listener, root, idle_seconds, run, pool)
    finally:
        pool.close()


def _serve(
    listener: socket.socket,
    root: Path,
    idle_seconds: float,
    run: served_cell.RunCell,
    pool: train_pool.Pool,
) -> int:
    last = time.monotonic()
    while True:
        try:
            connection, _ = listener.accept()
            begun = time.monotonic()
        except TimeoutError:
            if time.monotonic() - last > idle_seconds or not root.is_dir():
                print(f"training process {os.getpid()} idle, exiting", flush=True)
                return 0
            continue
        with connection:
            connection.settimeout(None)
            healthy = handle(connection, run, pool)
        print(f"request served in {time.monotonic() - begun:.2f} s", flush=True)
        last = time.monotonic()
        if not healthy:
            return 1
