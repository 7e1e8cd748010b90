"""The study grid's cells: one `Cell` per combination of the axes' values in `params.yaml`.

A cell's key names its folders (data/models/<key>/, reports/train/<key>/) and its MLflow run.
"""

from __future__ import annotations

import itertools

from pydantic import BaseModel, ConfigDict

from stages.lib.core.config import AXES, TrainParams
from stages.lib.core.variants import Fraction, NonNegativeInt, PositiveInt


class Cell(BaseModel):
    """One combination of the study grid; `key` names its folders and its MLflow run."""

    model_config = ConfigDict(frozen=True, strict=True)

    activation: str
    initializer: str
    optimizer: str
    architecture: str
    batch_size: PositiveInt
    dropout: Fraction
    seed: NonNegativeInt

    @property
    def key(self) -> str:
        """`relu-he_normal-sgd-base-256-0.0-0`: the values in AXES order, each as `str()` writes
        it (0.25 -> "0.25", 1e-05 -> "1e-05")."""
        return "-".join(str(getattr(self, axis)) for axis in AXES)


def grid(train: TrainParams) -> list[Cell]:
    """Every cell of the study grid, the last axis (seed) varying fastest."""
    return [
        Cell(**dict(zip(AXES, values, strict=True)))
        for values in itertools.product(*(getattr(train, axis) for axis in AXES))
    ]
