"""Which cells evaluate must evaluate, and evaluate's outputs kept equal to the grid.

A grid of thousands of cells must not be evaluated again whole when one cell is added or
trained again (issue 21), so evaluate's outputs persist from run to run and each evaluated cell
gets a record, `data/exported/<key>/evaluated.json`, written after its other files. The record
names what the files were made from: the trained result (run.json's `run_id` and
`config_digest`, and the model file's digest, so a model replaced in place is not missed) and
the evaluation (evaluate's params but `parallel_cells`, which changes no file; the test split and
evaluate's own code, so editing any of them evaluates every cell again). A cell whose record
matches and whose files are all present is up to date; the outputs of cells no longer in the
grid are removed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.lib.core.atomic import write_json
from stages.lib.core.code import stage_digest
from stages.lib.core.config import SPEED_ONLY, ConfigError, EvaluateParams
from stages.lib.core.paths import Paths, display_path
from stages.lib.evaluation.classifier import EXPORT_FILE
from stages.lib.evaluation.evaluation_tables import cell_files

CHUNK = 1 << 20  # bytes read at a time when hashing a file


@dataclass(frozen=True)
class Trained:
    """A cell's trained result as train recorded it in data/models/<key>/run.json."""

    run_id: str  # the MLflow run that evaluate logs into
    config_digest: str  # the effective configuration and the data it trained on


def read_trained(paths: Paths, key: str, remedy: str) -> Trained:
    """The run id and config digest in data/models/<key>/run.json; ConfigError naming the file."""
    record_file = paths.run_record(key)
    name = display_path(record_file, paths.root)
    try:
        record = json.loads(record_file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{name}: missing; {remedy}") from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"{name}: not a readable run record ({error}); {remedy}") from None
    if not isinstance(record, dict):
        record = {}
    run_id, digest = record.get("run_id"), record.get("config_digest")
    if not isinstance(run_id, str) or not run_id:
        raise ConfigError(f"{name}: has no `run_id` of an MLflow run; {remedy}")
    if not isinstance(digest, str) or not digest:
        raise ConfigError(f"{name}: has no `config_digest` of the trained cell; {remedy}")
    return Trained(run_id, digest)


def evaluation_digest(params: EvaluateParams, test_split: Path) -> str:
    """What every cell's evaluation depends on besides its model: evaluate's params, the test
    split (its file's bytes) and evaluate's code (the modules dvc.yaml lists as its deps)."""
    parts = {
        "params": params.model_dump(mode="json", exclude=set(SPEED_ONLY)),
        "test_split": file_digest(test_split),
        "code": stage_digest("evaluate"),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def cell_record(trained: Trained, model_file: Path, evaluation: str) -> dict[str, str]:
    """The record a cell's evaluation writes last, and that a later run compares."""
    return {
        "run_id": trained.run_id,
        "config_digest": trained.config_digest,
        "model_sha256": file_digest(model_file),
        "evaluation": evaluation,
    }


def cell_outputs(paths: Paths, key: str) -> list[Path]:
    """Every file of an evaluated cell: its tables, figures and metrics, export and record."""
    files = list(cell_files(paths, key).values())
    return [*files, paths.export_dir(key) / EXPORT_FILE, paths.evaluate_record(key)]


def is_up_to_date(paths: Paths, key: str, record: dict[str, str]) -> bool:
    """Whether the cell's files are all present and were made from `record`'s inputs."""
    if not all(path.is_file() for path in cell_outputs(paths, key)):
        return False
    try:
        return json.loads(paths.evaluate_record(key).read_text()) == record
    except (OSError, ValueError):
        return False  # unreadable: the cell is evaluated again and the record rewritten


def write_record(paths: Paths, key: str, record: dict[str, str]) -> None:
    """After every other file of the cell: a run killed before it evaluates the cell again."""
    write_json(paths.evaluate_record(key), record)


def remove_cell(paths: Paths, key: str) -> None:
    """Every file evaluate wrote for the cell, the record first (so it never outlives them)."""
    paths.evaluate_record(key).unlink(missing_ok=True)
    for path in paths.evaluate_cell_outputs(key):
        _remove(path)


def remove_stale(paths: Paths, keys: list[str]) -> set[str]:
    """Remove whatever evaluate's output folders hold beyond the cells `keys` (cells that left
    the grid, a temporary file left by a killed run); return the keys of the cells that went."""
    kept = {path for key in keys for path in paths.evaluate_cell_outputs(key)}
    removed = set()
    for folder in paths.evaluate_outputs:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry in kept:
                continue
            if not entry.name.startswith("."):  # temporary files are hidden (atomic.py)
                removed.add(entry.name if entry.is_dir() else entry.name.removesuffix(entry.suffix))
            _remove(entry)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def read_metrics(paths: Paths, key: str) -> dict[str, Any]:
    """The metrics.json of an up-to-date cell (what evaluating it again would return)."""
    return json.loads(paths.evaluate_metrics(key).read_text())
