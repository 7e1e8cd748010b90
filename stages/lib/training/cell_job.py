"""A cell as the stage hands it to a worker (`CellJob`) and as the worker hands it back
(`CellResult`). Plain data, no TensorFlow: the stage's own process never imports it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.lib.core.config import Params
from stages.lib.core.grid import Cell

Splits = dict[str, tuple[np.ndarray, np.ndarray]]  # "train" and "validation": (images, labels)


@dataclass(frozen=True)
class CellJob:
    """A cell's effective configuration and everything its worker needs besides the data."""

    params: Params
    cell: Cell
    config: dict[str, Any]  # the effective configuration: every setting it trains with
    digest: str  # of the configuration, the data and the training code: names its result
    data_digests: dict[str, str]  # of the "train" and "validation" splits
    data_files: dict[str, str]  # where the driver read each split (MLflow's dataset source)
    tracking_uri: str
    tags: dict[str, str]  # the run's tags known to the driver (study, grid parent, commit)
    checkpoints: Path  # the folder of checkpoint folders (on the worker's machine)

    @property
    def key(self) -> str:
        return self.cell.key

    @property
    def checkpoint_folder(self) -> Path:
        return self.checkpoints / self.digest


@dataclass(frozen=True)
class CellResult:
    """A trained cell: its output files (paths relative to the project root) and metrics."""

    key: str
    files: dict[str, bytes]
    metrics: dict[str, Any]
    seconds: float  # wall time on the worker
