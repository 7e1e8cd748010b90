"""The runs of a study's experiment: creating them with their params and tags, finding them
(every page of a search), and the tags every run carries (`kind`, the DVC experiment, the commit).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TypeVar

from mlflow.entities import Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.entities import PagedList
from mlflow.tracking import MlflowClient

from stages.lib.tracking.tracking import Experiment

CELL_KIND = "cell"  # value of the `kind` tag on each cell's run (the report's run has another)
DVC_EXP_TAG = "dvc_exp"  # the DVC experiment a run belongs to, on cell and report runs
PAGE_SIZE = 1000  # results per search call (MLflow's default page size)
T = TypeVar("T")


def dvc_experiment() -> str | None:
    """The DVC experiment running this stage (DVC sets DVC_EXP_NAME in `dvc exp run`), if any."""
    return os.environ.get("DVC_EXP_NAME") or None


def create_run(
    experiment: Experiment, run_name: str, params: Mapping[str, str], tags: Mapping[str, str]
) -> str:
    """A new run with its params and tags, in one call to the store; returns its id."""
    client = experiment.client
    run = client.create_run(experiment.experiment_id, run_name=run_name, tags=dict(tags))
    client.log_batch(run.info.run_id, params=[_param(k, v) for k, v in params.items()])
    return run.info.run_id


def _param(key: str, value: str) -> Param:
    return Param(key, value)


def run_exists(experiment: Experiment, run_id: str) -> bool:
    """Whether `run_id` is a live run of the experiment (a deleted store or run is not)."""
    try:
        run = experiment.client.get_run(run_id)
    except MlflowException:
        return False
    return (
        run.info.experiment_id == experiment.experiment_id and run.info.lifecycle_stage == "active"
    )


def set_tags(experiment: Experiment, run_id: str, tags: Mapping[str, str]) -> None:
    experiment.client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])


def refresh_dvc_exp(client: MlflowClient, run_id: str) -> None:
    """For a run used again (a resumed cell; evaluate logging into a cell's run, which DVC may
    have restored from its run cache in another experiment): its `dvc_exp` tag names the DVC
    experiment running now, and goes when none is, so it never names one the run has left."""
    current = dvc_experiment()
    tagged = client.get_run(run_id).data.tags.get(DVC_EXP_TAG)
    if current and tagged != current:
        client.set_tag(run_id, DVC_EXP_TAG, current)
    elif not current and tagged is not None:
        client.delete_tag(run_id, DVC_EXP_TAG)


def git_commit(root: Path) -> str:
    """The commit checked out at `root`, or "unknown" outside a git repository."""
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def every_page(search: Callable[..., PagedList[T]]) -> list[T]:
    """Every result of an MLflow search (`client.search_runs` with its arguments bound, ...):
    one call returns one page, so this calls it again with each page's token until the last."""
    results: list[T] = []
    token = None
    while True:
        page = search(max_results=PAGE_SIZE, page_token=token)
        results.extend(page)
        token = page.token
        if not token:
            return results


def find_runs(study_name: str, tracking_uri: str) -> list[Run]:
    """Every cell run of the study, newest first (compare and report read them)."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(study_name)
    if experiment is None:
        return []
    search = partial(
        client.search_runs,
        [experiment.experiment_id],
        filter_string=f"tags.kind = '{CELL_KIND}'",
        order_by=["attributes.start_time DESC"],
    )
    return every_page(search)
