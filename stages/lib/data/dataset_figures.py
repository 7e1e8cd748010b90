"""The two figures of the preprocess stage: sample digits and per-class counts per split.

Matplotlib is imported inside the functions (it costs ~0.5 s) and used through `Figure` objects,
never pyplot, so no global backend or figure state is involved; PNGs are rendered by Agg.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stages.lib.core.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100


def _save(figure: Figure, target: Path) -> None:
    """Render `figure` to a PNG at `target` through a temp file, so no half-written PNG remains."""
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)


def save_samples(images: np.ndarray, labels: np.ndarray, grid: int, target: Path) -> None:
    """A `grid` x `grid` mosaic of the first images, each titled with its label."""
    from matplotlib.figure import Figure

    cell_inches = min(1.0, 12.0 / grid)  # an 8 x 8 grid is 8 inches wide; a 20 x 20 one 12
    title_inches = 0.5
    width = grid * cell_inches
    figure = Figure(figsize=(width, width + title_inches), dpi=DPI)
    figure.subplots_adjust(
        left=0.01,
        right=0.99,
        bottom=0.01,
        top=1 - title_inches / (width + title_inches),
        wspace=0.1,
        hspace=0.35,
    )
    axes = figure.subplots(grid, grid, squeeze=False)
    fontsize = max(6.0, 10.0 * cell_inches)
    for index, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if index < len(images):
            ax.imshow(images[index], cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(str(int(labels[index])), fontsize=fontsize, pad=2)
    shown = min(len(images), grid * grid)
    figure.suptitle(f"The first {shown} training digits, titled with their labels", fontsize=11)
    _save(figure, target)


def save_class_distribution(counts: Mapping[str, Sequence[int]], target: Path) -> None:
    """Grouped bars: images per digit (x) for each split (one colour per split)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5), dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    digits = np.arange(10)
    width = 0.8 / max(len(counts), 1)
    for position, (split, per_digit) in enumerate(counts.items()):
        offset = (position - (len(counts) - 1) / 2) * width
        ax.bar(digits + offset, per_digit, width, label=f"{split} ({sum(per_digit)} images)")
    ax.set_xticks(digits)
    ax.set_xlabel("Digit")
    ax.set_ylabel("Images")
    ax.set_title("Images per digit in each split")
    tallest = max((max(per_digit, default=0) for per_digit in counts.values()), default=0)
    ax.set_ylim(0, 1.2 * max(tallest, 1))
    ax.legend(loc="upper center", ncols=max(len(counts), 1))  # the headroom above keeps it clear
    ax.grid(axis="y", alpha=0.3)
    _save(figure, target)
