"""Train cells as the train stage does, inside the test's process (for tests that need a trained
cell, or that look at one cell's training): the stage's own `run` on a grid of those cells, with
one worker, which is a thread of this process (stages/lib/cluster/engine.py). And read what
training leaves behind: a run's split inputs, a checkpoint's committed epochs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlflow.entities import Run

from stages import train
from stages.lib.core.config import AXES, Params
from stages.lib.core.grid import Cell
from stages.lib.core.paths import Paths
from stages.lib.training import checkpoint


def only(params: Params, cell: Cell, **train_settings: Any) -> Params:
    """`params` with the grid narrowed to `cell`, one cell at a time, and `train_settings`."""
    lists = {axis: [getattr(cell, axis)] for axis in AXES}
    settings = {**lists, "parallel_cells": 1, **train_settings}
    return params.model_copy(update={"train": params.train.model_copy(update=settings)})


def train_one(params: Params, cell: Cell, paths: Paths, **train_settings: Any) -> dict[str, Any]:
    """Train `cell` (unless its result is up to date) and return its metrics.json."""
    train.run(only(params, cell, **train_settings), paths)
    return json.loads((paths.train_reports(cell.key) / "metrics.json").read_text())


def split_inputs(run: Run) -> set[tuple[str, str, str]]:
    """The splits `run` records as dataset inputs: (name, context, digest) each."""
    return {(i.dataset.name, i.tags[0].value, i.dataset.digest) for i in run.inputs.dataset_inputs}


def committed_epochs(checkpoint_folder: Path) -> int:
    """The epochs a live cell's checkpoint has committed; 0 while it is written or removed.

    Read only: `checkpoint.load` would finish a commit, which is the training process's to do.
    """
    try:
        metadata = (checkpoint_folder / checkpoint.METADATA_FILE).read_text()
        return int(json.loads(metadata)["epoch"])
    except (OSError, ValueError, KeyError):
        return 0
