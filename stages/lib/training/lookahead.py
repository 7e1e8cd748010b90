"""Which cells the running `dvc repro` will train after this one: the ones to train ahead.

DVC runs the matrix cells one after another, in the grid's order. So that the other cores do not
sit idle, the warm training process trains the next cells DVC will ask for before it asks
(train_pool.py). A wrong guess costs only time: a cell trained ahead that DVC never runs leaves a
checkpoint nobody takes over (removed when the process exits), and a cell DVC runs that was not
guessed trains when its stage asks.

DVC's own status needs the repository lock that the running `dvc repro` holds, so the guess reads
what DVC would: the command line of the `dvc repro` / `dvc exp run` that runs the stages
(`--force`, targets), and each later cell's dvc.lock entry against its command, params,
dependencies and outputs now.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stages.lib.core.grid import Cell
from stages.lib.core.paths import Paths
from stages.lib.training import lock_status

# `dvc repro` / `dvc exp run` options that take a value (the rest are flags).
VALUE_OPTIONS = frozenset(
    {"-S", "--set-param", "-n", "--name", "-m", "--message", "-j", "--jobs", "-C", "--copy-paths"}
)
# Stages whose reproduction reproduces every train cell first.
DOWNSTREAM = frozenset({"train", "evaluate", "report"})


@dataclass(frozen=True)
class Invocation:
    """What the command running the stages asked for."""

    forced: bool
    single_item: bool
    targets: tuple[str, ...]

    def runs(self, cell: Cell) -> bool:
        """Whether this command reproduces `cell`'s stage at all (up to date or not)."""
        stage = f"train@{cell.key}"
        for target in self.targets:
            name = target.rsplit(":", 1)[-1]  # dvc.yaml:report -> report
            if target.endswith("dvc.yaml") or fnmatch.fnmatchcase(stage, name):
                return True
            if name in DOWNSTREAM and not self.single_item:
                return True
        return not self.targets


def invocation(pid: int) -> Invocation | None:
    """The `dvc repro` or `dvc exp run` among `pid` and its ancestors, or None."""
    found = runner(pid)
    return found[1] if found is not None else None


def session(pid: int) -> int:
    """The id of a `dvc repro`: the pid of the `dvc repro` / `dvc exp run` among `pid` and its
    ancestors, else `pid` itself (a shell running `mlpstudy train` by hand).

    DVC runs each stage's command through `$SHELL -c` (`/bin/sh` when unset). bash replaces
    itself with a simple command, dash does not: there a stage's parent is a shell of its own,
    and only the ancestor tells the stages of one `dvc repro` apart from the next.
    """
    found = runner(pid)
    return found[0] if found is not None else pid


def runner(pid: int) -> tuple[int, Invocation] | None:
    """(pid, invocation) of the `dvc repro` / `dvc exp run` among `pid` and its ancestors."""
    while pid > 1:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
        parsed = parse_command(argv)
        if parsed is not None:
            return pid, parsed
        pid = parent
    return None


def parse_command(argv: list[str]) -> Invocation | None:
    """The invocation in a `dvc repro ...` / `dvc exp run ...` argv, or None for other commands."""
    words = [word for word in argv if word]
    for index, word in enumerate(words):
        if Path(word).name != "dvc":
            continue
        rest = words[index + 1 :]
        if rest[:1] == ["repro"]:
            return _options(rest[1:])
        if rest[:2] in (["exp", "run"], ["experiments", "run"]):
            return _options(rest[2:])
        return None
    return None


def _options(args: list[str]) -> Invocation:
    targets, flags, skip = [], set(), False
    for arg in args:
        if skip:
            skip = False
        elif arg in VALUE_OPTIONS:
            skip = True
        elif arg.startswith("--"):
            flags.add(arg.split("=", 1)[0])
        elif arg.startswith("-") and len(arg) > 1:
            flags.update(f"-{letter}" for letter in arg[1:])
        else:
            targets.append(arg)
    forced = bool(flags & {"-f", "--force"})
    return Invocation(forced, bool(flags & {"-s", "--single-item"}), tuple(targets))


def pending_after(cell: Cell, cells: list[Cell], paths: Paths, pid: int) -> Iterator[Cell]:
    """The cells after `cell` in `cells` (the grid's order) that the `dvc repro` running as `pid`
    (or an ancestor) will train, in order and judged one at a time (take only what you need);
    none when no such command runs (e.g. `mlpstudy train` by hand)."""
    command = invocation(pid)
    keys = [other.key for other in cells]
    if command is None or cell.key not in keys:
        return
    status = None if command.forced else lock_status.LockStatus.read(paths)
    for later in cells[keys.index(cell.key) + 1 :]:
        if command.runs(later) and (status is None or status.changed(later)):
            yield later
