"""Summary metrics logged again into an existing run without piling up points.

Evaluate and report log into each cell's run on every re-run; a metric whose latest value is
unchanged is skipped, and a changed one becomes the next step, so the run's history shows real
changes only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

BATCH_LIMIT = 1000  # metrics per log_batch call that MLflow stores accept


def _same(old: float, new: float) -> bool:
    return old == new or (math.isnan(old) and math.isnan(new))


def log_changed_metrics(
    client: MlflowClient,
    run_id: str,
    values: Mapping[str, float],
    latest: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Log the `values` that differ from the run's latest ones, in batches; return those logged.

    One `get_run` reads every latest value, unless the caller has read them already (`latest`,
    the run's `data.metrics`); the history is read only for the changed metrics, to put their new
    point one step after the last.
    """
    latest = client.get_run(run_id).data.metrics if latest is None else latest
    changed = {
        key: value
        for key, value in values.items()
        if key not in latest or not _same(latest[key], value)
    }
    timestamp = int(time.time() * 1000)
    points = []
    for key, value in changed.items():
        history = client.get_metric_history(run_id, key) if key in latest else []
        step = max((metric.step for metric in history), default=-1) + 1
        points.append(Metric(key, value, timestamp, step))
    for start in range(0, len(points), BATCH_LIMIT):
        client.log_batch(run_id, metrics=points[start : start + BATCH_LIMIT])
    return changed
