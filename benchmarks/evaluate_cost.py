"""Where the evaluate stage's time goes per cell, on a grid of trivial cells (issue 21).

The target: a 1,680-cell grid of trivial cells (architecture [16], one epoch) runs end to end in
at most 30 minutes on 2 cores, so evaluate must cost a fraction of a second per cell, must spread
over the workers of the cluster, and must not evaluate again the cells it already evaluated.

A scratch project (synthetic digits: a small train split, a 10,000-image test split like
MNIST's) gets `--cells` cells of architecture [16] trained for one epoch with the project's own
`stages.train.run` (one seed per cell). Then `stages.evaluate.run` runs in this process:

1. fresh, once per `--parallel-cells` value (default 1 and 2, side by side in this run: every
   cell's record is deleted before each, so every cell is evaluated again): with 1, the one
   worker is a thread of this process; with 2, a LocalCluster of two worker processes;
2. again, nothing changed (an incremental evaluate skips every cell);
3. one cell added to the grid and trained (an incremental evaluate evaluates only that one).

With one worker (a thread of this process) each phase is also timed, by wrapping the function
evaluate calls for it (model loading, predict, the metrics, the tables, each figure, the export,
the MLflow logging, the checks); what no wrapper covers is "other". The time per cell of each
phase is its total over the run / cells, the median beside it leaves out the first cell's
one-off costs (TensorFlow tracing `predict`). TensorFlow and MLflow are imported before the
timing; worker processes import them within it (each run starts its own cluster).

    .venv/bin/python benchmarks/evaluate_cost.py [--cells 70] [--parallel-cells 1,2]
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TEST_IMAGES = 10_000  # as MNIST's: predict, predictions.csv and the figures scale with it

# (module, attribute, phase): the functions evaluate calls, wrapped where evaluate looks them up.
PHASES = (
    ("stages.evaluate", "check_keras_file", "file checks"),
    ("stages.lib.evaluation.evaluation_record", "read_trained", "file checks"),
    ("stages.lib.evaluation.evaluation_record", "evaluation_digest", "up-to-date checks"),
    ("stages.lib.evaluation.evaluation_record", "cell_record", "up-to-date checks"),
    ("stages.lib.evaluation.evaluation_record", "is_up_to_date", "up-to-date checks"),
    ("stages.lib.evaluation.evaluation_tracking", "cell_run", "MLflow checks"),
    ("stages.lib.evaluation.cell_evaluation", "load_classifier", "model loading"),
    ("stages.lib.evaluation.cell_evaluation", "predict_logits", "predict"),
    ("stages.lib.evaluation.metrics", "summarize", "metrics"),
    ("stages.lib.evaluation.evaluation_tables", "write_tables", "tables"),
    ("stages.lib.evaluation.evaluation_figures", "save_confusion", "confusion figure"),
    ("stages.lib.evaluation.evaluation_figures", "save_mistakes", "mistakes figure"),
    ("stages.lib.evaluation.cell_evaluation", "export_classifier", "export"),
    ("stages.lib.evaluation.evaluation_tracking", "log_evaluation", "MLflow logging"),
)
ORDER = list(dict.fromkeys(phase for _, _, phase in PHASES))
CELL_PHASE = "one cell"  # a worker's function for one cell, around most phases: counts the cells
RECORD_PHASE = "record"  # the stage's last step for a cell: when each cell was done
PHASES += (
    ("stages.lib.evaluation.cell_evaluation", "evaluate_cell", CELL_PHASE),
    ("stages.lib.evaluation.evaluation_record", "write_record", RECORD_PHASE),
)


class Timings:
    """Seconds per phase and call, collected by the wrappers."""

    def __init__(self) -> None:
        self.calls: dict[str, list[float]] = defaultdict(list)
        self.ended: dict[str, list[float]] = defaultdict(list)  # perf_counter at each return

    @property
    def evaluated(self) -> int:
        """How many cells the last run evaluated (calls of evaluate's per-cell function)."""
        return len(self.calls.get(CELL_PHASE, []))

    def wrap(self, owner: Any, attribute: str, phase: str) -> None:
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.calls[phase].append(time.perf_counter() - start)
                self.ended[phase].append(time.perf_counter())

        setattr(owner, attribute, timed)

    def reset(self) -> None:
        self.calls.clear()
        self.ended.clear()

    def steady_rate(self) -> float | None:
        """Cells done per second from the first cell's record to the last's: the cluster's
        start (worker processes importing TensorFlow) and the checks before it left out."""
        done = self.ended.get(RECORD_PHASE, [])
        if len(done) < 2:
            return None
        return (len(done) - 1) / (done[-1] - done[0])


def install(timings: Timings) -> list[str]:
    """Wrap every phase's function; return the phases found."""
    found = []
    for module, attribute, phase in PHASES:
        timings.wrap(importlib.import_module(module), attribute, phase)
        found.append(phase)
    return found


def scratch_project(cells: int) -> tuple[Any, Any]:
    """(params, paths) of a project with prepared synthetic digits and a grid of `cells` seeds."""
    from project import shrink
    from synthetic import make_digits

    from stages.lib.core.config import Params
    from stages.lib.core.paths import Paths
    from stages.lib.data.prepared import write_splits

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    shrink(raw)  # architecture [16], one epoch, batch 64: the trivial cell of the issue
    raw["train"]["seed"] = list(range(cells))
    params = Params.model_validate(raw)
    paths = Paths.at(tempfile.mkdtemp(prefix="evaluate-cost-"))
    paths.params.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    write_splits(
        paths,
        {
            "train": make_digits(1_000, seed=1),
            "validation": make_digits(200, seed=2),
            "test": make_digits(TEST_IMAGES, seed=3),
        },
    )
    return params, paths


def with_seeds(params: Any, seeds: int) -> Any:
    raw = params.model_dump(mode="json")
    raw["train"]["seed"] = list(range(seeds))
    return type(params).model_validate(raw)


def train_grid(params: Any, paths: Any) -> float:
    """Train every cell of the grid that has no model yet; return the seconds it took."""
    from stages import train

    start = time.perf_counter()
    train.run(params, paths)
    return time.perf_counter() - start


def with_parallel(params: Any, workers: int) -> Any:
    raw = params.model_dump(mode="json")
    raw["evaluate"]["parallel_cells"] = workers
    return type(params).model_validate(raw)


def evaluate_timed(params: Any, paths: Any, timings: Timings) -> tuple[float, int]:
    """(seconds of evaluate.run, cells it evaluated: those whose record it wrote)."""
    from stages import evaluate
    from stages.lib.core.grid import grid

    def records() -> dict[str, int | None]:
        files = {cell.key: paths.evaluate_record(cell.key) for cell in grid(params.train)}
        return {
            key: file.stat().st_mtime_ns if file.exists() else None for key, file in files.items()
        }

    timings.reset()
    before = records()
    start = time.perf_counter()
    evaluate.run(params, paths)
    wall = time.perf_counter() - start
    after = records()
    return wall, sum(after[key] != before[key] for key in after)


def breakdown(timings: Timings, found: list[str], wall: float) -> None:
    """One line per phase: total, mean and median per cell evaluated, share of the wall time."""
    cells = max(timings.evaluated, 1)
    print(f"  {'phase':<18} {'total s':>8} {'per cell s':>11} {'median s':>9} {'share':>6}")
    covered = 0.0
    for phase in ORDER:
        if phase not in found:
            continue
        calls = timings.calls.get(phase, [])
        total = sum(calls)
        covered += total
        median = statistics.median(calls) if calls else 0.0
        print(
            f"  {phase:<18} {total:8.2f} {total / cells:11.4f} {median:9.4f} "
            f"{total / wall:6.1%}  ({len(calls)} calls)"
        )
    other = wall - covered  # < 0 when the worker thread and this thread overlap
    print(f"  {'other':<18} {other:8.2f} {other / cells:11.4f} {'':>9} {other / wall:6.1%}")
    if other < 0:
        print("  (the worker thread evaluates a cell while this thread logs the one before)")
    print(f"  {'evaluate.run':<18} {wall:8.2f} {wall / cells:11.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=70)
    parser.add_argument(
        "--parallel-cells",
        default="1,2",
        type=lambda text: [int(value) for value in text.split(",")],
        help="evaluate's workers, each measured fresh (1,2)",
    )
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "DASK_SCHEDULER_ADDRESS"):
        os.environ.pop(name, None)  # the scratch project's own mlflow.db and LocalCluster
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

    import keras  # noqa: F401  (imported before the timing: paid once per process)
    import mlflow  # noqa: F401

    from stages.lib.core.grid import grid

    params, paths = scratch_project(args.cells)
    trained = train_grid(params, paths)
    print(f"trained {args.cells} cells in {trained:.1f} s; project {paths.root}", flush=True)

    timings = Timings()
    found = install(timings)
    fresh, steady = {}, {}
    for workers in args.parallel_cells:
        for cell in grid(params.train):
            paths.evaluate_record(cell.key).unlink(missing_ok=True)
        params = with_parallel(params, workers)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        wall, evaluated = evaluate_timed(params, paths, timings)
        fresh[workers], steady[workers] = wall, timings.steady_rate() or 0.0
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
        print(
            f"\n1. fresh, parallel_cells {workers}: {evaluated} of {args.cells} cells evaluated "
            f"in {wall:.2f} s, {wall / args.cells:.3f} s per cell (this process's peak RSS "
            f"+{grown:.0f} MiB); from the first cell done to the last: "
            f"{steady[workers]:.2f} cells per second"
        )
        if workers == 1:
            breakdown(timings, found, wall)
    if len(fresh) > 1:
        low, high = min(fresh), max(fresh)
        whole = fresh[low] / fresh[high]
        rate = steady[high] / steady[low] if steady[low] else 0.0
        print(
            f"   {high} workers against {low}: {whole:.2f}x the cells per second over the whole "
            f"evaluate.run, {rate:.2f}x from the first cell done to the last"
        )

    wall, evaluated = evaluate_timed(params, paths, timings)
    print(f"\n2. again, nothing changed: {evaluated} cells evaluated in {wall:.2f} s")

    bigger = with_seeds(params, args.cells + 1)
    paths.params.write_text(yaml.safe_dump(bigger.model_dump(mode="json"), sort_keys=False))
    train_grid(bigger, paths)
    wall, evaluated = evaluate_timed(bigger, paths, timings)
    print(f"\n3. one cell added: {evaluated} cell(s) evaluated in {wall:.2f} s")

    print()
    for workers, rate in steady.items():
        if rate:
            print(
                f"1,680 cells at the steady rate of parallel_cells {workers}: "
                f"{1680 / rate / 60:.1f} min, plus the checks and the start of the cluster"
            )


if __name__ == "__main__":
    main()
