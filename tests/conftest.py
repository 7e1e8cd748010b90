"""Shared fixtures. Test configs start from the real params.yaml, shrunk, so they cannot drift."""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import socket
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import processes
import pytest
import yaml

from stages.lib.core.paths import MNIST_FILES

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Tests that train in the pytest process train as the stage does: with params.yaml's
    `train.cpu_threads`, which TensorFlow accepts only before it starts (before any test runs)."""
    import tensorflow as tf

    threads = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())["train"]["cpu_threads"]
    tf.config.threading.set_intra_op_parallelism_threads(threads)


REAL_MNIST = Path(os.environ.get("MLPSTUDY_REAL_MNIST", PROJECT_ROOT.parent / "shared" / "mnist"))


@pytest.fixture
def real_params_dict() -> dict[str, Any]:
    """The real params.yaml as a plain dict (a fresh copy per test, edit freely)."""
    return copy.deepcopy(yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text()))


@pytest.fixture
def real_mnist() -> Path:
    """The directory holding the four real MNIST .gz files; skips the test where it is absent."""
    if not all((REAL_MNIST / f"{name}.gz").is_file() for name in MNIST_FILES):
        pytest.skip(f"the real MNIST files are not at {REAL_MNIST} (set MLPSTUDY_REAL_MNIST)")
    return REAL_MNIST


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 with a sqlite backend under tmp_path; stopped afterwards."""
    bin_dir = Path(sys.executable).parent
    port = free_port()
    server = processes.spawn(
        [
            bin_dir / "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--default-artifact-root",
            tmp_path / "server-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        log=tmp_path / "server.log",
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{server.output()[-4000:]}")
            time.sleep(0.5)
        yield uri
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        with contextlib.suppress(AssertionError):  # not gone in 30 s: killed, group and all
            server.wait(timeout=30)


@pytest.fixture(autouse=True)
def reap_children() -> Iterator[None]:
    """Kill any child a test left running (see processes.py) and show what it printed."""
    yield
    reports = processes.reap()
    for report in reports:
        print(report)  # shown with a failing test's output
    if reports:
        warnings.warn(f"{len(reports)} child process(es) left running, killed", stacklevel=1)
