"""The two figures of the evaluate stage: the confusion heatmap and a grid of mistakes.

As in dataset_figures: matplotlib is imported inside the functions and used through `Figure`
objects (no pyplot state). The grid is one image with text on it rather than one axes per digit:
54 cells each draw it, and a single axes renders several times faster than 36.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.lib.core.atomic import atomic_path
from stages.lib.evaluation import metrics
from stages.lib.evaluation.evaluation_tables import CONFUSION_FIGURE, MISTAKES_FIGURE

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
TILE = 28  # pixels of a digit
GAP = 4  # pixels between tiles
TITLE_ROOM = 15  # pixels above each tile for its two-line title


def _save(figure: Figure, target: Path) -> None:
    """Render `figure` to a PNG at `target` through a temp file, so no half-written PNG remains."""
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)


def save_confusion(counts: np.ndarray, normalized: np.ndarray, title: str, target: Path) -> None:
    """Heatmap coloured by the share of each true digit, with the counts written in the cells.

    Colouring by share, not count, keeps a rare digit's mistakes as visible as a common one's.
    """
    from matplotlib.figure import Figure

    classes = counts.shape[0]
    figure = Figure(figsize=(7.5, 6.5), dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(normalized, cmap="Blues", vmin=0.0, vmax=1.0)
    for true in range(classes):
        for predicted in range(classes):
            count = int(counts[true, predicted])
            dark = normalized[true, predicted] > 0.5
            ax.text(
                predicted,
                true,
                str(count),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark else ("black" if count else "#b0b0b0"),
            )
    ticks = np.arange(classes)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel("Predicted digit")
    ax.set_ylabel("True digit")
    ax.set_title(title)
    figure.colorbar(image, ax=ax, label="Share of the true digit's test images", shrink=0.85)
    _save(figure, target)


def save_mistakes(
    images: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    confidence: np.ndarray,
    title: str,
    target: Path,
) -> None:
    """A grid of digits titled "true 4 → pred 9" and "(0.87)", the probability of the prediction."""
    from matplotlib.figure import Figure

    count = len(images)
    columns = max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / columns))
    step_x, step_y = TILE + GAP, TILE + TITLE_ROOM
    canvas = np.full((rows * step_y, columns * step_x), np.nan)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = row * step_y + TITLE_ROOM, column * step_x + GAP // 2
        canvas[top : top + TILE, left : left + TILE] = images[index]

    inches_per_tile = 1.15
    title_inches = 0.55
    width = max(columns * inches_per_tile, 4.0)
    height = rows * inches_per_tile * step_y / step_x + title_inches
    figure = Figure(figsize=(width, height), dpi=DPI)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - title_inches / height)
    ax = figure.add_subplot()
    colormap = _gray_with_background()
    ax.imshow(np.ma.masked_invalid(canvas), cmap=colormap, vmin=0, vmax=255)
    ax.set_axis_off()
    for index in range(count):
        row, column = divmod(index, columns)
        ax.text(
            column * step_x + step_x / 2,
            row * step_y + TITLE_ROOM - 1,
            f"true {int(labels[index])} → pred {int(predictions[index])}\n"
            f"({float(confidence[index]):.2f})",
            ha="center",
            va="bottom",
            fontsize=7.5,
            linespacing=1.05,
        )
    if count == 0:
        ax.text(
            0.5,
            0.5,
            "no misclassified test digits",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    figure.suptitle(title, fontsize=10)
    _save(figure, target)


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
