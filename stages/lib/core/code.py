"""Which code a stage runs: its modules (what dvc.yaml lists as its code deps; tests/test_layout.py
checks it) and their digest, for what must not outlive an edit of that code: a trained cell (its
configuration digest covers the train stage's code, so editing it re-trains every cell, as DVC
re-runs the stage, while an edit elsewhere re-trains none; a cluster worker with other code is
refused) and an evaluated cell (evaluate's own code)."""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2]  # the `stages` package
ROOT = PACKAGE.parent
# Modules the stages use for plumbing (validation, paths, errors, atomic writes, the cluster that
# runs their cells): they do not change what a stage computes, so they are not its deps (editing
# one must not re-run the grid).
PLUMBING = frozenset(
    {
        "stages/__init__.py",
        "stages/lib/__init__.py",
        "stages/lib/cluster/__init__.py",
        "stages/lib/cluster/engine.py",  # where cells run, never what they compute
        "stages/lib/cluster/recycling.py",
        "stages/lib/core/atomic.py",
        "stages/lib/core/code.py",  # which code runs: never a number
        "stages/lib/core/config.py",
        "stages/lib/core/config_messages.py",
        "stages/lib/core/errors.py",
        "stages/lib/core/grid.py",
        "stages/lib/core/paths.py",
        "stages/lib/core/variants.py",
    }
)


def stage_modules(stage: str) -> list[str]:
    """`stages/<stage>.py` and the project modules it imports, transitively (imports inside
    functions too), less PLUMBING, as paths from the project root: the code whose edit changes
    what the stage computes, which dvc.yaml lists as its deps (tests/test_layout.py checks it)."""
    found: set[Path] = set()
    pending = [PACKAGE / f"{stage}.py"]
    while pending:
        module = pending.pop()
        if module in found:
            continue
        found.add(module)
        pending.extend(_imported_files(module))
    names = {module.relative_to(ROOT).as_posix() for module in found}
    return sorted(names - PLUMBING)


@functools.cache
def stage_digest(stage: str) -> str:
    """A digest of `stage_modules(stage)`, names and contents (read once per process)."""
    return _digest([ROOT / name for name in stage_modules(stage)], ROOT)


def _imported_files(module: Path) -> list[Path]:
    """The files of the project modules that `module` imports (`from stages.x import y` may
    import the module `stages.x.y`)."""
    names = []
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stages"):
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names if alias.name.startswith("stages")]
    files = [ROOT / (name.replace(".", "/") + ".py") for name in names]
    return [file for file in files if file.is_file()]


def _digest(files: list[Path], base: Path) -> str:
    code = hashlib.sha256()
    for file in files:
        code.update(file.relative_to(base).as_posix().encode() + b"\0" + file.read_bytes())
    return code.hexdigest()
