"""How the warm training process trains a requested cell: here, or in its pool of workers.

`train_here` trains the cell in this process, a progress line per epoch. `train_in_pool` has the
pool (train_pool.py) train it, and the cells this `dvc repro` runs after it ahead, relays the
worker's progress lines, then takes the cell's checkpoint over here: its MLflow run, the logged
epochs and model, the outputs (`stages.train.run`). When the worker died, or a stage's own run
holds the cell's checkpoint, what is left of the cell trains here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from stages.lib.core.config import Params
from stages.lib.core.grid import Cell, grid
from stages.lib.core.paths import Paths
from stages.lib.tracking import tracking
from stages.lib.training import progress, train_pool, train_worker

# The train stage's task function, `stages.train.run(params, cell, paths, observers=...)`: handed
# in by the command that starts this process (`mlpstudy train-service`), since code here sits
# below the stages and never imports them.
RunCell = Callable[..., dict[str, Any]]


def train_here(
    run: RunCell, params: Params, cell: Cell, paths: Paths, session: str
) -> dict[str, Any]:
    """Train `cell` in this process with a progress line per epoch; its metrics."""
    tracker = progress.for_cell(params, cell, paths.progress_file, session)
    metrics = run(params, cell, paths, observers=[progress.EpochProgress(tracker)])
    tracker.record_finished()
    stopped = ", stopped early" if metrics["stopped_early"] else ""
    took = progress.duration(time.monotonic() - tracker.started)
    print(f"{tracker.label}: done in {took}, {best_epoch(metrics)}{stopped}", flush=True)
    return metrics


def best_epoch(metrics: dict[str, Any]) -> str:
    return (
        f"best epoch {metrics['best_epoch']} of {metrics['epochs_run']} "
        f"(val_accuracy {metrics['best_val_accuracy']:.4f})"
    )


def train_in_pool(
    pool: train_pool.Pool, run: RunCell, params: Params, cell: Cell, paths: Paths, request: dict
) -> int:
    """Train `cell` in the pool (with the cells after it, ahead), then take it over here; the
    exit code (nonzero: the worker failed, its error shown already)."""
    tracking.check_store(paths)  # before any epoch, as a stage training by itself
    task = {key: request[key] for key in ("root", "cwd", "session", "env")}
    task["cell"] = cell.model_dump()
    pool.train(cell, list(grid(params.train)), task, pool_size(params))

    def show(message: dict[str, Any]) -> None:
        stream = sys.stderr if "err" in message else sys.stdout
        stream.write(message.get("err", message.get("out", "")))

    result = pool.follow(cell.key, show)
    if isinstance(result, int) and result != 0:
        return result  # the worker failed (2: bad input), its error shown already
    if result in (train_pool.ENDED, train_worker.SKIPPED):  # its worker died, or a run holds it
        train_here(run, params, cell, paths, request["session"])  # what is left, here
        return 0
    started = time.monotonic()
    metrics = run(params, cell, paths)  # takes the checkpoint over (or trains what is left)
    took = time.monotonic() - started
    print(
        f"train@{cell.key}: logged and written in {took:.1f} s; {best_epoch(metrics)}", flush=True
    )
    return 0


def pool_size(params: Params) -> int:
    """Workers to train with: `parallel_cells` on CPU; none (train here) for one cell at a time,
    on GPUs or with a distribution strategy (one process uses every device)."""
    train = params.train
    gpus = len(tf.config.list_physical_devices("GPU"))
    on_gpu = train.device == "gpu" or (train.device == "auto" and gpus > 0)
    if on_gpu or train.distribute != "none" or train.parallel_cells < 2:
        return 0
    return train.parallel_cells
