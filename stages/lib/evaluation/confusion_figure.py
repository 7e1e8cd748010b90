"""The confusion heatmap of the evaluate stage, built once per process and redrawn per cell.

A grid of thousands of cells draws it thousands of times (issue 21). Building it (axes, colorbar,
100 texts) and its constrained layout measuring those texts cost about half of drawing it, so
the figure is built once and each cell sets its image data, counts and title. The counts sit
inside their squares, so the layout leaves them out without moving anything; the layout starts
from the positions the axes were built with, so it places them as in a figure built for the cell
alone: the same pixels (tested).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stages.lib.core.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

DPI = 100


def save_png(figure: Figure, target: Path) -> None:
    """Render `figure` to a PNG at `target` through a temp file, so no half-written PNG remains."""
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)


@dataclass(frozen=True)
class _Confusion:
    figure: Figure
    axes: Axes
    image: AxesImage
    counts: list[Text]  # row by row: true digit, then predicted digit
    built: list[tuple[Axes, Bbox, Bbox]]  # each axes with its position before any layout


@functools.cache
def _confusion_figure(classes: int) -> _Confusion:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 6.5), dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(np.zeros((classes, classes)), cmap="Blues", vmin=0.0, vmax=1.0)
    counts = [
        ax.text(predicted, true, "", ha="center", va="center", fontsize=8, in_layout=False)
        for true in range(classes)
        for predicted in range(classes)
    ]
    ticks = np.arange(classes)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel("Predicted digit")
    ax.set_ylabel("True digit")
    figure.colorbar(image, ax=ax, label="Share of the true digit's test images", shrink=0.85)
    built = [
        (axes, axes.get_position(True).frozen(), axes.get_position().frozen())
        for axes in figure.axes
    ]
    return _Confusion(figure, ax, image, counts, built)


def save_confusion(counts: np.ndarray, normalized: np.ndarray, title: str, target: Path) -> None:
    """Heatmap coloured by the share of each true digit, with the counts written in the cells.

    Colouring by share, not count, keeps a rare digit's mistakes as visible as a common one's.
    """
    drawn = _confusion_figure(counts.shape[0])
    drawn.image.set_data(normalized)
    for text, count, share in zip(drawn.counts, counts.flat, normalized.flat, strict=True):
        text.set_text(str(int(count)))
        text.set_color("white" if share > 0.5 else ("black" if count else "#b0b0b0"))
    drawn.axes.set_title(title)
    # The constrained layout starts from the axes' current positions (the last cell's layout):
    # from where they were built, it places them as in a figure built for this cell alone.
    for axes, original, active in drawn.built:
        axes._set_position(original, which="original")
        axes._set_position(active, which="active")
    save_png(drawn.figure, target)
