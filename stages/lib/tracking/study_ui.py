"""`mlpstudy ui`: MLflow's UI on the study's store, opened on the study's training runs.

The link opens the study's saved view that `report` wrote (study_view.py: cells, outcomes and
factors as columns, sorted and grouped), or the plain runs table before the first report.
MLflow 3's UI shows either its GenAI views or its model-training views, by a switch kept in the
browser (default: GenAI) or the URL's `workflowType`; the experiment's `mlflow.experimentKind` tag
does not override it (MLflow 3.17). So the link names the model-training view.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from stages.lib.core.errors import StageError
from stages.lib.core.paths import Paths
from stages.lib.tracking import study_view, tracking


def study_link(base: str, uri: str, study_name: str) -> str:
    """The UI's address of the study's runs, on its saved view when the report wrote one."""
    experiment = MlflowClient(uri).get_experiment_by_name(study_name)
    if experiment is None:
        return study_view.runs_url(base, None)
    view = study_view.study_view_id(experiment.tags)
    return study_view.runs_url(base, experiment.experiment_id, view)


def serve(study_name: str, paths: Paths, host: str, port: int) -> None:
    """Print the link to the study's runs, then become `mlflow server` on the store (until ^C).

    With a tracking server in $MLFLOW_TRACKING_URI, only print the link into that server.
    """
    uri = tracking.tracking_uri(paths)
    if uri.startswith(("http://", "https://")):
        tracking.check_server(uri, "MLFLOW_TRACKING_URI")
        print(f"Study runs: {study_link(uri, uri, study_name)}", flush=True)
        return
    database = tracking.sqlite_file(uri)
    if database is not None and not database.is_file():
        raise StageError(f"{database}: no MLflow store yet; run `dvc repro` first")
    print(f"Study runs: {study_link(f'http://{host}:{port}', uri, study_name)}", flush=True)
    mlflow = Path(sys.executable).with_name("mlflow")
    program = str(mlflow) if mlflow.is_file() else shutil.which("mlflow")
    if program is None:
        raise StageError("the `mlflow` command is not installed in this environment")
    command = [program, "server", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    os.execv(program, [*command, "--workers", "1"])
