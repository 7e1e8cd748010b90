"""The report's speed figure: the share of cells that have reached the validation target by each
epoch, one Kaplan-Meier step curve per level (speed and censoring at once)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from stages.lib.reporting.cell_results import FACTORS
from stages.lib.reporting.figure_kit import integer_ticks, new_figure, percent_axis, save
from stages.lib.reporting.outcome_summaries import reached_curve

OUTCOME = "epochs_to_target"


def save_time_to_target(
    cells: pd.DataFrame, levels: dict[str, Sequence[str]], target: float, file: Path
) -> None:
    """One panel per factor that varies: per level, 1 - S(epoch) of the Kaplan-Meier fit of the
    epochs to `target` over the level's cells; a tick marks each cell censored at its last epoch.
    """
    shown = [f for f in FACTORS if len(levels[f]) > 1] or list(FACTORS)
    last = float(cells["epochs_observed"].max())
    figure = new_figure(4.2 * len(shown), 4.2)
    axes = figure.subplots(1, len(shown), sharey=True, squeeze=False)[0]
    for axis, factor in zip(axes, shown, strict=True):
        for level in levels[factor]:
            group = cells[cells[factor] == level]
            if group.empty:
                continue
            times, fraction = reached_curve(group, OUTCOME)
            reached, total = int(group["reached_target"].sum()), len(group)
            watched = float(group["epochs_observed"].max())  # the estimate ends there
            (line,) = axis.step(
                np.r_[times, max(watched, times[-1])],
                np.r_[fraction, fraction[-1]],
                where="post",
                label=f"{level} ({reached}/{total})",
            )
            censored = group.loc[~group["reached_target"], "epochs_observed"].to_numpy(float)
            heights = fraction[np.searchsorted(times, censored, side="right") - 1]
            axis.plot(censored, heights, "|", color=line.get_color(), markersize=12, mew=1.5)
        integer_ticks(axis)
        axis.set_xlim(0, last + 0.5)
        axis.set_ylim(0, 1.02)
        axis.set_xlabel("Epoch")
        axis.set_title(f"By {factor}")
        axis.legend(title=f"{factor} (reached/cells)", fontsize=8, loc="best")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("Cells that reached the target")
    percent_axis(axes[0])
    figure.suptitle(
        f"Time to {100 * target:g}% validation accuracy: share of cells there by each epoch "
        "(Kaplan-Meier; | a cell that stopped short of it)"
    )
    save(figure, file)
