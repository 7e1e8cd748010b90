"""Shared fixtures. Test configs start from the real params.yaml, shrunk, so they cannot drift."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stages.lib.paths import MNIST_FILES

PROJECT_ROOT = Path(__file__).resolve().parents[1]
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
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [
            str(bin_dir / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--default-artifact-root",
            str(tmp_path / "server-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
        start_new_session=True,
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
            if server.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(
                    f"mlflow server did not start:\n{(tmp_path / 'server.log').read_text()}"
                )
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()
        log.close()
