"""How fast an epoch of this project's train path is, against plain Keras and the FLOP floor.

(a) plain:   the cell's architecture (`stages.lib.training.model.build_model`), compiled with
             Keras' defaults (steps_per_execution=1, no op determinism), `model.fit` on the numpy
             arrays.
(b) project: `stages.train.run` in a scratch project on a grid of that one cell, with
             `parallel_cells: 1` (its one Dask worker is a thread of the trial's process): the
             whole code path, with the batches, steps_per_execution, cpu_threads and XLA setting
             of params.yaml, op determinism, diagnostics, a checkpoint every epoch, per-epoch
             MLflow logging, the logged model and the outputs.
(c) two at once: two (b) trials started together (two cells, as two workers of the local Dask
             cluster train a grid with `train.parallel_cells: 2`): each epoch takes longer, but
             two run at a time, so the grid pays half an epoch's wall time per epoch.
(d) floor:   the FLOPs of an epoch of the network (forward and backward on the train split,
             forward on the validation split: 2 x weights per example forward, twice that
             backward) at the speed of a large float32 matmul measured in the same run.

Both use the same cell, data, batch size and epochs (early stopping off, so both train every
epoch), verbose=2. Every trial is a fresh process and (a) and (b) alternate, so load from other
processes hits both alike. Epoch time is the time between consecutive epoch ends (checkpointing
and logging included); the median over epochs 2..N is the steady state, epoch 1 (tracing) is shown
apart. Test accuracy is measured on the test split after training (train itself never reads it).

The cost outside the epochs, per cell and as a grid grows, is measured by
benchmarks/grid_scaling.py.

Data: --data DIR (train/validation/test .npz), else data/prepared if present, else synthetic digits.

    .venv/bin/python benchmarks/train_speed.py [--data DIR] [--epochs 5] [--repeats 3] \
        [--batch-size N]

Trial r trains the cell with seed r (both kinds), so the accuracies compared are means over seeds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "validation", "test")
LABELS = {"plain": "(a) plain", "project": "(b) project"}
sys.path.insert(0, str(ROOT / "tests"))


# ------------------------------------------------------------------------- inside a trial process
def epoch_clock() -> Any:
    """A callback noting when training begins and when each epoch ends."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.begin = 0.0
            self.ends: list[float] = []

        def on_train_begin(self, logs: dict | None = None) -> None:
            self.begin = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.ends.append(time.perf_counter())

    return EpochClock()


