"""The study-level MLflow run: the report's tables and figures beside the cell runs they compare.

One current report run per study. It is tagged `kind=report` (cell runs carry `kind=cell`, so
`mlpstudy compare` and runs.find_runs never mistake it for a cell) and named `study-report`.
A new report replaces the previous one instead of piling up or mixing old artifacts with new:
the new run is logged completely first, then the earlier report runs are deleted (MLflow's soft
delete: hidden from the UI and searches, `mlflow runs restore --run-id <id>` brings one back,
`mlflow gc` purges them). Its run id therefore changes on each report; find it by the tag.
Inside a DVC experiment (`DVC_EXP_NAME` set, e.g. a queued `dvc exp run`) the run is tagged
`dvc_exp=<name>` and replaces only that experiment's earlier report, so experiments that share a
store keep one report each (and the workspace's report, without the tag, is left alone).
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from mlflow.entities import Metric, Param, Run, ViewType

from stages.lib.core.config import Params
from stages.lib.reporting.cell_results import FACTORS
from stages.lib.tracking import runs, tracking

REPORT_KIND = "report"
RUN_NAME = "study-report"


def report_runs(experiment: tracking.Experiment, dvc_exp: str | None = None) -> list[Run]:
    """The live report runs of the study's experiment for `dvc_exp` (None: outside DVC
    experiments); normally one."""
    search = partial(
        experiment.client.search_runs,
        [experiment.experiment_id],
        filter_string=f"tags.kind = '{REPORT_KIND}'",
        run_view_type=ViewType.ACTIVE_ONLY,
    )
    found = runs.every_page(search)
    return [run for run in found if run.data.tags.get(runs.DVC_EXP_TAG) == dvc_exp]


def log_report(
    experiment: tracking.Experiment,
    params: Params,
    root: Path,
    folder: Path,
    summary: dict,
) -> str:
    """Log `folder` (the whole reports/study/) as the study's report run; return its id."""
    client = experiment.client
    dvc_exp = runs.dvc_experiment()
    previous = [run.info.run_id for run in report_runs(experiment, dvc_exp)]
    train = params.train
    tags = {
        "kind": REPORT_KIND,
        "study": params.study.name,
        "git_commit": runs.git_commit(root),
        "mlflow.note.content": (
            f"Study report of {params.study.name}: {summary['cells']} cells. "
            "Open the artifact index.html (self-contained) or summary.md."
        ),
        **({runs.DVC_EXP_TAG: dvc_exp} if dvc_exp else {}),
    }
    run = client.create_run(experiment.experiment_id, run_name=RUN_NAME, tags=tags)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    values = {
        "cells": summary["cells"],
        "combinations": summary["combinations"],
        "best_mean_test_accuracy": summary["best"]["test_accuracy_mean"],
        "worst_mean_test_accuracy": summary["worst"]["test_accuracy_mean"],
    }
    grid = {f: ",".join(map(str, getattr(train, f))) for f in (*FACTORS, "seed")}
    try:
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in values.items() if v is not None],
            params=[
                *(Param(f"grid.{k}", v) for k, v in grid.items()),  # not a cell's factor
                Param("confidence", str(params.report.confidence)),
                Param("best", _name(summary["best"])),
            ],
        )
        client.log_artifacts(run_id, str(folder))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    for old in previous:
        client.delete_run(old)
    return run_id


def _name(combination: dict) -> str:
    return "-".join(str(combination[factor]) for factor in FACTORS)
