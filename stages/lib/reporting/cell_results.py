"""The per-cell files that train and evaluate leave behind, read in one place for the report.

A change in one of those formats is one edit here. Only the cells of the current grid are read:
files left behind by values since removed from `params.yaml` stay where they are, unread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from stages.lib.core.config import FACTORS, ConfigError, ReportParams
from stages.lib.core.grid import Cell
from stages.lib.core.paths import Paths
from stages.lib.reporting.cell_outcomes import HISTORY_NEEDS, outcomes

DIGITS: tuple[str, ...] = tuple(f"digit_{digit}" for digit in range(10))
# reports/train/<key>/metrics.json and reports/evaluate/metrics/<key>.json keys the report reads.
TRAIN_KEYS: tuple[str, ...] = (
    "best_val_accuracy",
    "best_val_loss",
    "best_epoch",
    "epochs_run",
    "stopped_early",
    "train_seconds",
)
EVALUATE_KEYS: tuple[str, ...] = ("test_accuracy", "test_loss", "test_f1_macro")
# history.csv columns read: the learning curves' and those the cell's outcomes need.
HISTORY_COLUMNS: tuple[str, ...] = ("val_loss", *HISTORY_NEEDS)
DIAGNOSTICS_COLUMNS: tuple[str, ...] = (
    "epoch",
    "layer",
    "grad_norm",
    "dead_fraction",
    "saturated_fraction",
)


@dataclass(frozen=True)
class CellFiles:
    """Where one cell's results are, and which stage writes each file."""

    train_metrics: Path
    history: Path
    diagnostics: Path
    evaluate_metrics: Path
    per_digit: Path

    @classmethod
    def of(cls, paths: Paths, cell: Cell) -> CellFiles:
        train = paths.train_reports(cell.key)
        return cls(
            train_metrics=train / "metrics.json",
            history=train / "history.csv",
            diagnostics=train / "diagnostics.csv",
            evaluate_metrics=paths.evaluate_metrics(cell.key),
            per_digit=paths.evaluate_tables(cell.key) / "per_digit.csv",
        )

    def required(self, diagnostics: bool) -> list[tuple[Path, str]]:
        """(file, stage that writes it) for every file the report cannot do without."""
        return [
            (self.train_metrics, "train"),
            (self.history, "train"),
            *([(self.diagnostics, "train")] if diagnostics else []),
            (self.evaluate_metrics, "evaluate"),
            (self.per_digit, "evaluate"),
        ]


def check_complete(paths: Paths, cells: list[Cell], diagnostics: bool) -> None:
    """Raise ConfigError naming the first cell whose results are missing and the stage to run.

    With `diagnostics` on (train.diagnostics.enabled), each cell's diagnostics.csv is required.
    """
    missing = [
        (cell, file, stage)
        for cell in cells
        for file, stage in CellFiles.of(paths, cell).required(diagnostics)
        if not file.is_file()
    ]
    if not missing:
        return
    cell, file, stage = missing[0]
    target = stage
    others = len({c.key for c, _, _ in missing} - {cell.key})
    more = f"; {others} more cell(s) of the grid miss results too" if others else ""
    raise ConfigError(
        f"{file.relative_to(paths.root)}: missing, so cell {cell.key} of the grid has not been "
        f"{'trained' if stage == 'train' else 'evaluated'}; run `dvc repro` "
        f"(or `dvc repro {target}`) before the report{more}"
    )


def read_study(
    paths: Paths, cells: list[Cell], diagnostics: bool, report: ReportParams
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """(cells table: one row per cell in grid order, tidy histories, tidy diagnostics or None),
    each file read once; ConfigError first if any cell lacks files."""
    check_complete(paths, cells, diagnostics)
    histories = [read_history(paths, cell) for cell in cells]
    probes = [read_diagnostics(paths, cell) if diagnostics else None for cell in cells]
    rows = map(partial(read_cell, paths, report), cells, histories, probes)
    tidy_probes = pd.concat(probes, ignore_index=True) if diagnostics else None
    return pd.DataFrame(list(rows)), pd.concat(histories, ignore_index=True), tidy_probes


def read_cell(
    paths: Paths,
    report: ReportParams,
    cell: Cell,
    history: pd.DataFrame,
    diagnostics: pd.DataFrame | None,
) -> dict[str, Any]:
    """One row of the cells table: factors, seed, key, metrics, per-digit accuracy (recall), and
    the outcomes beside accuracy (cell_outcomes.py) from the cell's `history` and `diagnostics`
    as read_history and read_diagnostics return them (None: diagnostics off, evidence NaN)."""
    files = CellFiles.of(paths, cell)
    train = _read_json(files.train_metrics, TRAIN_KEYS)
    evaluate = _read_json(files.evaluate_metrics, EVALUATE_KEYS)
    per_digit = _read_csv(files.per_digit, ("digit", "recall"))
    digits = dict(
        zip(per_digit["digit"].astype(int), per_digit["recall"].astype(float), strict=True)
    )
    if sorted(digits) != list(range(10)):
        raise ConfigError(f"{files.per_digit}: digits {sorted(digits)}; expected one row per 0-9")
    return {
        **{factor: getattr(cell, factor) for factor in FACTORS},
        "seed": cell.seed,
        "key": cell.key,
        **{key: float(evaluate[key]) for key in EVALUATE_KEYS},
        "best_val_accuracy": float(train["best_val_accuracy"]),
        "best_epoch": int(train["best_epoch"]),
        "epochs_run": int(train["epochs_run"]),
        "stopped_early": bool(train["stopped_early"]),
        "train_seconds": float(train["train_seconds"]),
        **{f"digit_{digit}": value for digit, value in sorted(digits.items())},
        **outcomes(history, train, diagnostics, report.target_val_accuracy, report.failure_margin),
    }


def read_history(paths: Paths, cell: Cell) -> pd.DataFrame:
    """HISTORY_COLUMNS per epoch (1-based), with the cell's factors and key."""
    history = _read_csv(CellFiles.of(paths, cell).history, HISTORY_COLUMNS)
    return _label(history[list(HISTORY_COLUMNS)], cell)


def read_diagnostics(paths: Paths, cell: Cell) -> pd.DataFrame:
    """Tidy diagnostics per epoch (0 = at initialization) and hidden layer, NaN where undefined."""
    file = CellFiles.of(paths, cell).diagnostics
    return _label(_read_csv(file, DIAGNOSTICS_COLUMNS)[list(DIAGNOSTICS_COLUMNS)], cell)


def _label(table: pd.DataFrame, cell: Cell) -> pd.DataFrame:
    labels = {**{factor: getattr(cell, factor) for factor in FACTORS}, "seed": cell.seed}
    return table.assign(**labels, key=cell.key)


def _read_json(file: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{file}: cannot read it as JSON ({error})") from None
    absent = [key for key in keys if not isinstance(data, dict) or key not in data]
    if absent:
        raise ConfigError(f"{file}: missing key(s) {', '.join(absent)}; re-run its stage")
    return data


def _read_csv(file: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        table = pd.read_csv(file)
    except (OSError, ValueError) as error:
        raise ConfigError(f"{file}: cannot read it as CSV ({error})") from None
    absent = [column for column in columns if column not in table.columns]
    if absent or table.empty:
        what = f"missing column(s) {', '.join(absent)}" if absent else "no rows"
        raise ConfigError(f"{file}: {what}; re-run its stage")
    return table
