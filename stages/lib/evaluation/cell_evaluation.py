"""One cell's evaluation, as a worker of the cluster runs it (stages/lib/cluster/engine.py).

The stage hands a worker the cell's trained model as the bytes of its file (so a worker on another
machine needs no shared file system) with evaluate's params; the worker already holds the test
split, sent once. It loads the model as a 28x28 -> 10 classifier, passes the test images through
it once, computes every number from those logits in numpy (loss, accuracy, per-digit precision,
recall and F1, the confusion matrix), writes the tables, the two figures and the exported
classifier into a scratch folder and returns every file as bytes with the summary: the stage
writes them into the workspace and logs them into the cell's MLflow run. TensorFlow is imported
when a model loads, so the stage's own process can build the jobs without it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.lib.core.config import EvaluateParams
from stages.lib.core.grid import Cell
from stages.lib.core.paths import Paths
from stages.lib.evaluation import evaluation_figures, evaluation_tables, metrics
from stages.lib.evaluation.classifier import (
    EXPORT_FILE,
    export_classifier,
    load_classifier,
    predict_logits,
)

TestSplit = tuple[np.ndarray, np.ndarray]  # (images, labels)


@dataclass(frozen=True)
class EvaluationJob:
    """A cell to evaluate: its trained model and everything its worker needs besides the data."""

    cell: Cell
    params: EvaluateParams
    model: bytes  # the content of data/models/<key>/model.keras
    model_name: str  # that file as the user knows it, for messages
    remedy: str  # what to do when it does not load as a classifier

    @property
    def key(self) -> str:
        return self.cell.key


@dataclass(frozen=True)
class EvaluationResult:
    """An evaluated cell: its files (paths relative to the project root) and its numbers."""

    key: str
    files: dict[str, bytes]
    summary: dict[str, Any]  # metrics.summarize: what its MLflow run logs
    metrics: dict[str, Any]  # its metrics.json
    seconds: float  # wall time on the worker


def evaluate_on_worker(
    job: EvaluationJob, test: TestSplit, publish: Callable[[dict[str, Any]], None]
) -> EvaluationResult:
    """The cluster's task for a cell (it publishes nothing while it runs: it takes ~0.5 s)."""
    return evaluate_cell(job, *test)


def evaluate_cell(job: EvaluationJob, images: np.ndarray, labels: np.ndarray) -> EvaluationResult:
    """Every evaluate file of `job`'s cell, made in a scratch folder and returned as bytes."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"mlpstudy-evaluate-{job.key}-") as scratch:
        model_file = Path(scratch) / "model.keras"
        model_file.write_bytes(job.model)
        model = load_classifier(model_file, job.model_name, job.remedy)
        paths = Paths.at(Path(scratch) / "project")
        logits = predict_logits(model, images, job.params.batch_size)
        summary = metrics.summarize(logits, labels)
        files = evaluation_tables.cell_files(paths, job.key)
        result = evaluation_tables.write_tables(files, summary, labels)
        evaluation_figures.draw_cell(
            images, labels, logits, summary, job.params.misclassified_shown, job.key, files
        )
        export_classifier(model, paths.export_dir(job.key) / EXPORT_FILE)
        written = {
            file.relative_to(paths.root).as_posix(): file.read_bytes()
            for output in paths.evaluate_cell_outputs(job.key)
            for file in sorted([output] if output.is_file() else output.rglob("*"))
            if file.is_file()
        }
    return EvaluationResult(job.key, written, summary, result, time.monotonic() - started)
