"""Which training code runs: the files the `train` stage depends on, and their digest.

A cell's configuration digest covers this digest, so editing the training code re-trains every
cell (as DVC re-runs the stage), while an edit elsewhere (the report) re-trains none. A worker of
the cluster whose copy of these files differs from the driver's is refused (version skew).
dvc.yaml lists the same files as the train stage's code dependencies (tests/test_layout.py).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[3]  # holds the `stages` package

TRAINING_CODE: tuple[str, ...] = (
    "stages/lib/core/cell_config.py",
    "stages/lib/core/code.py",
    "stages/lib/core/keras_defaults.py",
    "stages/lib/core/stopwatch.py",
    "stages/lib/data/idx.py",
    "stages/lib/data/prepared.py",
    "stages/lib/tracking/runs.py",
    "stages/lib/tracking/store_check.py",
    "stages/lib/tracking/study_tracking.py",
    "stages/lib/tracking/tracking.py",
    "stages/lib/tracking/tracking_log.py",
    "stages/lib/training/batches.py",
    "stages/lib/training/callbacks.py",
    "stages/lib/training/cell_job.py",
    "stages/lib/training/cell_training.py",
    "stages/lib/training/checkpoint.py",
    "stages/lib/training/cluster.py",
    "stages/lib/training/device.py",
    "stages/lib/training/diagnostics.py",
    "stages/lib/training/fitting.py",
    "stages/lib/training/grid_plan.py",
    "stages/lib/training/mlflow_run.py",
    "stages/lib/training/model.py",
    "stages/lib/training/outputs.py",
    "stages/lib/training/probe_measures.py",
    "stages/lib/training/progress.py",
    "stages/train.py",
)


@functools.cache
def training_code_digest() -> str:
    """SHA-256 over the training code's names and contents, read once per process: it names the
    code this process runs (imported at its start), however often it is asked."""
    code = hashlib.sha256()
    for name in TRAINING_CODE:
        code.update(name.encode() + b"\0" + (PROJECT / name).read_bytes() + b"\0")
    return code.hexdigest()
