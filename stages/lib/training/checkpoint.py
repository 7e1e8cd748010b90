"""Checkpoints that let a cell whose worker (or whole `dvc repro`) was killed continue from its
last completed epoch.

One folder per effective configuration (`.mlpstudy/checkpoints/<config digest>`), outside DVC's
outputs, holds what a resumed process needs:

- `mlflow_run.json`: the run to continue, written as soon as the run exists (one run per cell);
- Keras' BackupAndRestore files: `latest.weights.h5` (weights and optimizer state) and
  `training_metadata.json` (the epoch to resume at), which here also holds our state: the history
  rows so far and the early-stopping state, with the best weights in `best_weights.npz`.

Keras writes its two files in place, one after the other, so a kill can leave weights of one epoch
beside the metadata of another. Here an epoch's files are first written to `staging/`, and the
metadata written last (atomically) is the commit point: a commit that was cut short is finished
on the next start (roll forward), and staged files without metadata are discarded.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from stages.lib.core.atomic import write_json

RUN_FILE = "mlflow_run.json"
WEIGHTS_FILE = "latest.weights.h5"  # BackupAndRestore's names, which its loader reads
METADATA_FILE = "training_metadata.json"
BEST_WEIGHTS_FILE = "best_weights.npz"
STAGING = "staging"
LOCK_SUFFIX = ".lock"


@dataclass
class Snapshot:
    """What a resumed process cannot recompute: history rows, early stopping, best weights."""

    state: dict[str, Any] = field(default_factory=dict)
    best_weights: list[np.ndarray] | None = None


@dataclass(frozen=True)
class Checkpoint:
    """The last committed epoch of a cell (1-based count of completed epochs) and its state."""

    epochs_completed: int
    state: dict[str, Any]
    best_weights: list[np.ndarray] | None


def read_run_file(folder: Path) -> dict[str, Any]:
    """`run_id` of the cell's MLflow run and, once logged, its `model_uri` (empty: fresh start)."""
    file = folder / RUN_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


def update_run_file(folder: Path, **values: str) -> None:
    write_json(folder / RUN_FILE, {**read_run_file(folder), **values})


def load(folder: Path) -> Checkpoint | None:
    """The committed checkpoint in `folder` (finishing an interrupted commit), or None."""
    finish_commit(folder)
    metadata_file = folder / METADATA_FILE
    if not metadata_file.is_file():
        return None
    metadata = json.loads(metadata_file.read_text())
    best_weights = None
    if (folder / BEST_WEIGHTS_FILE).is_file():
        with np.load(folder / BEST_WEIGHTS_FILE, allow_pickle=False) as archive:
            best_weights = [archive[f"w{index}"] for index in range(len(archive.files))]
    return Checkpoint(int(metadata["epoch"]), metadata.get("state", {}), best_weights)


def finish_commit(folder: Path) -> None:
    """Complete a commit whose metadata reached `staging/`; discard one that did not."""
    staging = folder / STAGING
    if not staging.is_dir():
        return
    if (staging / METADATA_FILE).is_file():
        for staged in sorted(staging.iterdir()):
            if staged.name != METADATA_FILE:
                os.replace(staged, folder / staged.name)
        os.replace(staging / METADATA_FILE, folder / METADATA_FILE)
    shutil.rmtree(staging)


def remove(folder: Path) -> None:
    """Drop a cell's checkpoint once its outputs are installed (no attempt of it runs any more):
    nothing is left to resume, and its lock file goes too."""
    discard(folder)
    _lock_file(folder).unlink(missing_ok=True)


def discard(folder: Path) -> None:
    """Drop what a checkpoint holds so that the cell starts over (the attempt keeps its lock)."""
    shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """One attempt of a cell at a time: a second attempt (Dask retrying the cell while a worker
    it gave up on still trains it) waits here until the first one ends, then continues its
    checkpoint instead of writing beside it. The lock ends with the file, or with the process.
    The lock file goes with the checkpoint (`remove`), or here when there is no checkpoint."""
    lock = _lock_file(folder)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = lock.open("a+b")
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:  # still the file at that name, not one removed while this attempt waited
            if os.fstat(handle.fileno()).st_ino == lock.stat().st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        yield
    finally:
        if not folder.exists():  # nothing to continue (the cell failed before its first epoch)
            lock.unlink(missing_ok=True)
        handle.close()


def _lock_file(folder: Path) -> Path:
    return folder.with_name(folder.name + LOCK_SUFFIX)


class CommittingBackup(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, saving each epoch as one commit together with our state.

    Restoring (weights, optimizer state and the epoch to start at) is Keras' own; saving
    overrides its `_save_model` hook (present throughout Keras 3, which pyproject.toml pins).
    The checkpoint is kept after `fit` (the caller removes it once the outputs exist), so a kill
    between the end of training and the written outputs does not train again.
    """

    def __init__(self, folder: Path, snapshot: Callable[[], Snapshot]) -> None:
        super().__init__(backup_dir=str(folder), save_freq="epoch", delete_checkpoint=False)
        self.folder = Path(folder)
        self.snapshot = snapshot

    def on_train_begin(self, logs: dict | None = None) -> None:
        finish_commit(self.folder)
        super().on_train_begin(logs)

    def _save_model(self) -> None:
        staging = self.folder / STAGING
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        _ensure_room(staging, self.model)
        self.model.save_weights(staging / WEIGHTS_FILE)
        snapshot = self.snapshot()
        if snapshot.best_weights is not None:  # staged files count only once committed
            with (staging / BEST_WEIGHTS_FILE).open("wb") as out:
                np.savez(out, **{f"w{i}": array for i, array in enumerate(snapshot.best_weights)})
        metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen}
        write_json(staging / METADATA_FILE, {**metadata, "state": snapshot.state})
        finish_commit(self.folder)


# HDF5 metadata, the JSON files and the file system's blocks, beyond the arrays themselves.
ROOM_MARGIN_BYTES = 1 << 20


def _ensure_room(folder: Path, model: keras.Model) -> None:
    """Raise ENOSPC before a checkpoint that would not fit: HDF5 crashes the process (SIGSEGV in
    h5py's close) instead of raising when the disk fills up under it."""
    variables = [*model.weights, *model.optimizer.variables]
    arrays = sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables)
    needed = 2 * arrays + ROOM_MARGIN_BYTES  # the weights and optimizer state, the best weights
    if shutil.disk_usage(folder).free < needed:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))
