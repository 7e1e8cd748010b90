"""What a trained cell leaves behind: the model, its run record, its history and its metrics.

A worker writes them into a scratch folder and returns them; the stage installs them into the
workspace. Every file and folder is written beside its target and renamed into place, so DVC
never records one half-written by a process that was killed.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras

from stages.lib.core.atomic import write_json, write_text
from stages.lib.training.callbacks import HISTORY_COLUMNS

HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"


def history_csv(rows: Sequence[Mapping[str, float]]) -> str:
    """The documented columns first, then any extra per-epoch values in name order."""
    extras = sorted({key for row in rows for key in row} - set(HISTORY_COLUMNS))
    columns = [*HISTORY_COLUMNS, *extras]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in columns])
    return buffer.getvalue()


def _cell(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(value)


def summarize(
    rows: Sequence[Mapping[str, float]], stopped_early: bool, parameter_count: int, device: str
) -> dict[str, Any]:
    """The cell's metrics.json. The best epoch has the lowest validation loss (the first one on
    ties; NaN never counts as better), as early stopping judges: with early stopping on, its
    weights are the ones the model keeps."""
    if not rows:
        raise ValueError("no epoch was trained; nothing to summarize")
    best = min(rows, key=lambda row: _finite_or_inf(row["val_loss"]))
    return {
        "best_val_accuracy": float(best["val_accuracy"]),
        "best_val_loss": float(best["val_loss"]),
        "best_epoch": int(best["epoch"]),
        "epochs_run": len(rows),
        "stopped_early": bool(stopped_early),
        "parameter_count": int(parameter_count),
        "train_seconds": float(sum(row["epoch_seconds"] for row in rows)),
        "device": device,
    }


def _finite_or_inf(value: float) -> float:
    return value if math.isfinite(value) else math.inf


def save_model(model: keras.Model, target: Path) -> None:
    """Keras insists on a `.keras` name, so the temporary file carries one too."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=".keras", dir=target.parent
    )
    os.close(handle)
    try:
        model.save(temporary)
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)


def write_reports(
    folder: Path, rows: Sequence[Mapping[str, float]], metrics: dict[str, Any]
) -> None:
    write_text(folder / HISTORY_FILE, history_csv(rows))
    write_json(folder / METRICS_FILE, metrics)


def install(root: Path, folders: Sequence[Path], files: Mapping[str, bytes]) -> None:
    """Write a trained cell's `files` (paths relative to `root`) into the workspace, replacing
    each of its `folders` as a whole: written beside it first, then swapped in by renames, so a
    kill never leaves a folder half-written (at worst a folder missing: the cell trains again)."""
    for folder in folders:
        prefix = folder.relative_to(root).as_posix() + "/"
        incoming, old = _siblings(folder)
        shutil.rmtree(incoming, ignore_errors=True)
        incoming.mkdir(parents=True)
        for name, data in files.items():
            if name.startswith(prefix):
                target = incoming / name.removeprefix(prefix)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            os.replace(folder, old)
        os.replace(incoming, folder)
        shutil.rmtree(old, ignore_errors=True)


def remove_leftovers(folder: Path) -> None:
    """Drop what an `install` cut short by a kill left beside the cell folders in `folder`."""
    if folder.is_dir():
        for leftover in [*folder.glob(f".*{INCOMING}"), *folder.glob(f".*{OLD}")]:
            shutil.rmtree(leftover, ignore_errors=True)


INCOMING, OLD = ".incoming", ".replaced"


def _siblings(folder: Path) -> tuple[Path, Path]:
    return folder.with_name(f".{folder.name}{INCOMING}"), folder.with_name(f".{folder.name}{OLD}")
