"""Did the study's cells finish learning? One sentence for the top of the report.

A cell has converged when early stopping ended it (its validation loss stopped improving for
`patience` epochs), or, when it ran every epoch, when its validation loss has flattened: it fell
by less than FLAT over the last `patience` epochs. Cells still improving at the end are named, so
a reader knows which comparisons more epochs could change (named by the factors that vary).
"""

from __future__ import annotations

import pandas as pd

from stages.lib.reporting.cell_results import FACTORS

FLAT = 0.02  # relative fall of the validation loss over the last epochs that counts as flat
WINDOW = 3  # epochs looked back over when early stopping is off


def summary(cells: pd.DataFrame, histories: pd.DataFrame, patience: int | None) -> str:
    """E.g. "Early stopping ended 40 of 54 cells (after 7 to 24 epochs, median 13); ..."."""
    stopped = cells[cells["stopped_early"]]
    text = f"Early stopping ended {len(stopped)} of {len(cells)} cells"
    if len(stopped):
        runs = stopped["epochs_run"]
        text += f" (after {runs.min()} to {runs.max()} epochs, median {runs.median():g})"
    ran_out = cells[~cells["stopped_early"]]
    if ran_out.empty:
        return text + "."
    window = patience or WINDOW
    falls = {
        key: _recent_fall(histories[histories["key"] == key], window) for key in ran_out["key"]
    }
    flat = [key for key, fall in falls.items() if fall < FLAT]
    text += (
        f"; the other {len(ran_out)} ran every epoch, and the validation loss of "
        f"{len(flat)} of them fell by less than {FLAT:.0%} over their last {window} epochs"
    )
    improving = ran_out[~ran_out["key"].isin(flat)]
    if improving.empty:
        return text + " (flat)."
    varied = [factor for factor in FACTORS if cells[factor].nunique() > 1] or list(FACTORS)
    combos = improving.groupby(varied, sort=False).size()
    named = ", ".join(
        f"{' / '.join(map(str, levels if isinstance(levels, tuple) else (levels,)))} ({n})"
        for levels, n in combos.items()
    )
    return text + f". Still improving at the end (more epochs could change them): {named}."


def _recent_fall(history: pd.DataFrame, window: int) -> float:
    """Relative fall of the validation loss over the last `window` epochs (0 if too short)."""
    losses = history.sort_values("epoch")["val_loss"].to_list()
    if len(losses) <= window or losses[-1 - window] <= 0:
        return 0.0
    return (losses[-1 - window] - min(losses[-window:])) / losses[-1 - window]
