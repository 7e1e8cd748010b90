"""The two figures of the evaluate stage: the confusion heatmap (confusion_figure.py) and a
grid of mistakes.

As in dataset_figures: matplotlib is imported inside the functions and used through `Figure`
objects (no pyplot state). The grid is one image with text on it rather than one axes per digit:
a single axes renders several times faster than 36.

A grid of thousands of cells draws both figures thousands of times (issue 21), so each figure is
built once per process and redrawn for every cell with that cell's data and texts: the same
pixels as a figure built for the cell alone (tested), without building it again.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.lib.evaluation import metrics
from stages.lib.evaluation.confusion_figure import DPI, save_confusion, save_png
from stages.lib.evaluation.evaluation_tables import CONFUSION_FIGURE, MISTAKES_FIGURE

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage
    from matplotlib.text import Text

TILE = 28  # pixels of a digit
GAP = 4  # pixels between tiles
TITLE_ROOM = 15  # pixels above each tile for its two-line title


@dataclass(frozen=True)
class _Mistakes:
    figure: Figure
    image: AxesImage
    titles: list[Text]  # one per tile
    columns: int
    rows: int


@functools.cache
def _mistakes_figure(count: int) -> _Mistakes:
    """The grid for `count` digits: its size follows the count, so one figure per count."""
    from matplotlib.figure import Figure

    columns = max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / columns))
    step_x, step_y = TILE + GAP, TILE + TITLE_ROOM
    inches_per_tile = 1.15
    title_inches = 0.55
    width = max(columns * inches_per_tile, 4.0)
    height = rows * inches_per_tile * step_y / step_x + title_inches
    figure = Figure(figsize=(width, height), dpi=DPI)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - title_inches / height)
    ax = figure.add_subplot()
    empty = np.ma.masked_invalid(np.full((rows * step_y, columns * step_x), np.nan))
    image = ax.imshow(empty, cmap=_gray_with_background(), vmin=0, vmax=255)
    ax.set_axis_off()
    titles = []
    for index in range(count):
        row, column = divmod(index, columns)
        x, y = column * step_x + step_x / 2, row * step_y + TITLE_ROOM - 1
        titles.append(ax.text(x, y, "", ha="center", va="bottom", fontsize=7.5, linespacing=1.05))
    if count == 0:
        ax.text(
            0.5,
            0.5,
            "no misclassified test digits",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    return _Mistakes(figure, image, titles, columns, rows)


def save_mistakes(
    images: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    confidence: np.ndarray,
    title: str,
    target: Path,
) -> None:
    """A grid of digits titled "true 4 → pred 9" and "(0.87)", the probability of the prediction."""
    drawn = _mistakes_figure(len(images))
    step_x, step_y = TILE + GAP, TILE + TITLE_ROOM
    canvas = np.full((drawn.rows * step_y, drawn.columns * step_x), np.nan)
    for index, text in enumerate(drawn.titles):
        row, column = divmod(index, drawn.columns)
        top, left = row * step_y + TITLE_ROOM, column * step_x + GAP // 2
        canvas[top : top + TILE, left : left + TILE] = images[index]
        text.set_text(
            f"true {int(labels[index])} → pred {int(predictions[index])}\n"
            f"({float(confidence[index]):.2f})"
        )
    drawn.image.set_data(np.ma.masked_invalid(canvas))
    drawn.figure.suptitle(title, fontsize=10)
    save_png(drawn.figure, target)


def _gray_with_background():  # -> matplotlib.colors.Colormap
    """Black digits on white tiles (as in the samples figure), light grey between the tiles."""
    import matplotlib

    return matplotlib.colormaps["gray_r"].with_extremes(bad="#e6e6e6")


def draw_cell(
    images: np.ndarray,
    labels: np.ndarray,
    logits: np.ndarray,
    summary: dict[str, Any],
    shown: int,
    key: str,
    files: dict[str, Path],
) -> None:
    """A cell's confusion heatmap and its most confident mistakes, at `files` (cell_files)."""
    predictions = summary["predictions"]
    accuracy = summary["accuracy"]
    save_confusion(
        summary["confusion"],
        summary["confusion_normalized"],
        f"{key}: test accuracy {accuracy:.2%} ({summary['count']} images)",
        files[CONFUSION_FIGURE],
    )
    confidence = metrics.softmax(logits).max(axis=1)
    chosen = metrics.most_confident_mistakes(labels, predictions, confidence, shown)
    errors = int(np.count_nonzero(labels != predictions))
    save_mistakes(
        images[chosen],
        labels[chosen],
        predictions[chosen],
        confidence[chosen],
        f"{key}: the {len(chosen)} most confident of {errors} mistakes on the test split\n"
        "titled with the probability the model gave its prediction",
        files[MISTAKES_FIGURE],
    )
