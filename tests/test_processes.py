"""The test suite's own guard against hangs: children whose daemons hold no pipe, deadlines."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import processes
import pytest

TESTS = Path(__file__).resolve().parent


def test_a_daemon_left_behind_does_not_keep_run_waiting(tmp_path) -> None:
    """`sh` exits at once but leaves a sleeper holding its stdout, as `dvc queue start` does."""
    marker = tmp_path / "sleeper.pid"
    script = f"sleep 60 & echo $! > {marker}; echo started"

    started = time.monotonic()
    try:
        result = processes.run(["sh", "-c", script], timeout=30)
    finally:
        if marker.exists():
            os.kill(int(marker.read_text()), 9)

    assert time.monotonic() - started < 10
    assert result.returncode == 0
    assert result.stdout == "started\n"


def test_a_child_past_its_deadline_is_killed_and_the_test_fails_with_its_output(tmp_path) -> None:
    command = [sys.executable, "-c", "import time; print('working', flush=True); time.sleep(60)"]
    child = processes.spawn(command, log=tmp_path / "child.log")
    deadline = time.monotonic() + 30
    while "working" not in child.output() and time.monotonic() < deadline:
        time.sleep(0.05)

    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"(?s)still running after 2 s.*working"):
        child.wait(timeout=2)

    assert time.monotonic() - started < 15
    assert child.process.returncode == -9
    assert processes.alive_children() == []


def test_a_child_left_running_is_reaped_with_its_output(tmp_path) -> None:
    child = processes.spawn(
        [sys.executable, "-c", "import time; print('still here', flush=True); time.sleep(60)"],
        log=tmp_path / "child.log",
    )
    deadline = time.monotonic() + 30
    while "still here" not in child.output() and time.monotonic() < deadline:
        time.sleep(0.05)

    (report,) = processes.reap()

    assert "still running when its test ended; killed" in report and "still here" in report
    assert child.process.returncode == -9


def test_no_test_starts_a_process_outside_processes_py() -> None:
    """Every child goes through tests/processes.py: output in files, a deadline on every wait."""
    pattern = re.compile(r"subprocess\.(run|Popen|call|check_call|check_output)\(|os\.system\(")
    offenders = [
        f"{path.name}:{number}"
        for path in sorted(TESTS.glob("*.py"))
        if path.name != "processes.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_every_test_has_a_time_limit() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    options = tomllib.loads((TESTS.parent / "pyproject.toml").read_text())["tool"]["pytest"]
    assert 0 < options["ini_options"]["timeout"] <= 1800
    assert options["ini_options"]["timeout"] > processes.DEFAULT_TIMEOUT
