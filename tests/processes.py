"""Child processes for tests, made so that no test can hang on one.

Every child gets its own process group, standard input from /dev/null and its output in a file,
never in a pipe: a daemon it leaves behind (a DVC queue worker, an updater) cannot keep a test
waiting for end-of-file. Every wait has a deadline; past it the whole group is killed and the test
fails with the command and the tail of what it printed. Children still alive when their test ends
are killed by the autouse `reap_children` fixture in conftest.py, which prints their output.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TIMEOUT = 600  # seconds per call; below the per-test limit (pyproject.toml)
TAIL = 4000

_alive: list[Child] = []


@dataclass
class Child:
    """A started child process, its output file and the command, for messages."""

    process: subprocess.Popen
    log: Path
    command: list[str]
    errors: Path | None = None  # stderr's own file, if not in `log`

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        """What the child printed: stdout, then stderr where it has its own file."""
        return "".join(_read(path) for path in (self.log, self.errors) if path)

    def kill(self) -> None:
        """SIGKILL the child's whole process group and reap the child."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        if self in _alive:
            _alive.remove(self)

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """The exit code; past `timeout` the group is killed and the test fails."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(self.describe(f"still running after {timeout:.0f} s")) from None
        if self in _alive:
            _alive.remove(self)
        return code

    def describe(self, what: str) -> str:
        return f"{' '.join(self.command)}: {what}\noutput (tail):\n{self.output()[-TAIL:]}"


def spawn(
    command: list[str],
    *,
    log: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    errors: Path | None = None,
    stdin: Path | None = None,
) -> Child:
    """Start `command` in its own process group, its stdout (and stderr) going to `log`.

    With `errors`, stderr goes to that file instead; with `stdin`, standard input is that file.
    """
    separate = errors.open("w") if errors else contextlib.nullcontext()
    given = stdin.open("rb") if stdin else contextlib.nullcontext()
    with log.open("w") as output, separate as error_output, given as standard_input:
        process = subprocess.Popen(
            [str(part) for part in command],
            cwd=cwd,
            env=env,
            stdin=standard_input or subprocess.DEVNULL,
            stdout=output,
            stderr=error_output or subprocess.STDOUT,
            start_new_session=True,
        )
    child = Child(process, log, [str(part) for part in command], errors)
    _alive.append(child)
    return child


def run(
    command: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = False,
    input_text: str | None = None,
) -> subprocess.CompletedProcess:
    """Run `command` to its end, its stdout and stderr kept apart as in `subprocess.run`.

    With `check`, a non-zero exit fails the test with the command and its output; `input_text`
    is its standard input (else /dev/null).
    """
    out, err, given = _temp_file(), _temp_file(), None
    if input_text is not None:
        given = _temp_file()
        given.write_text(input_text)
    try:
        child = spawn(command, log=out, errors=err, cwd=cwd, env=env, stdin=given)
        code = child.wait(timeout)
        stdout, stderr = _read(out), _read(err)
    finally:
        out.unlink(missing_ok=True)
        err.unlink(missing_ok=True)
        if given is not None:
            given.unlink(missing_ok=True)
    if check and code != 0:
        raise AssertionError(
            f"{' '.join(child.command)} exited {code}\nstdout:\n{stdout[-TAIL:]}\n"
            f"stderr:\n{stderr[-TAIL:]}"
        )
    return subprocess.CompletedProcess(child.command, code, stdout, stderr)


def alive_children() -> list[Child]:
    return [child for child in _alive if child.process.poll() is None]


def reap() -> list[str]:
    """Kill every child still running, and whatever its process group left behind.

    Returns a description of each child that was still running (for the test's report).
    """
    reports = []
    for child in list(_alive):
        if child.process.poll() is None:
            reports.append(child.describe("still running when its test ended; killed"))
        child.kill()  # the group too: a daemon it started in its group goes with it
    return reports


def running() -> list[tuple[int, int, list[bytes]]]:
    """(pid, parent pid, argv) of every process on the machine, to find ones that tests'
    commands start outside their own process groups (warm training processes, queue workers)."""
    table = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():  # /proc/self, /proc/sys, ...
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):  # not a process, or gone meanwhile
            continue
        table.append((int(entry.name), parent, argv))
    return table


def _temp_file() -> Path:
    handle, name = tempfile.mkstemp(prefix="child-", suffix=".log")
    os.close(handle)
    return Path(name)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
