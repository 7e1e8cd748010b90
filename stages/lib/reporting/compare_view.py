"""The compare table once loaded: filter, sort, choose columns, print with rich, write CSV."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from stages.lib.core.atomic import atomic_path
from stages.lib.core.config import AXES, ConfigError

FACTORS: tuple[str, ...] = AXES  # every axis of the grid (the factors and the seed), in key order
# The metrics shown by default, in this order (the CSV holds every param and these metrics).
METRICS: tuple[str, ...] = (
    "test/accuracy",
    "test/f1_macro",
    "test/loss",
    "best_val_accuracy",
    "best_epoch",
    "epochs_run",
    "train_seconds",
)
SHOWN: tuple[str, ...] = ("cell", *FACTORS, *METRICS, "start_time")


def parse_filters(where: Sequence[str]) -> dict[str, list[str]]:
    """`activation=relu` -> {"activation": ["relu"]}; values of one column are alternatives."""
    filters: dict[str, list[str]] = {}
    for condition in where:
        column, equals, value = condition.partition("=")
        if not equals or not column.strip():
            raise ConfigError(f"--where: {condition!r} is not COLUMN=VALUE (e.g. activation=relu)")
        filters.setdefault(column.strip(), []).append(value.strip())
    return filters


def select(
    table: pd.DataFrame,
    where: Sequence[str] = (),
    sort: str = "test/accuracy",
    ascending: bool = False,
    latest: bool = False,
) -> pd.DataFrame:
    """Filter (AND across columns, OR within one), keep the newest run per cell, then sort."""
    filters = parse_filters(where)
    for column in [*filters, sort]:
        if column not in table.columns:
            option = "--sort" if column == sort and column not in filters else "--where"
            raise ConfigError(
                f"{option}: no column {column!r}; columns: {', '.join(map(str, table.columns))}"
            )
    for column, values in filters.items():
        table = table[table[column].astype(str).isin(values)]
    if latest:
        table = table.drop_duplicates("cell", keep="first")  # runs come newest first
    return table.sort_values(sort, ascending=ascending, na_position="last", kind="stable")


def shown_columns(table: pd.DataFrame, where: Sequence[str], sort: str) -> list[str]:
    """The default columns plus any column the user filtered or sorted by."""
    extra = [column for column in [*parse_filters(where), sort] if column not in SHOWN]
    return [column for column in (*SHOWN, *dict.fromkeys(extra)) if column in table.columns]


def write_csv(table: pd.DataFrame, target: Path) -> None:
    with atomic_path(target) as tmp:
        table.to_csv(tmp, index=False)


def print_table(table: pd.DataFrame, columns: list[str], title: str) -> None:
    """A rich table on stdout; wide enough for every column when stdout is not a terminal."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 40 + 16 * len(columns)))
    view = Table(title=Text(title), show_lines=False)
    for column in columns:
        view.add_column(Text(column), justify="right" if column in METRICS else "left")
    for values in table[columns].itertuples(index=False):
        view.add_row(*(Text(_text(value)) for value in values))  # Text: "[128, 64]" is no markup
    console.print(view)


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return "—"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.4f}"
    return str(value)