def trial(kind: str, scratch: Path, cell_key: str) -> dict[str, Any]:
    from stages.lib.core.config import load_params
    from stages.lib.core.grid import grid
    from stages.lib.core.paths import Paths
    from stages.lib.data.prepared import load_split

    paths = Paths.at(scratch)
    params = load_params(paths.params)
    base, seed = cell_key.rsplit("-", 1)  # trial r trains seed r, in the grid or not
    same = (cell for cell in grid(params.train) if cell.key.rsplit("-", 1)[0] == base)
    cell = next(same).model_copy(update={"seed": int(seed)})
    clock = epoch_clock()
    result: dict[str, Any] = {}
    if kind == "plain":
        import keras

        from stages.lib.training.model import build_model, make_optimizer

        model = build_model(cell, params.train)
        model.compile(
            optimizer=make_optimizer(cell.optimizer, params.train),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        images, labels = load_split(paths, "train")
        model.fit(
            images,
            labels,
            batch_size=cell.batch_size,
            epochs=params.train.epochs,
            validation_data=load_split(paths, "validation"),
            callbacks=[clock],
            verbose=2,
        )
    else:
        import shutil

        import keras

        from stages import train as stage
        from stages.lib.core.config import AXES
        from stages.lib.tracking import tracking_log
        from stages.lib.training import cell_training

        log_model = tracking_log.log_keras_model

        def timed_log_model(*args: Any, **kwargs: Any) -> str:
            start = time.perf_counter()
            uri = log_model(*args, **kwargs)
            result["log_model_seconds"] = time.perf_counter() - start
            return uri

        tracking_log.log_keras_model = timed_log_model
        train_cell = cell_training.train_cell  # the clock watches last: after checkpoint, MLflow

        def clocked(job: Any, splits: Any, observers: Any = ()) -> Any:
            return train_cell(job, splits, [*observers, clock])

        cell_training.train_cell = clocked
        # A grid of this one cell, one worker (a thread of this process, so the patches hold);
        # an earlier trial's result of the same cell would be up to date: it trains again.
        one = {axis: [getattr(cell, axis)] for axis in AXES}
        train = params.train.model_copy(update={**one, "parallel_cells": 1})
        shutil.rmtree(paths.model_dir(cell.key), ignore_errors=True)
        stage.run(params.model_copy(update={"train": train}), paths)
        model = keras.models.load_model(paths.model_dir(cell.key) / "model.keras")
    test_images, test_labels = load_split(paths, "test")
    scores = model.evaluate(test_images, test_labels, batch_size=1024, verbose=0, return_dict=True)
    ends = [clock.begin, *clock.ends]
    epochs = [after - before for before, after in itertools.pairwise(ends)]
    return {**result, "epoch_seconds": epochs, "test_accuracy": scores["accuracy"]}


# ------------------------------------------------------------------------------ the orchestrator
def prepare(scratch: Path, data: Path | None, epochs: int, batch_size: int | None) -> str:
    """A scratch project: the real params.yaml (early stopping off; the grid's batch size, or
    `batch_size` when given) and the data. Returns the data's source."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(epochs=epochs, early_stopping_patience=None)
    if batch_size is not None:
        params["train"]["batch_size"] = [batch_size]
    (scratch / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    prepared = scratch / "data" / "prepared"
    prepared.mkdir(parents=True)
    data = data or (ROOT / "data" / "prepared")
    if all((data / f"{split}.npz").is_file() for split in SPLITS):
        for split in SPLITS:
            (prepared / f"{split}.npz").symlink_to((data / f"{split}.npz").resolve())
        return str(data)
    from synthetic import make_digits

    for split, count, seed in (
        ("train", 50_000, 0),
        ("validation", 10_000, 1),
        ("test", 10_000, 2),
    ):
        images, labels = make_digits(count, seed)
        np.savez(prepared / f"{split}.npz", images=images, labels=labels)
    return "synthetic digits (50000/10000/10000)"


def run_trial(kind: str, scratch: Path, cell: str) -> dict[str, Any]:
    return run_trials(kind, scratch, [cell])[0]


def run_trials(kind: str, scratch: Path, cells: list[str]) -> list[dict[str, Any]]:
    """Trials of `kind`, one per cell, all at once (each in its own scratch copy of the project)."""
    running = []
    for index, cell in enumerate(cells):
        where = scratch if index == 0 else copy_project(scratch, index)
        command = [sys.executable, __file__, "--trial", kind, "--scratch", str(where)]
        command += ["--cell", cell]
        running.append(
            subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=clean_environment(),
            )
        )
    return trial_results(kind, running)


def trial_results(kind: str, running: list[subprocess.Popen]) -> list[Any]:
    """What each trial process printed as its last line (JSON), in order; stop if one failed."""
    results = []
    for process in running:
        stdout, stderr = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"{kind} trial failed:\n{stderr[-3000:]}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def copy_project(scratch: Path, index: int) -> Path:
    """A second scratch project beside `scratch` (own checkpoints and store), same data."""
    copy = scratch.with_name(f"{scratch.name}-{index}")
    if not copy.exists():
        (copy / "data").mkdir(parents=True)
        (copy / "params.yaml").write_text((scratch / "params.yaml").read_text())
        (copy / "data" / "prepared").symlink_to((scratch / "data" / "prepared").resolve())
    return copy


def clean_environment() -> dict[str, str]:
    drop = ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_STAGE", "DVC_EXP_NAME")
    return {key: value for key, value in os.environ.items() if key not in drop}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cell", default=None, help="a cell key (default: relu/he_normal/adam)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: params.yaml's")
    parser.add_argument("--trial", choices=("plain", "project", "floor"), help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial == "floor":
        print(json.dumps(floor_trial(args.scratch)))
        return
    if args.trial:
        print(json.dumps(trial(args.trial, args.scratch, args.cell)))
        return

    scratch = Path(tempfile.mkdtemp(prefix="train-speed-"))
    source = prepare(scratch, args.data, args.epochs, args.batch_size)
    args.cell = args.cell or default_cell(scratch)
    print(f"data: {source}; cell {args.cell}; {args.epochs} epochs; scratch project {scratch}")
    results: dict[str, list[dict[str, Any]]] = {"plain": [], "project": []}
    base, _ = args.cell.rsplit("-", 1)
    for repeat in range(args.repeats):
        cell = f"{base}-{repeat}"  # trial r trains seed r: accuracies are compared over seeds
        for kind in ("plain", "project") if repeat % 2 == 0 else ("project", "plain"):
            results[kind].append(run_trial(kind, scratch, cell))
            epochs = " ".join(f"{s:.2f}" for s in results[kind][-1]["epoch_seconds"])
            print(f"  {LABELS[kind]:12s} seed {repeat}: epochs {epochs}")

    steady = {
        kind: statistics.median(s for r in runs for s in r["epoch_seconds"][1:])
        for kind, runs in results.items()
    }
    first = {
        kind: statistics.median(r["epoch_seconds"][0] for r in runs)
        for kind, runs in results.items()
    }
    accuracy = {
        kind: statistics.mean(r["test_accuracy"] for r in runs) for kind, runs in results.items()
    }
    print(f"\nepoch time (median of epochs 2..{args.epochs}; first epoch apart):")
    for kind in results:
        print(f"  {LABELS[kind]:12s} {steady[kind]:6.3f} s   first epoch {first[kind]:6.3f} s")
    print(f"  {'ratio b/a':12s} {steady['project'] / steady['plain']:6.3f}")
    print("test accuracy (mean over seeds):")
    for kind in results:
        print(f"  {LABELS[kind]:12s} {accuracy[kind]:.4f}")
    gap = abs(accuracy["project"] - accuracy["plain"]) * 100
    print(f"  {'difference':12s} {gap:.2f} points (target <= 0.3)")
    pairs = []
    for repeat in range(args.repeats):  # seeds r and r + repeats: other cells than above
        cells = [f"{base}-{repeat}", f"{base}-{repeat + args.repeats}"]
        pairs.extend(run_trials("project", scratch, cells))
        epochs = " | ".join(" ".join(f"{s:.2f}" for s in r["epoch_seconds"]) for r in pairs[-2:])
        print(f"  (c) two at once  seeds {cells[0][-1]} and {cells[1].rsplit('-', 1)[1]}: {epochs}")
    together = statistics.median(s for r in pairs for s in r["epoch_seconds"][1:])
    print(
        f"  (c) two at once: {together:.3f} s per epoch of each cell, {together / 2:.3f} s per "
        f"epoch for the grid ({steady['project'] / (together / 2):.2f} x the throughput of (b))"
    )
    log_model = [r["log_model_seconds"] for r in results["project"]]
    print(f"mlflow.keras.log_model: {' '.join(f'{s:.3f}' for s in log_model)} s")

    floor = floor_seconds(scratch)
    print(
        f"\nFLOP floor of an epoch: {floor['gflop']:.1f} GFLOP at {floor['gflops']:.0f} GFLOP/s "
        f"(a {MATMUL} float32 matmul, measured now) = {floor['seconds']:.3f} s"
    )
    ratio = steady["project"] / floor["seconds"]
    print(f"  {LABELS['project']:12s} {ratio:6.2f} x the floor (target <= 3)")
    print(f"  {LABELS['plain']:12s} {steady['plain'] / floor['seconds']:6.2f} x the floor")
    grid_ratio = together / 2 / floor["seconds"]
    print(f"  {'(c) two at once':12s} {grid_ratio:6.2f} x the floor, per epoch of the grid")


def default_cell(scratch: Path) -> str:
    """relu / he_normal / adam with the scratch grid's first architecture, batch size, dropout."""
    train = yaml.safe_load((scratch / "params.yaml").read_text())["train"]
    shared = (train[axis][0] for axis in ("architecture", "batch_size", "dropout"))
    return "-".join(["relu", "he_normal", "adam", *map(str, shared), "0"])


MATMUL = (4096, 1024, 1024)  # (m, k, n): large enough to run at the CPU's matmul speed


def floor_seconds(scratch: Path) -> dict[str, float]:
    """The network's FLOPs per epoch and this machine's matmul speed, in a fresh process."""
    command = [sys.executable, __file__, "--trial", "floor", "--scratch", str(scratch)]
    result = subprocess.run(command, capture_output=True, text=True, env=clean_environment())
    if result.returncode != 0:
        raise SystemExit(f"floor trial failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def floor_trial(scratch: Path) -> dict[str, float]:
    import tensorflow as tf

    from stages.lib.core.config import load_params
    from stages.lib.core.paths import Paths
    from stages.lib.data.idx import IMAGE_SHAPE, NUM_CLASSES
    from stages.lib.data.prepared import load_split

    paths = Paths.at(scratch)
    train = load_params(paths.params).train
    hidden_units = train.architectures[train.architecture[0]]  # the grid's first architecture
    sizes = [int(np.prod(IMAGE_SHAPE)), *hidden_units, NUM_CLASSES]
    weights = sum(a * b for a, b in itertools.pairwise(sizes))
    n_train = len(load_split(paths, "train")[1])
    n_validation = len(load_split(paths, "validation")[1])
    flop = 2 * weights * (3 * n_train + n_validation)
    m, k, n = MATMUL
    a, b = tf.random.normal((m, k)), tf.random.normal((k, n))
    matmul = tf.function(lambda: tf.matmul(a, b))
    matmul().numpy()
    rates = []
    for _ in range(5):
        start, calls = time.perf_counter(), 20
        for _ in range(calls):
            result = matmul()
        result.numpy()
        rates.append(2 * m * k * n * calls / (time.perf_counter() - start))
    gflops = max(rates) / 1e9  # the best of five: the speed the hardware reaches
    return {"gflop": flop / 1e9, "gflops": gflops, "seconds": flop / 1e9 / gflops}


if __name__ == "__main__":
    main()
