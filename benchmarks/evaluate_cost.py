"""Where the evaluate stage's time goes per cell, on a grid of trivial cells (issue 21).

The target: a 1,680-cell grid of trivial cells (architecture [16], one epoch) runs end to end in
at most 30 minutes on 2 cores, so evaluate must cost a fraction of a second per cell and must
not evaluate again the cells it already evaluated.

A scratch project (synthetic digits: a small train split, a 10,000-image test split like
MNIST's) gets `--cells` cells of architecture [16] trained for one epoch in this process with the
project's own `stages.train.run` (one seed per cell), then `stages.evaluate.run` runs on them,
also in this process, three times:

1. fresh: every cell evaluated;
2. again, nothing changed (an incremental evaluate skips every cell);
3. one cell added to the grid and trained (an incremental evaluate evaluates only that one).

Each phase is timed by wrapping the function evaluate calls for it (model loading, predict, the
metrics, the tables, each figure, the export, the MLflow logging, the checks); what no wrapper
covers is "other". The time per cell of each phase is its total over the fresh run / cells, the
median beside it leaves out the first cell's one-off costs (TensorFlow tracing `predict`).
TensorFlow and MLflow are imported before the timing: a `mlpstudy evaluate` process pays them
once (about 10 s), whatever the grid's size.

`--code DIR` imports the `stages` package from DIR instead of this checkout: the same measure of
older code, e.g. `mkdir /tmp/old && git archive <commit> stages | tar -x -C /tmp/old`.

    .venv/bin/python benchmarks/evaluate_cost.py [--cells 24] [--code DIR]
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
# A name the measured code does not have is left out (older or newer code).
PHASES = (
    ("stages.evaluate", "check_keras_file", "file checks"),
    ("stages.evaluate", "read_run_id", "file checks"),
    ("stages.lib.evaluation.evaluation_record", "read_trained", "file checks"),
    ("stages.lib.evaluation.evaluation_record", "evaluation_digest", "up-to-date checks"),
    ("stages.lib.evaluation.evaluation_record", "cell_record", "up-to-date checks"),
    ("stages.lib.evaluation.evaluation_record", "is_up_to_date", "up-to-date checks"),
    ("stages.lib.tracking.runs", "run_exists", "MLflow checks"),
    ("stages.lib.evaluation.evaluation_tracking", "cell_run", "MLflow checks"),
    ("stages.evaluate", "load_classifier", "model loading"),
    ("keras.Model", "predict", "predict"),
    ("stages.evaluate", "predict_logits", "predict"),
    ("stages.lib.evaluation.metrics", "summarize", "metrics"),
    ("stages.lib.evaluation.evaluation_tables", "write_tables", "tables"),
    ("stages.lib.evaluation.evaluation_figures", "save_confusion", "confusion figure"),
    ("stages.lib.evaluation.evaluation_figures", "save_mistakes", "mistakes figure"),
    ("stages.evaluate", "export_classifier", "export"),
    ("stages.lib.evaluation.evaluation_tracking", "log_evaluation", "MLflow logging"),
)
ORDER = list(dict.fromkeys(phase for _, _, phase in PHASES))
CELL_PHASE = "one cell"  # evaluate's function for one cell, around most phases: counts the cells
PHASES += (("stages.evaluate", "_evaluate_cell", CELL_PHASE),)


class Timings:
    """Seconds per phase and call, collected by the wrappers."""

    def __init__(self) -> None:
        self.calls: dict[str, list[float]] = defaultdict(list)

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

        setattr(owner, attribute, timed)

    def reset(self) -> None:
        self.calls.clear()


def install(timings: Timings) -> list[str]:
    """Wrap every phase's function that the measured code has; return the phases found."""
    import keras

    found = []
    for module, attribute, phase in PHASES:
        try:
            owner = keras.Model if module == "keras.Model" else importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        if hasattr(owner, attribute):
            timings.wrap(owner, attribute, phase)
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
    from stages.lib.core.grid import grid

    start = time.perf_counter()
    for cell in grid(params.train):
        if not paths.run_record(cell.key).is_file():
            train.run(params, cell, paths)
    return time.perf_counter() - start


def evaluate_timed(params: Any, paths: Any, timings: Timings) -> float:
    from stages import evaluate

    timings.reset()
    start = time.perf_counter()
    evaluate.run(params, paths)
    return time.perf_counter() - start


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
    other = wall - covered
    print(f"  {'other':<18} {other:8.2f} {other / cells:11.4f} {'':>9} {other / wall:6.1%}")
    print(f"  {'evaluate.run':<18} {wall:8.2f} {wall / cells:11.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=24)
    parser.add_argument("--code", type=Path, help="import `stages` from this folder instead")
    args = parser.parse_args()
    code = (args.code or ROOT).resolve()
    sys.path[:0] = [str(code), str(ROOT / "tests")]
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME"):
        os.environ.pop(name, None)  # the scratch project's own mlflow.db
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

    import stages

    print(f"code: {Path(stages.__file__).parent}")
    params, paths = scratch_project(args.cells)
    trained = train_grid(params, paths)
    print(f"trained {args.cells} cells in {trained:.1f} s; project {paths.root}", flush=True)

    timings = Timings()
    found = install(timings)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall = fresh = evaluate_timed(params, paths, timings)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    print(f"\n1. fresh: {args.cells} cells, {timings.evaluated} evaluated in {wall:.2f} s", end="")
    print(f" (peak RSS +{grown:.0f} MiB)")
    breakdown(timings, found, wall)

    wall = evaluate_timed(params, paths, timings)
    print(f"\n2. again, nothing changed: {timings.evaluated} cells evaluated in {wall:.2f} s")

    bigger = with_seeds(params, args.cells + 1)
    paths.params.write_text(yaml.safe_dump(bigger.model_dump(mode="json"), sort_keys=False))
    train_grid(bigger, paths)
    wall = evaluate_timed(bigger, paths, timings)
    print(f"\n3. one cell added: {timings.evaluated} cells evaluated in {wall:.2f} s")
    breakdown(timings, found, wall)

    print(
        f"\n1,680 cells at the fresh run's rate: {fresh / args.cells * 1680 / 60:.1f} min "
        f"(a {args.cells}-cell grid, so the one-off costs are shared by fewer cells)"
    )


if __name__ == "__main__":
    main()
