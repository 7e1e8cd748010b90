"""Shared plumbing of the report's figures: one look, one size rule, one safe way to save.

Matplotlib is used through `Figure` objects (never pyplot), rendered by Agg, so no global state
is involved; every PNG is written to a temp file and renamed into place.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stages.lib.core.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
ACCURACY_MAP = "viridis"  # colour map of every accuracy heatmap


def new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save(figure: Figure, target: Path) -> None:
    """Render `figure` to a PNG through a temp file, so no half-written PNG remains."""
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)


def tall(rows: int, inches_per_row: float) -> float:
    """Height of a figure with one row per combination: readable, capped for huge grids."""
    return min(max(3.0, inches_per_row * rows + 1.6), 40.0)


def percent_axis(axis: Axes, which: str = "y") -> None:
    from matplotlib.ticker import PercentFormatter

    (axis.yaxis if which == "y" else axis.xaxis).set_major_formatter(PercentFormatter(xmax=1))


def integer_ticks(axis: Axes) -> None:
    """Epochs are whole numbers: no 1.5 on the x axis."""
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def annotate_cells(axis: Axes, values: np.ndarray, low: float, high: float, form: str) -> None:
    """Write each heatmap value in its cell, dark on light colours and light on dark ones."""
    middle = (low + high) / 2.0
    for (row, column), value in np.ndenumerate(values):
        if np.isnan(value):
            continue
        color = "black" if value > middle else "white"
        axis.text(
            column, row, form.format(value), ha="center", va="center", color=color, fontsize=8
        )
