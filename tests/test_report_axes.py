"""The report over grids that vary the architecture, batch size and dropout too."""

from __future__ import annotations

import json

import pandas as pd
from test_report import make_params, project, write_cell

from stages import report
from stages.lib.core.config import FACTORS
from stages.lib.core.grid import grid
from stages.lib.core.paths import Paths

__all__ = ["project"]  # the fixture, imported for the tests here


def test_combinations_differ_by_every_factor_of_the_grid(project: Paths) -> None:
    params = make_params(
        activation=["relu"],
        optimizer=["adam"],
        architecture=["base", "wide"],
        batch_size=[64, 256],
        dropout=[0.0, 0.25],
    )
    cells = grid(params.train)
    for cell in cells:
        write_cell(project, cell, hidden_layers=len(params.train.architectures[cell.architecture]))

    summary = report.run(params, project)

    folder = project.study_report
    table = pd.read_csv(folder / "cells.csv")
    assert table["key"].tolist() == [cell.key for cell in cells]
    assert table[list(FACTORS)].drop_duplicates().shape[0] == len(cells) // 2  # seeds 0 and 1
    combinations = pd.read_csv(folder / "combinations.csv")
    assert set(FACTORS) <= set(combinations.columns)
    assert len(combinations) == 8 and set(combinations["n"]) == {2}
    levels = combinations[["architecture", "batch_size", "dropout"]].drop_duplicates()
    assert len(levels) == 8
    assert summary["cells"] == 16
    written = json.loads((folder / "summary.json").read_text())
    assert written["combinations"] == 8
    markdown = (folder / "summary.md").read_text()
    assert "- architecture: base, wide\n" in markdown and "- dropout: 0.0, 0.25\n" in markdown
