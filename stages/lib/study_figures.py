"""The report's accuracy figures: main effects, interactions, learning curves, per-digit accuracy.

Each is readable on its own: title, axis labels, legend or colour bar, and values where useful.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from stages.lib.cell_results import DIGITS, FACTORS
from stages.lib.figure_kit import (
    ACCURACY_MAP,
    annotate_cells,
    integer_ticks,
    new_figure,
    percent_axis,
    save,
    tall,
)
from stages.lib.study_table import combination_label, level_curves


def save_main_effects(effects: pd.DataFrame, confidence: float, target: Path) -> None:
    """One panel per factor: mean test accuracy per level with its CI over seeds."""
    figure = new_figure(4.2 * len(FACTORS), 4.4)
    axes = figure.subplots(1, len(FACTORS), sharey=True, squeeze=False)[0]
    for axis, factor in zip(axes, FACTORS, strict=True):
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
    combinations: pd.DataFrame, levels: dict[str, Sequence[str]], target: Path
) -> None:
    """Activation x initializer heatmaps of mean test accuracy, one panel per optimizer (each
    mean over the combinations' other factors: architecture, batch size, dropout)."""
    optimizers = levels["optimizer"]
    activations, initializers = levels["activation"], levels["initializer"]
    width = max(4.0, 0.9 * len(initializers) + 2.0)
    figure = new_figure(width * len(optimizers) + 1.0, max(3.2, 0.6 * len(activations) + 2.0))
    axes = figure.subplots(1, len(optimizers), squeeze=False)[0]
    values = combinations["test_accuracy_mean"]
    low, high = float(values.min()), float(values.max())
    image = None
    for axis, optimizer in zip(axes, optimizers, strict=True):
        rows = combinations[combinations["optimizer"] == optimizer]
        grid = rows.pivot_table(
            index="activation", columns="initializer", values="test_accuracy_mean", aggfunc="mean"
        )
        grid = grid.reindex(index=list(activations), columns=list(initializers))
        image = axis.imshow(grid.to_numpy(), cmap=ACCURACY_MAP, vmin=low, vmax=high, aspect="auto")
        annotate_cells(axis, grid.to_numpy(), low, high, "{:.2%}")
        axis.set_xticks(range(len(initializers)), list(initializers), rotation=30, ha="right")
        axis.set_yticks(range(len(activations)), list(activations))
        axis.set_xlabel("initializer")
        axis.set_ylabel("activation")
        axis.set_title(f"optimizer: {optimizer}")
    if image is not None:
        figure.colorbar(image, ax=list(axes), label="Mean test accuracy", format="{x:.1%}")
    figure.suptitle(
        "Interactions: mean test accuracy of each combination (over seeds and other factors)"
    )
    save(figure, target)


def save_learning_curves(
    histories: pd.DataFrame, levels: dict[str, Sequence[str]], target: Path
) -> None:
    """Small multiples by factor: mean validation accuracy per epoch of each level."""
    figure = new_figure(4.2 * len(FACTORS), 4.2)
    axes = figure.subplots(1, len(FACTORS), sharey=True, squeeze=False)[0]
    for axis, factor in zip(axes, FACTORS, strict=True):
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
