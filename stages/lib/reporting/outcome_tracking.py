"""Each cell's outcomes beside accuracy, logged as metrics of the cell's own MLflow run.

The run is the one train created (its id is in data/models/<key>/run.json), so the MLflow UI can
sort and chart cells by speed and failure next to their test accuracy. Booleans are 0/1. A time
to the target that a cell never reached is left out (censored: there is no number), while
`reached_target` 0 shows why; if the run already holds a time from an earlier report (say with
a lower target), NaN is logged over it rather than leaving a stale value. Re-running the report
logs only values that changed (changed_metrics.py), one batch per cell.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient

from stages.lib.core.paths import Paths
from stages.lib.tracking.changed_metrics import log_changed_metrics

# cells-table column = metric name on the cell's run.
METRICS: tuple[str, ...] = (
    "epochs_to_target",
    "seconds_to_target",
    "reached_target",
    "failed_to_train",
    "best_val_loss",
    "generalization_gap",
)


def metric_values(row: pd.Series | dict[str, Any]) -> dict[str, float]:
    """The outcomes of one cells-table row as floats (True/False as 1.0/0.0), NaN kept."""
    return {name: float(row[name]) for name in METRICS}


def log_outcomes(client: MlflowClient, paths: Paths, cells: pd.DataFrame) -> dict[str, dict]:
    """Log every cell's outcomes into its run; return {key: metrics logged} (changed ones only).

    A cell without run.json (its MLflow run was never recorded) is skipped.
    """
    logged = {}
    for _, row in cells.iterrows():
        record = paths.run_record(row["key"])
        if not record.is_file():
            continue
        run_id = json.loads(record.read_text())["run_id"]
        present = client.get_run(run_id).data.metrics
        values = {
            name: value
            for name, value in metric_values(row).items()
            if math.isfinite(value) or name in present
        }
        logged[row["key"]] = log_changed_metrics(client, run_id, values)
    return logged
