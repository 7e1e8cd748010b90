"""The report's convergence sentence: which cells early stopping ended, which ran flat or not."""

from __future__ import annotations

import pandas as pd

from stages.lib.reporting.study_convergence import summary


def cell(key: str, activation: str, epochs_run: int, stopped: bool) -> dict:
    return {
        "key": key,
        "activation": activation,
        "initializer": "he_normal",
        "optimizer": "sgd",
        "architecture": "base",
        "batch_size": 256,
        "dropout": 0.0,
        "epochs_run": epochs_run,
        "stopped_early": stopped,
    }


def history(key: str, losses: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"key": key, "epoch": range(1, len(losses) + 1), "val_loss": losses})


def test_names_stopped_flat_and_still_improving_cells():
    cells = pd.DataFrame(
        [
            cell("a", "relu", 9, True),
            cell("b", "relu", 13, True),
            cell("c", "tanh", 6, False),
            cell("d", "sigmoid", 6, False),
        ]
    )
    histories = pd.concat(
        [
            history("a", [1.0] * 9),
            history("b", [1.0] * 13),
            history("c", [0.5, 0.3, 0.100, 0.100, 0.0995, 0.0990]),  # flat: -1% in 3 epochs
            history("d", [0.9, 0.8, 0.7, 0.600, 0.5000, 0.4000]),  # -33%: still improving
        ]
    )

    text = summary(cells, histories, patience=3)

    assert text == (
        "Early stopping ended 2 of 4 cells (after 9 to 13 epochs, median 11); the other 2 ran "
        "every epoch, and the validation loss of 1 of them fell by less than 2% over their "
        "last 3 epochs. Still improving at the end (more epochs could change them): "
        "sigmoid (1)."  # named by the factors that vary: activation only
    )


def test_every_cell_stopped():
    cells = pd.DataFrame([cell("a", "relu", 7, True)])

    assert summary(cells, history("a", [1.0] * 7), patience=3) == (
        "Early stopping ended 1 of 1 cells (after 7 to 7 epochs, median 7)."
    )
