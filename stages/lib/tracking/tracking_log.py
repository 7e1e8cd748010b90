"""What goes into a cell's MLflow run: per-step metrics, datasets, the model, report files.

Each function is safe to call again for the same run after a restart: metrics are written per
step in one batch, datasets and artifacts are deduplicated or overwritten by MLflow itself.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import DatasetInput, InputTag, Metric
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

MODEL_NAME = "model"  # the logged model's name inside the run
BATCH_LIMIT = 1000  # metrics per log_batch call that stores accept


def log_metrics(
    client: MlflowClient, run_id: str, step: int, values: Mapping[str, float], timestamp_ms: int
) -> None:
    """All `values` of one step in one write (sqlite: one transaction, so all or none land)."""
    metrics = [Metric(key, float(value), timestamp_ms, step) for key, value in values.items()]
    for start in range(0, len(metrics), BATCH_LIMIT):
        client.log_batch(run_id, metrics=metrics[start : start + BATCH_LIMIT])


def logged_steps(client: MlflowClient, run_id: str, key: str) -> set[int]:
    """Steps at which `key` is already logged: a resumed run must not log them again."""
    return {metric.step for metric in client.get_metric_history(run_id, key)}


def log_summary(client: MlflowClient, run_id: str, values: Mapping[str, Any]) -> None:
    """The numeric `values` as run metrics, skipping any the run already has (a restart)."""
    present = client.get_run(run_id).data.metrics
    numeric = {
        key: float(value)
        for key, value in values.items()
        if isinstance(value, (int, float)) and key not in present
    }
    log_metrics(client, run_id, 0, numeric, mlflow.utils.time.get_current_time_millis())


def log_splits(
    client: MlflowClient,
    run_id: str,
    splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
    files: Mapping[str, str],
    digests: Mapping[str, str],
) -> None:
    """Record each split as an input of run `run_id` (context "training" or "validation").

    A store inserts a dataset's row the first time a run of the experiment uses it, after looking
    it up. Two writers that use the same new split at the same moment both miss it, and the second
    insert breaks the row's unique key (experiment, name, digest): a `mlflow server` answers
    BAD_REQUEST. The train stage therefore records the splits on the grid's parent run before
    any cell starts, so that cells only link rows that exist. A writer that still loses the race
    (two stages starting at once against one server) tries once more, and then finds the row.
    """
    inputs = [_dataset_input(*splits[name], name, files[name], digests[name]) for name in splits]
    try:
        client.log_inputs(run_id, datasets=inputs)
    except MlflowException:
        client.log_inputs(run_id, datasets=inputs)


def _dataset_input(
    images: np.ndarray, labels: np.ndarray, split: str, source: str, digest: str
) -> DatasetInput:
    with warnings.catch_warnings():
        # MLflow registers local paths under two schemes ("" and "file") and warns that it picks
        # one of the two identical sources.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        dataset = mlflow.data.from_numpy(
            features=images,
            targets=labels,
            source=source,
            name=f"mnist-{split}",
            digest=digest[:32],  # the store keeps 36 characters
        )
    context = "training" if split == "train" else split
    return DatasetInput(dataset._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, context)])


def classifier_signature(image_shape: tuple[int, ...], classes: int) -> ModelSignature:
    """uint8 images (-1, *image_shape) in, float32 logits (-1, classes) out."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, *image_shape), "image")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, classes), "logits")]),
    )


def log_keras_model(model: Any, signature: ModelSignature) -> str:
    """Log `model` (keras flavor) into the active run; return its `models:/` URI.

    The requirements are listed explicitly: inferring them costs seconds per call.
    """
    import keras
    import mlflow.keras
    import tensorflow as tf

    info = mlflow.keras.log_model(
        model,
        name=MODEL_NAME,
        signature=signature,
        pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
    )
    return info.model_uri


def log_reports(folder: Path) -> None:
    """Copy a report folder into the active run's artifacts under the folder's parent name."""
    mlflow.log_artifacts(str(folder), artifact_path=folder.parent.name)
