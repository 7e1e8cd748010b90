"""What tf.data's autotuning costs a cell: the training feed with and without it, side by side.

A profile of two Dask workers training real cells (py-spy --native) found their task threads
waiting, after the last epoch, in the destructor of the feed's iterator: tf.data's autotuning
model thread held `RootDataset::Iterator::~Iterator` for about two seconds, in a quarter of the
cells (a twentieth with one worker). `stages/lib/training/batches.py` now turns autotuning off
(its pipelines have no parallel stage and a fixed prefetch: nothing to tune).

Each trial is a fresh process that trains `--cells` cells of the default network one after the
other (relu / he_normal / adam, params.yaml's architecture and batch size, `--epochs` epochs,
seeds 0..N-1), through the project's own code: `build_model`, `compile_model`, `batches.feed`,
one thread per op and op determinism, as a worker of the stage does (no checkpoint, MLflow or
outputs: only the fit). Variant `autotuned` turns tf.data's autotuning back on for both of the
feed's datasets (as before the change); `fixed` is the feed as it is. Two trials run at once, as
the two workers of `parallel_cells: 2` do, each with the TF_NUM_INTEROP_THREADS the engine
gives them; the variants alternate, `--repeats` rounds each.

Printed per variant: the median fit, the median and the largest teardown (from the end of the
last epoch to `fit`'s return), how many cells' teardowns passed one second, and the cells per
minute of the pair (cells over the longer of the two trials' summed fits); then the ratio.

Data: --data DIR (train/validation/test .npz), else data/prepared if present, else synthetic
digits of MNIST's size (timing only: the teardown does not depend on the pixels).

    .venv/bin/python benchmarks/fit_teardown.py [--cells 8] [--epochs 3] [--repeats 2] [--data DIR]
        [--out benchmarks/results/fit_teardown.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
VARIANTS = ("autotuned", "fixed")
SLOW_SECONDS = 1.0


def trial(variant: str, scratch: Path, cells: int, first_seed: int) -> list[dict[str, float]]:
    """In this process: `cells` cells trained one after the other; each one's fit and teardown."""
    import tensorflow as tf
    from train_speed import epoch_clock

    from stages.lib.core.config import load_params
    from stages.lib.core.grid import grid
    from stages.lib.core.paths import Paths
    from stages.lib.data.prepared import load_split
    from stages.lib.training import batches
    from stages.lib.training.device import make_deterministic, set_cpu_threads
    from stages.lib.training.model import build_model, compile_model

    paths = Paths.at(scratch)
    params = load_params(paths.params)
    template = next(
        cell
        for cell in grid(params.train)
        if (cell.activation, cell.initializer, cell.optimizer) == ("relu", "he_normal", "adam")
    )
    splits = {split: load_split(paths, split) for split in ("train", "validation")}
    set_cpu_threads(params.train.cpu_threads)
    autotuned = tf.data.Options()
    autotuned.autotune.enabled = True

    results = []
    for seed in range(first_seed, first_seed + cells):
        cell = template.model_copy(update={"seed": seed})
        make_deterministic(seed)
        model = build_model(cell, params.train)
        steps = batches.steps_per_epoch(len(splits["train"][1]), cell.batch_size)
        compile_model(model, cell, params.train, steps)
        feed = batches.feed(
            splits["train"], splits["validation"], cell.batch_size, seed, range(params.train.epochs)
        )
        training, validation = feed.batches, feed.validation
        if variant == "autotuned":
            training = training.with_options(autotuned)
            validation = validation.with_options(autotuned)
        clock = epoch_clock()
        start = time.perf_counter()
        model.fit(
            training,
            steps_per_epoch=feed.steps_per_epoch,
            shuffle=False,
            epochs=params.train.epochs,
            validation_data=validation,
            callbacks=[clock],
            verbose=0,
        )
        returned = time.perf_counter()
        results.append({"fit": returned - start, "teardown": returned - clock.ends[-1]})
    return results


def run_pair(variant: str, scratch: Path, cells: int, round_: int) -> list[list[dict[str, float]]]:
    """Two trials of `variant` at once (other seeds each), as two workers."""
    from train_speed import trial_results

    from stages.lib.cluster.engine import interop_threads

    threads = str(interop_threads(2))  # what the engine gives each of two local workers
    env = {**os.environ, "TF_NUM_INTEROP_THREADS": threads, "TF_CPP_MIN_LOG_LEVEL": "2"}
    running = []
    for index in range(2):
        first_seed = (2 * round_ + index) * cells
        command = [sys.executable, __file__, "--trial", variant, "--scratch", str(scratch)]
        command += ["--cells", str(cells), "--first-seed", str(first_seed)]
        running.append(
            subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
        )
    return trial_results(variant, running)


def summary(pairs: list[list[list[dict[str, float]]]]) -> dict[str, Any]:
    cells = [cell for pair in pairs for trial_ in pair for cell in trial_]
    teardowns = [cell["teardown"] for cell in cells]
    minutes = sum(max(sum(c["fit"] for c in trial_) for trial_ in pair) for pair in pairs) / 60
    return {
        "cells": len(cells),
        "median_fit_seconds": statistics.median(cell["fit"] for cell in cells),
        "median_teardown_seconds": statistics.median(teardowns),
        "largest_teardown_seconds": max(teardowns),
        "teardowns_over_one_second": sum(t > SLOW_SECONDS for t in teardowns),
        "cells_per_minute": len(cells) / minutes,
        "pairs": pairs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cells", type=int, default=8, help="cells per trial process (8)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="rounds of each variant (2)")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/fit_teardown.json")
    parser.add_argument("--trial", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--first-seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        print(json.dumps(trial(args.trial, args.scratch, args.cells, args.first_seed)))
        return
    if args.cells < 1 or args.epochs < 1 or args.repeats < 1:
        raise SystemExit("--cells, --epochs and --repeats: at least 1")

    from train_speed import prepare

    with tempfile.TemporaryDirectory(prefix="fit-teardown-") as directory:
        scratch = Path(directory)
        data = prepare(scratch, args.data, args.epochs, None)
        print(f"data: {data}; {args.cells} cells per process, two processes at once", flush=True)
        pairs: dict[str, list[Any]] = {variant: [] for variant in VARIANTS}
        for round_ in range(args.repeats):
            order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                pairs[variant].append(run_pair(variant, scratch, args.cells, round_))
                print(f"  round {round_ + 1}: {variant} done", flush=True)
    results = {variant: summary(pairs[variant]) for variant in VARIANTS}
    for variant, result in results.items():
        print(
            f"{variant:>9}: {result['cells']} cells, fit median "
            f"{result['median_fit_seconds']:.2f} s, teardown median "
            f"{result['median_teardown_seconds']:.2f} s, largest "
            f"{result['largest_teardown_seconds']:.2f} s, {result['teardowns_over_one_second']} "
            f"over {SLOW_SECONDS:.0f} s; {result['cells_per_minute']:.1f} cells per minute"
        )
    ratio = results["fixed"]["cells_per_minute"] / results["autotuned"]["cells_per_minute"]
    print(f"fixed against autotuned: {ratio:.2f}x the cells per minute")
    record = {
        "benchmark": "benchmarks/fit_teardown.py",
        "options": {"cells": args.cells, "epochs": args.epochs, "repeats": args.repeats},
        "machine": {"cpus": os.cpu_count()},
        "data": data,
        "results": results,
        "ratio": ratio,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.out.with_name(args.out.name + ".tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n")
    temporary.replace(args.out)
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
