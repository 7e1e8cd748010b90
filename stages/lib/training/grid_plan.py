"""Which cells of the grid the train stage will train, and why: known before any of them trains.

DVC re-runs the one `train` stage whenever its params, data or code change; the stage itself
then trains exactly the cells whose finished result does not carry their current configuration
digest (stages/lib/core/cell_config.py: the effective configuration, the data and the training
code). So adding a value to a list trains only the new cells, a changed variant re-trains only
its cells, and a cell a killed run left half-trained continues from its checkpoint.
`mlpstudy train --dry-run` prints this plan without training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from stages.lib.core.cell_config import config_digest, effective_config
from stages.lib.core.code import stage_digest
from stages.lib.core.config import Params
from stages.lib.core.grid import Cell, grid
from stages.lib.core.paths import Paths
from stages.lib.training import checkpoint
from stages.lib.training.outputs import HISTORY_FILE, METRICS_FILE

NEW = "new"
CHANGED = "changed"  # its configuration, its data or the training code
INCOMPLETE = "outputs missing"
INTERRUPTED = "interrupted"  # a checkpoint holds some of its epochs


@dataclass(frozen=True)
class PlannedCell:
    cell: Cell
    config: dict
    digest: str
    reason: str | None  # None: its result is up to date
    epochs_done: int = 0  # in its checkpoint (an interrupted cell)

    @property
    def pending(self) -> bool:
        return self.reason is not None

    def describe(self) -> str:
        if self.reason == INTERRUPTED:
            return f"{self.cell.key} (interrupted: continues after epoch {self.epochs_done})"
        return f"{self.cell.key} ({self.reason})"


@dataclass(frozen=True)
class GridPlan:
    cells: list[PlannedCell]  # in the grid's order

    @property
    def pending(self) -> list[PlannedCell]:
        return [planned for planned in self.cells if planned.pending]

    def summary(self) -> str:
        pending, total = len(self.pending), len(self.cells)
        if not pending:
            return f"train: all {total} cells of the grid are up to date; nothing to train"
        return f"train: {pending} of {total} cells to train ({total - pending} up to date)"


def plan(params: Params, paths: Paths, data_digests: dict[str, str]) -> GridPlan:
    """Every cell of the grid in params.yaml, with the reason it must train (or none)."""
    code = stage_digest("train")
    cells = []
    for cell in grid(params.train):
        config = effective_config(params, cell)
        digest = config_digest({**config, "training_code": code}, data_digests)
        cells.append(_planned(paths, cell, config, digest))
    return GridPlan(cells)


def _planned(paths: Paths, cell: Cell, config: dict, digest: str) -> PlannedCell:
    saved = checkpoint.load(paths.checkpoints / digest)
    if saved is not None:
        return PlannedCell(cell, config, digest, INTERRUPTED, saved.epochs_completed)
    recorded = _recorded_digest(paths.run_record(cell.key))
    if recorded is None:
        return PlannedCell(cell, config, digest, NEW)
    if recorded != digest:
        return PlannedCell(cell, config, digest, CHANGED)
    reports = paths.train_reports(cell.key)
    needed: tuple[Path, ...] = (
        paths.model_file(cell.key),
        reports / METRICS_FILE,
        reports / HISTORY_FILE,
    )
    if not all(file.is_file() for file in needed):
        return PlannedCell(cell, config, digest, INCOMPLETE)
    return PlannedCell(cell, config, digest, None)


def _recorded_digest(record: Path) -> str | None:
    """The digest in a cell's run.json, or None where there is none to read."""
    try:
        value = json.loads(record.read_text()).get("config_digest")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
