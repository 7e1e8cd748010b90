"""The study report's place in MLflow: a child of the current grid revision's parent run, which
holds exactly the cells that the report compares.

Cells are reused across grid revisions (adding a seed trains only the new cells), so the report
moves every cell run of the current grid under the current revision's parent (MLflow's parent
link is a tag and may change), and detaches from that parent any cell run the grid no longer
uses (e.g. one trained again after a code change). Runs of earlier grids keep their own parent.
It then writes the study's saved views (study_view.py) and prints the link that opens them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from mlflow.entities import Metric, Run, RunTag, ViewType

from stages.lib.core.config import Params
from stages.lib.core.grid import grid
from stages.lib.core.paths import Paths
from stages.lib.tracking import runs, study_tracking, study_view, tracking

PARENT = study_tracking.PARENT_TAG


def file_report(
    experiment: tracking.Experiment, params: Params, paths: Paths, report_run_id: str
) -> str:
    """Describe the experiment, nest the report and the grid's cells under the grid's parent run
    (which also gets the report's summary metrics, so its collapsed row shows them), write the
    study's saved views and print their link; return the parent's id."""
    study_tracking.describe_experiment(experiment, params)
    parent = study_tracking.grid_parent(experiment, params)
    tags = {
        PARENT: parent,
        study_tracking.REVISION_TAG: study_tracking.grid_revision(params),
        study_tracking.SOURCE_NAME_TAG: "mlpstudy report",
        study_tracking.SOURCE_TYPE_TAG: "LOCAL",
    }
    client = experiment.client
    client.log_batch(report_run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    summary = client.get_run(report_run_id).data.metrics  # the study's headline, on its row too
    client.log_batch(
        parent, metrics=[Metric(k, v, int(time.time() * 1000), 0) for k, v in summary.items()]
    )
    adopt(experiment, parent, cell_run_ids(paths, params))
    prune(experiment, parent)
    view = study_view.write_views(experiment, params, parent, runs.dvc_experiment())
    base = study_view.ui_base(experiment.tracking_uri)
    served = "" if base == experiment.tracking_uri else " (serve it with `mlpstudy ui`)"
    link = study_view.runs_url(base, experiment.experiment_id, view)
    print(f"Study in MLflow{served}: {link}", flush=True)
    return parent


def cell_run_ids(paths: Paths, params: Params) -> list[str]:
    """The MLflow run id of every cell of the grid (from each cell's run.json)."""
    ids = []
    for cell in grid(params.train):
        record = paths.run_record(cell.key)
        if record.is_file():
            ids.append(json.loads(record.read_text())["run_id"])
    return ids


def adopt(experiment: tracking.Experiment, parent: str, run_ids: list[str]) -> None:
    """Make `parent` the parent of exactly the cell runs `run_ids` (among its cell children)."""
    client = experiment.client
    for run_id in run_ids:
        if client.get_run(run_id).data.tags.get(PARENT) != parent:
            client.set_tag(run_id, PARENT, parent)
    keep = set(run_ids)
    for run in _cell_children(experiment, parent):
        if run.info.run_id not in keep:
            client.delete_tag(run.info.run_id, PARENT)


def prune(experiment: tracking.Experiment, current: str) -> None:
    """Delete (MLflow's soft delete) the grid parents of this DVC experiment left without runs."""
    grid_kind = f"tags.kind = '{study_tracking.GRID_KIND}'"
    dvc_exp = runs.dvc_experiment()
    for run in _search(experiment, grid_kind):
        run_id = run.info.run_id
        if run_id == current or run.data.tags.get(runs.DVC_EXP_TAG) != dvc_exp:
            continue
        if not next(_search(experiment, f"tags.`{PARENT}` = '{run_id}'"), None):
            experiment.client.delete_run(run_id)


def _cell_children(experiment: tracking.Experiment, parent: str) -> Iterator[Run]:
    cells = f"tags.`{PARENT}` = '{parent}' and tags.kind = '{runs.CELL_KIND}'"
    return _search(experiment, cells)


def _search(experiment: tracking.Experiment, filter_string: str) -> Iterator[Run]:
    """Every live run of the experiment matching `filter_string`, page by page."""
    page_token = None
    while True:
        page = experiment.client.search_runs(
            [experiment.experiment_id],
            filter_string=filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            page_token=page_token,
        )
        yield from page
        page_token = page.token
        if not page_token:
            return
