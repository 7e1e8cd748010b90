"""A throwaway copy of the project in a temp git repo, for real `dvc repro` runs on tiny data."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import processes
import yaml
from conftest import PROJECT_ROOT
from synthetic import write_mirror

from stages.lib.core.grid import Cell

BIN = Path(sys.executable).parent
COPIED = ("dvc.yaml", "params.yaml", "stages", ".dvc/config", ".dvcignore", ".gitignore")
COPIED += ("reports/evaluate/.gitignore",)  # DVC's own entries for evaluate's cached plots
# The shrunk grid's one architecture and its one batch size and dropout.
TINY: dict[str, Any] = {"architecture": "tiny", "batch_size": 64, "dropout": 0.0}
TINY_UNITS = [16]


def shrink(params: dict[str, Any]) -> None:
    """The real params, shrunk to a one-cell grid on tiny data that trains in seconds."""
    params["preprocess"]["validation_size"] = 100
    train = params["train"]
    train.update(activation=["relu"], initializer=["glorot_uniform"], optimizer=["adam"], seed=[0])
    train.update({axis: [value] for axis, value in TINY.items()})
    train["architectures"] = {TINY["architecture"]: TINY_UNITS}
    train.update(epochs=1, steps_per_execution=1)
    train["diagnostics"]["probe_size"] = 32
    params["evaluate"]["parallel_cells"] = 1  # in the test's own process: no worker to start


def shrunk_cell(activation: str, initializer: str, optimizer: str, seed: int, **axes: Any) -> Cell:
    """A cell of the shrunk grid's shape: TINY's architecture, batch size and dropout unless
    `axes` say otherwise."""
    values = {**TINY, **axes}
    return Cell(
        activation=activation, initializer=initializer, optimizer=optimizer, seed=seed, **values
    )


def copy_project(source: Path, target: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """The pipeline's files of the project at `source` (COPIED) into `target`, params `edit`ed.

    benchmarks/grid_scaling.py copies each design it measures (a git archive of an older commit
    too) the same way."""
    for name in COPIED:
        origin, copy = source / name, target / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_dir():
            shutil.copytree(origin, copy, ignore=shutil.ignore_patterns("__pycache__"))
        elif origin.exists():
            shutil.copy2(origin, copy)
    params = yaml.safe_load((target / "params.yaml").read_text())
    edit(params)
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_project(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None] = shrink, n_train: int = 600
) -> tuple[Path, dict[str, str]]:
    """Copy the project into tmp_path/project (a git repo with one commit) and a synthetic mirror.

    Returns the project folder and the environment that points the download stage at the mirror.
    """
    project = tmp_path / "project"
    copy_project(PROJECT_ROOT, project, edit)
    mirror = tmp_path / "mirror"
    write_mirror(mirror, n_train=n_train, n_test=200)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLPSTUDY_MNIST_MIRROR": str(mirror),
        "MLPSTUDY_MNIST_SHA256SUMS": str(mirror / "SHA256SUMS"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
        "DVC_NO_ANALYTICS": "1",  # no analytics daemon left behind by a test's dvc
        # DVC runs a stage through $SHELL -c. /bin/sh (what DVC uses when SHELL is unset, as in
        # CI) may stay a stage's parent where bash would exec it: test that harder case anywhere.
        "SHELL": "/bin/sh",
    }
    env.pop("DVC_ROOT", None)
    git(project, env, "init", "-q")
    git(project, env, "add", "-A")
    git(project, env, "commit", "-q", "-m", "project copy")
    return project, env


def git(project: Path, env: dict[str, str], *args: str, **options: Any) -> str:
    return run(project, env, "git", *args, **options)


def dvc(project: Path, env: dict[str, str], *args: str, **options: Any) -> str:
    return run(project, env, str(BIN / "dvc"), *args, **options)


def dvc_json(project: Path, env: dict[str, str], *args: str) -> Any:
    """A dvc command's `--json` output, parsed (stderr, with any warnings, left out)."""
    return json.loads(run(project, env, str(BIN / "dvc"), *args, "--json", stdout_only=True))


def run(
    project: Path,
    env: dict[str, str],
    *command: str,
    stdout_only: bool = False,
    timeout: float = processes.DEFAULT_TIMEOUT,
) -> str:
    """Run `command` in `project`; fail with its output if it fails or outlives `timeout`."""
    result = processes.run(list(command), cwd=project, env=env, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result.stdout if stdout_only else result.stdout + result.stderr
