"""Stage `report`: the whole study compared, as tables, figures, a summary and one MLflow run.

It reads exactly the cells of the current grid (files left by values since removed from
`params.yaml` are ignored) and stops before any work, naming the cell and the stage to run, when
one of them has no results yet. Everything lands in reports/study/:

- cells.csv (one row per cell), combinations.csv (per combination over seeds: mean, std, CI, n,
  the gap to the best and whether it is tied with it), comparisons.csv (every pair of levels of
  each factor: paired difference, interval, p, Holm p), summary.json (DVC metrics: best and worst
  combination, number of cells, which levels differ);
- figures/*.png; summary.md (open it first) and index.html (self-contained, figures embedded);
- the same folder as the artifacts of the study's `study-report` MLflow run (see report_run.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from stages.lib.core.atomic import atomic_path, write_json, write_text
from stages.lib.core.cell_config import hyperparameters
from stages.lib.core.config import Params
from stages.lib.core.grid import grid
from stages.lib.core.paths import Paths
from stages.lib.reporting import (
    diagnostic_figures,
    outcome_figures,
    study_comparisons,
    study_convergence,
    study_document,
    study_figures,
    study_findings,
)
from stages.lib.reporting.cell_results import FACTORS, read_study
from stages.lib.reporting.outcome_tracking import log_outcomes
from stages.lib.reporting.report_run import log_report
from stages.lib.reporting.report_tracking import file_report
from stages.lib.reporting.study_html import to_html, to_markdown
from stages.lib.reporting.study_table import (
    combinations_table,
    main_effects,
    start_and_end,
    summary_metrics,
)
from stages.lib.tracking import tracking

FIGURES_FOLDER = "figures"


def run(params: Params, paths: Paths) -> dict[str, Any]:
    """Write reports/study/ for the current grid, log it to MLflow; return summary.json's data."""
    cells = grid(params.train)
    confidence = params.report.confidence
    diagnostics_on = params.train.diagnostics.enabled
    # ConfigError before any work; every cell's files read once.
    table, histories, diagnostics = read_study(paths, cells, diagnostics_on, params.report)
    tracking.check_store(paths)  # StageError if unreachable or damaged; creates nothing
    comparisons = study_comparisons.factor_comparisons(table, params.report)
    combinations = study_comparisons.ties_with_best(
        table, combinations_table(table, confidence), confidence
    )

    effects = main_effects(table, confidence)
    folder = paths.study_report
    drawn = draw_figures(params, table, combinations, effects, histories, diagnostics, folder)
    findings = study_findings.sentences(table, comparisons, combinations, params.report)
    summary = {
        **summary_metrics(table, combinations, confidence),
        **study_comparisons.metrics(comparisons, combinations),
    }
    _write_csv(table, folder / "cells.csv")
    _write_csv(combinations, folder / "combinations.csv")
    _write_csv(comparisons, folder / "comparisons.csv")
    write_json(folder / "summary.json", summary)
    convergence = study_convergence.summary(table, histories, params.train.early_stopping_patience)
    title, blocks = study_document.build(
        params, table, combinations, effects, comparisons, findings, drawn, convergence
    )
    write_text(folder / "summary.md", to_markdown(title, blocks, FIGURES_FOLDER))
    write_text(folder / "index.html", to_html(title, blocks, folder / FIGURES_FOLDER))
    experiment = tracking.open_experiment(params.study.name, paths)
    run_id = log_report(experiment, params, paths.root, folder, summary)
    file_report(experiment, params, paths, run_id)
    log_outcomes(experiment.client, paths, table)  # speed, failure, ... on each cell's run
    return {**summary, "mlflow_run_id": run_id}


def draw_figures(
    params: Params,
    cells: pd.DataFrame,
    combinations: pd.DataFrame,
    effects: pd.DataFrame,
    histories: pd.DataFrame,
    diagnostics: pd.DataFrame | None,
    folder: Path,
) -> list[str]:
    """Draw every figure the data allows; remove figures of an earlier report that no longer
    apply (e.g. diagnostics turned off). Returns the file names drawn."""
    train, confidence = params.train, params.report.confidence
    target = folder / FIGURES_FOLDER
    levels = {factor: study_comparisons.levels(cells, factor) for factor in FACTORS}
    settings = {name: hyperparameters(train, "activation", name) for name in train.activation}
    # name -> drawing, each called with its target file as the last argument.
    drawings: dict[str, Callable[[Path], None]] = {
        "main_effects.png": partial(study_figures.save_main_effects, effects, confidence),
        **{
            interaction.name: partial(study_figures.save_interactions, cells, interaction, levels)
            for interaction in params.report.interactions
        },
        "learning_curves.png": partial(study_figures.save_learning_curves, histories, levels),
        "time_to_target.png": partial(
            outcome_figures.save_time_to_target, cells, levels, params.report.target_val_accuracy
        ),
        "per_digit.png": partial(study_figures.save_per_digit, combinations),
        "activations.png": partial(diagnostic_figures.save_activations, train.activation, settings),
    }
    if diagnostics is not None and not diagnostics.empty:
        drawings["gradient_norms.png"] = partial(
            diagnostic_figures.save_gradient_norms, diagnostics, train.activation
        )
        drawings["dead_saturated.png"] = partial(
            diagnostic_figures.save_dead_saturated, start_and_end(diagnostics), combinations
        )
    for name, draw in drawings.items():
        draw(target / name)
    drawn = list(drawings)
    for stale in target.glob("*.png"):
        if stale.name not in drawn:
            stale.unlink()
    return drawn


def _write_csv(frame: pd.DataFrame, target: Path) -> None:
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False)
