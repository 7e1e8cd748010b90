"""The report's accuracy figures: main effects, interactions, learning curves, per-digit accuracy.

Each is readable on its own: title, axis labels, legend or colour bar, and values where useful.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from stages.lib.core.config import Interaction
from stages.lib.reporting.cell_results import DIGITS, FACTORS
from stages.lib.reporting.figure_kit import (
    ACCURACY_MAP,
    annotate_cells,
    integer_ticks,
    new_figure,
    percent_axis,
    save,
    tall,
)
from stages.lib.reporting.study_table import combination_label, level_curves


def save_main_effects(effects: pd.DataFrame, confidence: float, target: Path) -> None:
    """One panel per factor that varies: mean test accuracy per level with its CI over seeds."""
    counts = effects.groupby("factor", sort=False).size()
    shown = [f for f in FACTORS if counts.get(f, 0) > 1] or list(FACTORS)
    figure = new_figure(4.2 * len(shown), 4.4)
    axes = figure.subplots(1, len(shown), sharey=True, squeeze=False)[0]
    for axis, factor in zip(axes, shown, strict=True):
        rows = effects[effects["factor"] == factor]
        positions = np.arange(len(rows))
        means = rows["mean"].to_numpy()
        low = np.nan_to_num(means - rows["ci_low"].to_numpy())
        high = np.nan_to_num(rows["ci_high"].to_numpy() - means)
        axis.errorbar(positions, means, yerr=[low, high], fmt="o", capsize=5, markersize=7)
        for position, mean in zip(positions, means, strict=True):
            axis.annotate(
                f"{mean:.2%}", (position, mean), textcoords="offset points", xytext=(8, 0)
            )
        axis.set_xticks(positions, rows["level"].tolist(), rotation=15)
        axis.set_xlim(-0.6, len(rows) - 0.4)
        axis.set_xlabel(factor)
        axis.set_title(f"By {factor}")
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("Mean test accuracy")
    percent_axis(axes[0])
    figure.suptitle(
        f"Main effects: mean test accuracy per level, other factors averaged "
        f"(bars: {confidence:.0%} CI over seeds)"
    )
    save(figure, target)


def save_interactions(
    cells: pd.DataFrame,
    interaction: Interaction,
    levels: dict[str, Sequence[str]],
    target: Path,
) -> None:
    """`rows` x `columns` heatmaps of mean test accuracy over every cell (seeds and the factors
    not shown averaged), one panel per level of `panels` (one panel without it)."""
    rows_axis, columns_axis, panels_axis = interaction.rows, interaction.columns, interaction.panels
    row_levels, column_levels = list(levels[rows_axis]), list(levels[columns_axis])
    panel_levels = list(levels[panels_axis]) if panels_axis else [None]
    width = max(4.0, 0.9 * len(column_levels) + 2.0)
    figure = new_figure(width * len(panel_levels) + 1.0, max(3.2, 0.6 * len(row_levels) + 2.0))
    axes = figure.subplots(1, len(panel_levels), squeeze=False)[0]
    keys = [rows_axis, columns_axis, *([panels_axis] if panels_axis else [])]
    means = cells.groupby(keys, sort=False)["test_accuracy"].mean()
    low, high = float(means.min()), float(means.max())
    image = None
    for axis, panel in zip(axes, panel_levels, strict=True):
        part = means.xs(panel, level=panels_axis) if panels_axis else means
        grid = part.unstack(columns_axis).reindex(index=row_levels, columns=column_levels)
        values = grid.to_numpy(dtype=float)
        image = axis.imshow(values, cmap=ACCURACY_MAP, vmin=low, vmax=high, aspect="auto")
        annotate_cells(axis, values, low, high, "{:.2%}")
        axis.set_xticks(range(len(column_levels)), column_levels, rotation=30, ha="right")
        axis.set_yticks(range(len(row_levels)), row_levels)
        axis.set_xlabel(columns_axis)
        axis.set_ylabel(rows_axis)
        axis.set_title(f"{panels_axis}: {panel}" if panels_axis else "all cells")
    if image is not None:
        figure.colorbar(image, ax=list(axes), label="Mean test accuracy", format="{x:.1%}")
    figure.suptitle(f"Interactions: mean test accuracy by {rows_axis} x {columns_axis}")
    save(figure, target)


def save_learning_curves(
    histories: pd.DataFrame, levels: dict[str, Sequence[str]], target: Path
) -> None:
    """Small multiples by factor that varies: mean validation accuracy per epoch of each level."""
    shown = [f for f in FACTORS if len(levels[f]) > 1] or list(FACTORS)
    figure = new_figure(4.2 * len(shown), 4.2)
    axes = figure.subplots(1, len(shown), sharey=True, squeeze=False)[0]
    for axis, factor in zip(axes, shown, strict=True):
        curves = level_curves(histories, factor)
        for level in levels[factor]:
            if level in curves.columns:
                axis.plot(curves.index, curves[level], marker="o", markersize=3, label=level)
        integer_ticks(axis)
        axis.set_xlabel("Epoch")
        axis.set_title(f"By {factor}")
        axis.legend(title=factor, fontsize=8)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("Mean validation accuracy")
    percent_axis(axes[0])
    figure.suptitle("Learning curves: validation accuracy per epoch, mean over the cells per level")
    save(figure, target)


def save_per_digit(combinations: pd.DataFrame, target: Path) -> None:
    """Combinations (ranked, best first) x digits heatmap of mean per-digit test accuracy."""
    values = combinations[list(DIGITS)].to_numpy(dtype=float)
    labels = [
        f"{combination_label(row)}  ({row['test_accuracy_mean']:.2%})"
        for _, row in combinations.iterrows()
    ]
    figure = new_figure(10.0, tall(len(labels), 0.32))
    axis = figure.add_subplot()
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    image = axis.imshow(values, cmap=ACCURACY_MAP, vmin=low, vmax=high, aspect="auto")
    if len(labels) <= 60:
        annotate_cells(axis, values * 100, low * 100, high * 100, "{:.1f}")
    axis.set_xticks(range(10), [str(digit) for digit in range(10)])
    axis.set_yticks(range(len(labels)), labels, fontsize=8)
    axis.set_xlabel("Digit")
    axis.set_ylabel("Combination (mean test accuracy)")
    figure.colorbar(image, ax=axis, label="Test accuracy on the digit (recall)", format="{x:.1%}")
    axis.set_title("Per-digit test accuracy (%) of each combination, mean over seeds, best first")
    save(figure, target)
