"""How a grid's cost grows with its size: one DVC stage per cell against one `train` stage.

Side by side in one run, on real `dvc repro` runs of scratch copies of the project:

- baseline:  the code of a git commit (--baseline, default 7128918: the last commit of the design
             with one `train@<key>` matrix stage per cell, where DVC rewrites dvc.lock at every
             stage, so its work per stage grows with the number of stages);
- candidate: the working tree this script lives in (one `train` stage that knows the whole grid,
             skips finished cells and hands the pending ones to Dask distributed, once built).

Each measurement builds a fresh scratch project: dvc.yaml, params.yaml, stages/, .dvc/config,
.dvcignore, .gitignore and reports/evaluate/.gitignore copied from that design's source into a
temp dir, params.yaml edited, `git init` and a commit. It runs the venv's real `dvc` with PATH
(venv's bin first), PYTHONPATH=<scratch project> (so `mlpstudy` imports that design's `stages`
package, not the editable install), MLPSTUDY_MNIST_MIRROR, DVC_NO_ANALYTICS=1 and a git identity,
and without any inherited DVC_*, MLFLOW_*, DASK_* or MLPSTUDY_* variable. `dvc repro preprocess`
(download included) runs first and is not part of the train times. Processes a run leaves behind
(the baseline's warm training process idles on after `dvc repro`) are ended by their id, then
the scratch project is deleted.

1. Growth (trivial cells: architecture `tiny` = [16], 1 epoch, batch 1024, no dropout,
   diagnostics off, early stopping off, `parallel_cells: 1`; grid = the 7 activations of
   `train.activations` x the first --initializers (10) of `train.initializers` x adam x seeds, so
   70 cells per seed; the names come from the candidate's params.yaml). For each design and
   size: wall time of `dvc repro train`, the `fit` seconds summed over every cell's
   data/models/<key>/run.json, overhead per cell = (wall - sum of fit) / cells, and the times
   of `dvc status` and of a no-op `dvc repro train` (everything up to date) afterwards. The ratio
   of the overhead per cell at the largest size to that at the smallest (target for the
   candidate: <= 1.5 at 1,000+ cells). The baseline grows
   quadratically (hours at 1,000+ cells), so it runs only --baseline-sizes; its least-squares
   line of overhead per cell against cells is extrapolated to the candidate's largest size and
   printed as an extrapolation.
2. End to end (candidate): `dvc repro train`, `dvc repro evaluate`, `dvc repro report` one after
   the other on the --end-to-end-cells grid (1,680 = 7 activations x 10 initializers x all 8
   optimizers x 3 seeds) of trivial cells with `parallel_cells: 2`, each timed, the total
   against the 30-minute target.
3. Throughput (candidate): --throughput-cells real cells (architecture [256, 128], 3 epochs,
   batch 256, early stopping off, diagnostics as params.yaml has them; relu / he_normal / adam,
   seeds 0..N-1) trained by `dvc repro train` with `parallel_cells: 1`, then in a fresh project
   with `parallel_cells: 2`: cells per minute of each and their ratio (target >= 1.7), over the
   whole `dvc repro` and after the first wave of cells (from the install of the first
   `parallel_cells` cells to the last: the workers' start-up left out). Between them, a third
   run with `parallel_cells: 2` and TF_NUM_INTEROP_THREADS set to the machine's cores, as
   TensorFlow's default is: each worker's inter-op pool as large as the machine, as before the
   engine shared the cores out among its workers (before and after, side by side). With
   --throughput-before COMMIT, first the same cells with that commit's code on 1 and then 2
   workers: the ratio before a change, measured in the same run as after it. Before them all, the
   machine's own ceiling for that ratio: a fixed single-threaded workload (float32 matmuls of a
   cell's first layer, numpy with one BLAS thread) in one process alone, then in two at once;
   the work two processes do per second against one. No grid can beat it. Each run also
   prints the cores it kept busy (CPU seconds of its process tree over its wall time): one worker
   that already keeps more than one core busy leaves less than 2x for two.

--quick checks the script in a few minutes: 2 initializers (14 cells per seed), sizes 14,28,56
(baseline 14,28), 112 cells end to end (one seed of every optimizer), 4 throughput cells.
--only measures one design (end to end and throughput are the candidate's); --keep keeps the
scratch projects and their command logs. Results go to --out as JSON, rewritten after every
measurement ("complete": false until the end, "error" if a command failed).

Data: the real MNIST files when $MLPSTUDY_MNIST_MIRROR (or ../shared/mnist) holds them, else
synthetic digits of the same size (tests/synthetic.py).

    .venv/bin/python benchmarks/grid_scaling.py [--sizes 70,280,1120] [--baseline-sizes 70,140,280]
        [--baseline 7128918] [--only baseline|candidate] [--initializers 10]
        [--end-to-end-cells 1680 | --skip-end-to-end] [--throughput-cells 12 | --skip-throughput]
        [--throughput-before COMMIT]
        [--quick] [--out benchmarks/results/grid_scaling.json] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from project import COPIED, copy_project  # noqa: E402  (the tests' own project copy)

from stages.lib.cluster.engine import usable_cores  # noqa: E402

BIN = Path(sys.executable).parent
DVC = BIN / "dvc"
NOT_INHERITED = ("DVC_", "MLFLOW_", "DASK_", "MLPSTUDY_", "PYTHONPATH")
DEFAULT_BASELINE = "7128918"
TAIL = 3000  # characters of a failed command's output shown
RATIO_TARGET = 1.5  # overhead per cell, largest size / smallest, at 1,000+ cells
RATIO_TARGET_CELLS = 1000
END_TO_END_TARGET_SECONDS = 30 * 60
THROUGHPUT_TARGET = 1.7
THROUGHPUT_EPOCHS = 3
CEILING_ITERATIONS = 4000  # about 5 s alone on the development machine
CEILING_WORKLOAD = """
import time
import numpy as np
rng = np.random.default_rng(0)
a = rng.random((256, 784), dtype=np.float32)
b = rng.random((784, 256), dtype=np.float32)
start = time.perf_counter()
for _ in range(ITERATIONS):
    a @ b
print(time.perf_counter() - start)
"""
Edit = Callable[[dict[str, Any]], None]


class BenchmarkError(Exception):
    """A command failed or a run's outputs are not what the grid says."""


@dataclass
class Design:
    name: str  # baseline | candidate | before (throughput only)
    source: Path  # the tree its scratch projects are copied from
    label: str  # where the code comes from, for the report


@dataclass(frozen=True)
class Grid:
    activations: list[str]
    initializers: list[str]
    optimizers: list[str]
    seeds: int

    @property
    def cells(self) -> int:
        return len(self.activations) * len(self.initializers) * len(self.optimizers) * self.seeds

    def describe(self) -> str:
        return (
            f"{len(self.activations)} activations x {len(self.initializers)} initializers x "
            f"{len(self.optimizers)} optimizer(s) x {self.seeds} seed(s) = {self.cells} cells"
        )

    def axes(self) -> dict[str, Any]:
        return {
            "activation": self.activations,
            "initializer": self.initializers,
            "optimizer": self.optimizers,
            "seed": list(range(self.seeds)),
        }


@dataclass
class Names:
    """The variant names params.yaml defines, which the grids are made of."""

    activations: list[str]
    initializers: list[str]
    optimizers: list[str]

    def grid(self, cells: int, initializers: int, optimizers: list[str], option: str) -> Grid:
        """All activations x the first `initializers` initializers x `optimizers` x seeds."""
        per_seed = len(self.activations) * initializers * len(optimizers)
        if cells < per_seed or cells % per_seed:
            raise SystemExit(
                f"{option}: {cells} cells is not a multiple of {per_seed} "
                f"({len(self.activations)} activations x {initializers} initializers x "
                f"{len(optimizers)} optimizer(s) per seed)"
            )
        return Grid(
            self.activations, self.initializers[:initializers], optimizers, cells // per_seed
        )


# ------------------------------------------------------------------------------ params edits
def trivial(grid: Grid, parallel_cells: int) -> Edit:
    """The issue's trivial cells: a 16-unit network, one epoch of large batches, no extras."""

    def edit(params: dict[str, Any]) -> None:
        train = params["train"]
        train.update(grid.axes())
        train.update(
            architecture=["tiny"],
            architectures={"tiny": [16]},
            batch_size=[1024],
            dropout=[0.0],
            epochs=1,
            early_stopping_patience=None,
            parallel_cells=parallel_cells,
        )
        train["diagnostics"]["enabled"] = False

    return edit


def real(cells: int, parallel_cells: int) -> Edit:
    """Real cells of the default network, all alike (relu / he_normal / adam, one per seed)."""

    def edit(params: dict[str, Any]) -> None:
        train = params["train"]
        train.update(
            activation=["relu"],
            initializer=["he_normal"],
            optimizer=["adam"],
            seed=list(range(cells)),
            architecture=["base"],
            architectures={"base": [256, 128]},
            batch_size=[256],
            dropout=[0.0],
            epochs=THROUGHPUT_EPOCHS,
            early_stopping_patience=None,
            parallel_cells=parallel_cells,
        )

    return edit


# ---------------------------------------------------------------------------- scratch projects
class Workspace:
    """Where scratch projects live, the data mirror they download from, and their commands."""

    def __init__(self, base: Path, keep: bool) -> None:
        self.base = base
        self.keep = keep
        real_mirror = Path(os.environ.get("MLPSTUDY_MNIST_MIRROR", ROOT.parent / "shared/mnist"))
        self.sums: Path | None = None
        if (real_mirror / "train-images-idx3-ubyte.gz").is_file():
            self.mirror, self.data = real_mirror, f"real MNIST from {real_mirror}"
        else:
            from synthetic import write_mirror

            self.mirror = base / "mirror"
            write_mirror(self.mirror, n_train=60_000, n_test=10_000)
            self.sums = self.mirror / "SHA256SUMS"
            self.data = "synthetic digits of MNIST's size (no real MNIST mirror found)"

    def environment(self, project: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(NOT_INHERITED)}
        env.update(
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            PYTHONPATH=str(project),
            MLPSTUDY_MNIST_MIRROR=str(self.mirror),
            DVC_NO_ANALYTICS="1",
            GIT_AUTHOR_NAME="bench",
            GIT_AUTHOR_EMAIL="bench@example.invalid",
            GIT_COMMITTER_NAME="bench",
            GIT_COMMITTER_EMAIL="bench@example.invalid",
        )
        if self.sums:
            env["MLPSTUDY_MNIST_SHA256SUMS"] = str(self.sums)
        return env

    def project(
        self, design: Design, name: str, edit: Edit, extra: dict[str, str] | None = None
    ) -> Project:
        """A fresh git repo with `design`'s pipeline, `edit`ed params and prepared data; its
        commands run with the `extra` environment variables too."""
        directory = self.base / f"{design.name}-{name}" / "project"
        copy_project(design.source, directory, edit)
        project = Project(directory, {**self.environment(directory), **(extra or {})}, self.keep)
        for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "x"]):
            project.run(command)
        project.seconds_of_preprocess = project.dvc("repro", "preprocess")
        return project


class Project:
    """A scratch project: its commands, timed, and its cleanup."""

    def __init__(self, directory: Path, env: dict[str, str], keep: bool) -> None:
        self.directory = directory
        self.env = env
        self.keep = keep
        self.seconds_of_preprocess = 0.0
        self.last_output = ""
        self.count = 0
        self.last_cores_busy = 0.0

    def run(self, command: list[str]) -> float:
        """Run `command` in the project; its wall time. Output goes to a file, never a pipe (a
        process left behind must not hold our read open); a failure raises with its tail."""
        self.count += 1
        log = self.directory.parent / f"command-{self.count:02d}.log"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        with log.open("w") as output:
            code = subprocess.run(
                command,
                cwd=self.directory,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            ).returncode
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        self.last_cores_busy = cpu / seconds  # CPU seconds of the command's waited-for process tree
        self.last_output = log.read_text(errors="replace")
        if code != 0:
            raise BenchmarkError(
                f"`{' '.join(command)}` exited {code} in {self.directory} (log {log}):\n"
                f"{self.last_output[-TAIL:]}"
            )
        return seconds

    def dvc(self, *args: str) -> float:
        return self.run([str(DVC), *args])

    def fit_seconds(self, cells: int) -> float:
        """The `fit` seconds summed over every cell's run.json; checks that `cells` cells ran."""
        records = sorted((self.directory / "data" / "models").glob("*/run.json"))
        histories = list((self.directory / "reports" / "train").glob("*/history.csv"))
        if len(records) != cells or len(histories) != cells:
            raise BenchmarkError(
                f"{self.directory}: expected {cells} trained cells, found {len(records)} "
                f"run.json and {len(histories)} history.csv"
            )
        return sum(json.loads(record.read_text())["seconds"]["fit"] for record in records)

    def steady_cells_per_minute(self, parallel: int) -> float | None:
        """Cells per minute once the first `parallel` cells are in (worker start-up left out):
        the cells installed after the first wave, over the time from its last one to the last
        cell (install times: each run.json's mtime). None with too few cells."""
        installed = sorted(
            record.stat().st_mtime
            for record in (self.directory / "data" / "models").glob("*/run.json")
        )
        if len(installed) <= parallel or installed[-1] <= installed[parallel - 1]:
            return None
        return (len(installed) - parallel) * 60 / (installed[-1] - installed[parallel - 1])

    def up_to_date(self) -> bool:
        return "up to date" in self.last_output

    def finish(self) -> int:
        """End the processes this project's runs left behind; delete it unless kept. Returns how
        many were left behind."""
        left = end_processes(self.directory)
        if not self.keep:
            shutil.rmtree(self.directory.parent, ignore_errors=True)
        return left


def leftover_processes(directory: Path) -> list[int]:
    """Processes (not this one) whose command line names `directory` or that run inside it:
    started by this benchmark's runs, since the directory is a fresh temp dir."""
    inside, mine, found = str(directory).encode(), os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == mine:
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        try:
            cwd = os.readlink(entry / "cwd").encode()
        except OSError:  # another user's process, or gone
            cwd = b""
        if inside in argv or cwd == inside or cwd.startswith(inside + b"/"):
            found.append(int(entry.name))
    return found


def end_processes(directory: Path, grace: float = 30.0) -> int:
    """SIGTERM what `directory`'s runs left behind, SIGKILL what outlives `grace`; the count."""
    if not Path("/proc").is_dir():
        return 0
    pids = leftover_processes(directory)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in alive:
        _signal(pid, signal.SIGKILL)
    return len(pids)


def _signal(pid: int, number: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, number)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# --------------------------------------------------------------------------------- measurements
def growth_point(
    workspace: Workspace, design: Design, grid: Grid, parallel: int, then_end_to_end: bool
) -> dict[str, Any]:
    """`dvc repro train` of the trivial grid, then `dvc status` and a no-op `dvc repro train`;
    with `then_end_to_end`, then `dvc repro evaluate` and `dvc repro report` of the same grid."""
    load = os.getloadavg()[0]
    project = workspace.project(design, f"growth-{grid.cells}", trivial(grid, parallel))
    later: dict[str, float] = {}
    try:
        wall = project.dvc("repro", "train")
        fit = project.fit_seconds(grid.cells)
        status = project.dvc("status")
        noop = project.dvc("repro", "train")
        noop_up_to_date = project.up_to_date()
        if then_end_to_end:
            for stage in ("evaluate", "report"):
                later[stage] = project.dvc("repro", stage)
                print(f"    dvc repro {stage}: {later[stage]:.1f} s", flush=True)
    finally:
        left = project.finish()
    return {
        "cells": grid.cells,
        "grid": grid.describe(),
        "parallel_cells": parallel,
        "wall_seconds": wall,
        "fit_seconds": fit,
        # the cells' fitting ran `parallel` at a time: what is left of the wall time is overhead
        "overhead_per_cell": (wall - fit / parallel) / grid.cells,
        "later_stage_seconds": later,
        "status_seconds": status,
        "noop_repro_seconds": noop,
        "noop_repro_up_to_date": noop_up_to_date,
        "preprocess_seconds": project.seconds_of_preprocess,
        "processes_left_behind": left,
        "load_average_before": load,
    }


def end_to_end(workspace: Workspace, design: Design, grid: Grid) -> dict[str, Any]:
    """train, evaluate and report of the trivial grid with two cells at once, each timed."""
    load = os.getloadavg()[0]
    project = workspace.project(design, f"end-to-end-{grid.cells}", trivial(grid, 2))
    seconds: dict[str, float] = {}
    try:
        for stage in ("train", "evaluate", "report"):
            seconds[stage] = project.dvc("repro", stage)
            print(f"    dvc repro {stage}: {seconds[stage]:.1f} s", flush=True)
        fit = project.fit_seconds(grid.cells)
    finally:
        left = project.finish()
    total = sum(seconds.values())
    return {
        "cells": grid.cells,
        "grid": grid.describe(),
        "parallel_cells": 2,
        "stage_seconds": seconds,
        "total_seconds": total,
        "fit_seconds": fit,
        "download_and_preprocess_seconds": project.seconds_of_preprocess,
        "target_seconds": END_TO_END_TARGET_SECONDS,
        "meets_target": total <= END_TO_END_TARGET_SECONDS,
        "processes_left_behind": left,
        "load_average_before": load,
    }


def machine_ceiling(iterations: int) -> dict[str, Any]:
    """Work per second of two single-threaded processes at once against one alone: the most
    that two workers can give over one on this machine."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    code = CEILING_WORKLOAD.replace("ITERATIONS", str(iterations))

    def started() -> subprocess.Popen[str]:
        command = [sys.executable, "-c", code]
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)

    def seconds(process: subprocess.Popen[str]) -> float:
        output, _ = process.communicate()
        if process.returncode != 0:
            raise BenchmarkError(f"the ceiling workload exited {process.returncode}")
        return float(output)

    alone = seconds(started())
    pair = [started(), started()]
    together = [seconds(process) for process in pair]
    return {
        "workload": f"{iterations} float32 matmuls (256 x 784) @ (784 x 256), one BLAS thread",
        "alone_seconds": alone,
        "two_at_once_seconds": together,
        "ratio": 2 * alone / max(together),
    }


def throughput(
    workspace: Workspace, design: Design, cells: int, before: Design | None = None
) -> dict[str, Any]:
    """The machine's ceiling, then real cells (fresh projects): with `before`'s code on 1 and 2
    workers when given, then with parallel_cells 1, 2 with each worker on TensorFlow's default
    inter-op pool (the whole machine), and 2 as the engine sets them up: cells per minute of
    each."""
    ceiling = machine_ceiling(CEILING_ITERATIONS)
    print(f"    machine ceiling: two processes {ceiling['ratio']:.2f}x one", flush=True)
    plan = [
        (f"before-{parallel}", before, parallel, {}, f"parallel_cells {parallel}, {before.label}")
        for parallel in ((1, 2) if before else ())
    ]
    plan += [(run, design, *rest) for run, *rest in throughput_runs()]
    runs: dict[str, dict[str, Any]] = {}
    for run, source, parallel, extra, label in plan:
        load = os.getloadavg()[0]
        project = workspace.project(source, f"throughput-{run}", real(cells, parallel), extra)
        try:
            wall = project.dvc("repro", "train")
            cores_busy = project.last_cores_busy
            fit = project.fit_seconds(cells)
            steady = project.steady_cells_per_minute(parallel)
        finally:
            left = project.finish()
        runs[run] = {
            "label": label,
            "parallel_cells": parallel,
            "environment": extra,
            "wall_seconds": wall,
            "fit_seconds": fit,
            "cells_per_minute": cells * 60 / wall,
            "cores_busy": cores_busy,
            "steady_cells_per_minute": steady,
            "processes_left_behind": left,
            "load_average_before": load,
        }
        print(f"    {label}: {wall:.1f} s", flush=True)
    ratio = runs["2"]["cells_per_minute"] / runs["1"]["cells_per_minute"]
    steady = {run: runs[run]["steady_cells_per_minute"] for run in runs}
    return {
        "steady_ratio": ratio_of(steady["2"], steady["1"]),
        "steady_ratio_with_default_interop": ratio_of(steady["2-default-interop"], steady["1"]),
        "steady_ratio_before": ratio_of(steady.get("before-2"), steady.get("before-1")),
        "machine_ceiling": ceiling,
        "cells": cells,
        "cell": f"relu / he_normal / adam, [256, 128], {THROUGHPUT_EPOCHS} epochs, batch 256",
        "parallel_cells": runs,
        "ratio": ratio,
        "target": THROUGHPUT_TARGET,
        "meets_target": ratio >= THROUGHPUT_TARGET,
    }


def throughput_runs() -> list[tuple[str, int, dict[str, str], str]]:
    """The candidate's throughput runs: name, parallel_cells, extra environment, label.
    "2-default-interop" is the engine's workers before they shared out the cores: each with an
    inter-op pool of the machine's cores (TensorFlow's default, restated here, because the
    engine's setting yields to the environment's)."""
    machine = {"TF_NUM_INTEROP_THREADS": str(usable_cores())}
    label = "parallel_cells 2, TensorFlow's default inter-op pool in each worker"
    return [
        ("1", 1, {}, "parallel_cells 1"),
        ("2-default-interop", 2, machine, label),
        ("2", 2, {}, "parallel_cells 2"),
    ]


def ratio_of(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator and denominator else None


# ------------------------------------------------------------------------------------- summary
def growth_summary(
    growth: dict[str, list[dict[str, Any]]], candidate_sizes: list[int]
) -> dict[str, Any]:
    """Largest/smallest overhead-per-cell ratios, and the baseline's line extrapolated."""
    summary: dict[str, Any] = {}
    for name, points in growth.items():
        if len(points) < 2:
            continue
        small, large = min(points, key=_cells), max(points, key=_cells)
        ratio = large["overhead_per_cell"] / small["overhead_per_cell"]
        entry: dict[str, Any] = {
            "smallest_cells": small["cells"],
            "largest_cells": large["cells"],
            "overhead_ratio": ratio,
        }
        if name == "candidate":
            entry["target"] = RATIO_TARGET
            entry["target_applies"] = large["cells"] >= RATIO_TARGET_CELLS
            entry["meets_target"] = ratio <= RATIO_TARGET
        summary[name] = entry
    baseline = growth.get("baseline", [])
    if len(baseline) >= 2 and candidate_sizes:
        cells = [float(p["cells"]) for p in baseline]
        overhead = [p["overhead_per_cell"] for p in baseline]
        slope, intercept = statistics.linear_regression(cells, overhead)
        target = max(candidate_sizes)
        fit_per_cell = sum(p["fit_seconds"] for p in baseline) / sum(p["cells"] for p in baseline)
        predicted = intercept + slope * target
        smallest = min(baseline, key=_cells)
        summary["baseline_extrapolation"] = {
            "fit": "least squares of overhead per cell against cells over the measured sizes",
            "intercept_seconds": intercept,
            "seconds_per_cell_per_cell": slope,
            "cells": target,
            "measured": target in {p["cells"] for p in baseline},  # else an extrapolation
            "overhead_per_cell": predicted,
            "wall_seconds": (predicted + fit_per_cell) * target,
            "overhead_ratio_to_smallest": predicted / smallest["overhead_per_cell"],
            "smallest_cells": smallest["cells"],
        }
    return summary


def _cells(point: dict[str, Any]) -> int:
    return int(point["cells"])


def print_growth(
    growth: dict[str, list[dict[str, Any]]], sizes: dict[str, list[int]], summary: dict[str, Any]
) -> None:
    """The growth table: the baseline's rows also show the candidate's sizes it skipped."""
    parallel = {p.get("parallel_cells", 1) for points in growth.values() for p in points}
    print(
        "\n1. Growth: `dvc repro train` of trivial cells, parallel_cells "
        f"{', '.join(map(str, sorted(parallel)))}; overhead = (wall - fit / parallel) / cells"
    )
    print(
        f"  {'design':9s} {'cells':>6s} {'wall':>9s} {'wall/cell':>9s} {'sum fit':>9s}"
        f" {'overhead/cell':>13s} {'dvc status':>10s} {'no-op repro':>11s}"
    )
    for name, points in growth.items():
        measured = {p["cells"]: p for p in points}
        rows = {*measured, *sizes["candidate"]} if name == "baseline" else set(measured)
        for size in sorted(rows):
            point = measured.get(size)
            if point is None:
                print(f"  {name:9s} {size:6d}   not measured (see the extrapolation below)")
                continue
            wall = point["wall_seconds"]
            print(
                f"  {name:9s} {size:6d} {wall:7.1f} s {wall / size:7.2f} s"
                f" {point['fit_seconds']:7.1f} s {point['overhead_per_cell']:11.2f} s"
                f" {point['status_seconds']:8.1f} s {point['noop_repro_seconds']:9.1f} s"
                + ("" if point["noop_repro_up_to_date"] else " (no-op repro not up to date!)")
            )
    for name in growth:
        entry = summary.get(name)
        if entry is None:
            continue
        line = (
            f"  {name}: overhead per cell at {entry['largest_cells']} cells / at "
            f"{entry['smallest_cells']} cells = {entry['overhead_ratio']:.2f}"
        )
        if name == "candidate":
            verdict = "meets" if entry["meets_target"] else "MISSES"
            line += f" (target <= {RATIO_TARGET} at {RATIO_TARGET_CELLS:,}+ cells: "
            line += verdict if entry["target_applies"] else "largest size too small to judge"
            line += ")"
        print(line)
    extrapolation = summary.get("baseline_extrapolation")
    if extrapolation:
        what = "fitted" if extrapolation["measured"] else "EXTRAPOLATION, not measured"
        print(
            f"  baseline, least squares over its sizes: overhead per cell = "
            f"{extrapolation['intercept_seconds']:.3f} s + "
            f"{extrapolation['seconds_per_cell_per_cell']:.5f} s x cells"
        )
        print(
            f"  -> at {extrapolation['cells']} cells ({what}): "
            f"{extrapolation['overhead_per_cell']:.2f} s per cell, "
            f"{extrapolation['overhead_ratio_to_smallest']:.2f} x its value at "
            f"{extrapolation['smallest_cells']} cells, `dvc repro train` about "
            f"{extrapolation['wall_seconds'] / 60:.0f} min"
        )


def print_end_to_end(result: dict[str, Any]) -> None:
    print(f"\n2. End to end (candidate, parallel_cells 2): {result['grid']}")
    for stage, seconds in result["stage_seconds"].items():
        print(f"  dvc repro {stage:9s} {seconds:8.1f} s")
    verdict = "meets" if result["meets_target"] else "MISSES"
    print(
        f"  total {result['total_seconds'] / 60:.1f} min (target <= "
        f"{END_TO_END_TARGET_SECONDS // 60} min: {verdict}); download + preprocess before it "
        f"{result['download_and_preprocess_seconds']:.1f} s; "
        f"sum of fit {result['fit_seconds']:.0f} s"
    )


def print_throughput(result: dict[str, Any]) -> None:
    print(f"\n3. Throughput (candidate): {result['cells']} real cells ({result['cell']})")
    for run in result["parallel_cells"].values():
        print(
            f"  {run['label']}: {run['wall_seconds']:7.1f} s, "
            f"{run['cells_per_minute']:.2f} cells per minute"
            + (
                f" ({run['steady_cells_per_minute']:.2f} after the first wave)"
                if run.get("steady_cells_per_minute")
                else ""
            )
            + f"; {run['cores_busy']:.2f} of {os.cpu_count()} cores busy"
        )
    verdict = "meets" if result["meets_target"] else "MISSES"
    print(f"  ratio {result['ratio']:.2f} (target >= {THROUGHPUT_TARGET}: {verdict})")
    if result.get("steady_ratio"):
        print(f"  ratio after the first wave (no worker start-up) {result['steady_ratio']:.2f}")
    if result.get("steady_ratio_with_default_interop"):
        print(
            "  the same with TensorFlow's default inter-op pool in each worker "
            f"{result['steady_ratio_with_default_interop']:.2f}"
        )
    if result.get("steady_ratio_before"):
        print(f"  the same with the code before {result['steady_ratio_before']:.2f}")
    ceiling = result["machine_ceiling"]
    print(
        f"  this machine's ceiling: two single-threaded processes do {ceiling['ratio']:.2f}x "
        f"the work of one ({ceiling['workload']}: {ceiling['alone_seconds']:.1f} s alone, "
        f"{max(ceiling['two_at_once_seconds']):.1f} s two at once)"
    )


# ------------------------------------------------------------------------------------- set-up
def sizes_option(text: str) -> list[int]:
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text}"
        ) from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"sizes must be integers >= 1: {text}")
    return sizes


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=sizes_option, help="candidate (70,280,1120)")
    parser.add_argument("--baseline-sizes", type=sizes_option, help="baseline (70,140,280)")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git commit of the baseline")
    parser.add_argument("--only", choices=("baseline", "candidate"), help="measure one design")
    parser.add_argument("--initializers", type=int, help="initializers in the grids (10)")
    parser.add_argument("--end-to-end-cells", type=int, help="1680")
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument("--throughput-cells", type=int, help="12")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument(
        "--throughput-before",
        metavar="COMMIT",
        help="also measure throughput with this commit's code, on 1 and 2 workers (before/after)",
    )
    parser.add_argument(
        "--parallel-cells",
        type=int,
        default=1,
        help="cells at once in the growth runs (1); with 2, a candidate size equal to "
        "--end-to-end-cells is also the end-to-end run (evaluate and report follow its train)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few minutes")
    parser.add_argument("--out", type=Path, help="JSON results (benchmarks/results/...)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch projects")
    args = parser.parse_args()
    defaults: dict[str, Any] = {  # normal, quick
        "sizes": ([70, 280, 1120], [14, 28, 56]),
        "baseline_sizes": ([70, 140, 280], [14, 28]),
        "initializers": (10, 2),
        "end_to_end_cells": (1680, 112),
        "throughput_cells": (12, 4),
        "out": (
            ROOT / "benchmarks" / "results" / "grid_scaling.json",
            ROOT / "benchmarks" / "results" / "grid_scaling-quick.json",
        ),
    }
    for key, (normal, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else normal)
    return args


def baseline_source(commit: str, directory: Path, option: str = "--baseline") -> tuple[Path, str]:
    """The tree of `commit` (git archive), and its full hash; `option` names it in an error."""
    resolved = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{commit}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if resolved.returncode != 0:
        raise SystemExit(f"{option} {commit}: not a commit of {ROOT}")
    full = resolved.stdout.strip()
    directory.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", full], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(directory)], stdin=archive.stdout, check=True)
    assert archive.stdout is not None
    archive.stdout.close()
    if archive.wait() != 0:
        raise SystemExit(f"git archive {full} failed")
    return directory, full


def candidate_label() -> str:
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", *COPIED],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"working tree of {ROOT} at {head[:12]}" + (" + uncommitted changes" if dirty else "")


def variant_names() -> Names:
    train = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]
    return Names(list(train["activations"]), list(train["initializers"]), list(train["optimizers"]))


def header(benchmark: str, workspace: Workspace, designs: dict[str, Design]) -> dict[str, Any]:
    """What a results file starts with: the script, when, the machine, the data, the designs."""
    return {
        "benchmark": benchmark,
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "data": workspace.data,
        "designs": {name: design.label for name, design in designs.items()},
    }


class Results:
    """The JSON file, rewritten after every measurement."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {**header, "complete": False}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(self.data, indent=2) + "\n")
        temporary.replace(self.path)


def main() -> None:
    args = parse_arguments()
    names = variant_names()
    if not 1 <= args.initializers <= len(names.initializers):
        raise SystemExit(f"--initializers: between 1 and {len(names.initializers)}")
    if args.throughput_cells < 1:
        raise SystemExit("--throughput-cells: at least 1")
    wanted = [args.only] if args.only else ["baseline", "candidate"]
    sizes = {"baseline": args.baseline_sizes, "candidate": args.sizes}
    options = {"baseline": "--baseline-sizes", "candidate": "--sizes"}
    grids = {
        name: [names.grid(n, args.initializers, ["adam"], options[name]) for n in sizes[name]]
        for name in wanted
    }
    end_grid = None
    if "candidate" in wanted and not args.skip_end_to_end:
        end_grid = names.grid(
            args.end_to_end_cells, args.initializers, names.optimizers, "--end-to-end-cells"
        )
    base = Path(tempfile.mkdtemp(prefix="grid-scaling-"))
    try:
        results = measure(args, grids, end_grid, Workspace(base, args.keep))
    finally:
        if args.keep:
            print(f"\nscratch projects kept under {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)

    print_growth(results["growth"], sizes, results["growth_summary"])
    if "end_to_end" in results:
        print_end_to_end(results["end_to_end"])
    elif "candidate" in wanted:
        print("\n2. End to end: skipped (--skip-end-to-end)")
    if "throughput" in results:
        print_throughput(results["throughput"])
    elif "candidate" in wanted:
        print("\n3. Throughput: skipped (--skip-throughput)")
    else:
        print("\n2., 3. End to end and throughput measure the candidate: not run (--only baseline)")
    print(f"\nresults: {args.out}")


def measure(
    args: argparse.Namespace,
    grids: dict[str, list[Grid]],
    end_grid: Grid | None,
    workspace: Workspace,
) -> dict[str, Any]:
    """Every measurement the options ask for, saved to --out after each one."""
    designs: dict[str, Design] = {}
    if "baseline" in grids:
        source, full = baseline_source(args.baseline, workspace.base / "baseline-source")
        designs["baseline"] = Design("baseline", source, f"git commit {full}")
    if "candidate" in grids:
        designs["candidate"] = Design("candidate", ROOT, candidate_label())
    before = None  # resolved now: a mistyped commit stops the script before any measurement
    if args.throughput_before and "candidate" in grids and not args.skip_throughput:
        source, full = baseline_source(
            args.throughput_before,
            workspace.base / "throughput-before-source",
            "--throughput-before",
        )
        before = Design("before", source, f"the code of git commit {full[:12]}")
    results = Results(
        args.out,
        {
            **header("benchmarks/grid_scaling.py", workspace, designs),
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "growth": {name: [] for name in designs},
        },
    )
    print(f"scratch projects under {workspace.base}; data: {workspace.data}")
    for design in designs.values():
        print(f"  {design.name}: {design.label}")
    print(f"  load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    data = results.data
    try:
        # Growth: smallest sizes first, the designs interleaved at each size.
        plan = [(grid, design) for design in designs.values() for grid in grids[design.name]]
        for grid, design in sorted(plan, key=lambda item: item[0].cells):
            combined = (
                design.name == "candidate"
                and end_grid is not None
                and args.parallel_cells == 2
                and grid.cells == end_grid.cells
            )
            grid = end_grid if combined and end_grid is not None else grid
            print(f"\n[{design.name}] growth: {grid.describe()}", flush=True)
            point = growth_point(workspace, design, grid, args.parallel_cells, combined)
            data["growth"][design.name].append(point)
            if combined:
                stages = {"train": point["wall_seconds"], **point["later_stage_seconds"]}
                total = sum(stages.values())
                data["end_to_end"] = {
                    "cells": grid.cells,
                    "grid": grid.describe(),
                    "parallel_cells": 2,
                    "stage_seconds": stages,
                    "total_seconds": total,
                    "fit_seconds": point["fit_seconds"],
                    "download_and_preprocess_seconds": point["preprocess_seconds"],
                    "target_seconds": END_TO_END_TARGET_SECONDS,
                    "meets_target": total <= END_TO_END_TARGET_SECONDS,
                    "processes_left_behind": point["processes_left_behind"],
                    "load_average_before": point["load_average_before"],
                    "measured_with": "the growth run of the same size",
                }
            results.save()
            print(
                f"    dvc repro train {point['wall_seconds']:.1f} s, sum of fit "
                f"{point['fit_seconds']:.1f} s, {point['overhead_per_cell']:.2f} s overhead per "
                f"cell; dvc status {point['status_seconds']:.1f} s, no-op repro "
                f"{point['noop_repro_seconds']:.1f} s",
                flush=True,
            )
        data["growth_summary"] = growth_summary(data["growth"], args.sizes)
        results.save()
        if end_grid is not None and "end_to_end" not in data:
            print(f"\n[candidate] end to end: {end_grid.describe()}", flush=True)
            data["end_to_end"] = end_to_end(workspace, designs["candidate"], end_grid)
            results.save()
        if "candidate" in designs and not args.skip_throughput:
            print(f"\n[candidate] throughput: {args.throughput_cells} real cells", flush=True)
            data["throughput"] = throughput(
                workspace, designs["candidate"], args.throughput_cells, before
            )
            results.save()
    except BenchmarkError as error:
        data["error"] = str(error)
        results.save()
        raise SystemExit(f"\nbenchmark stopped (partial results in {args.out}): {error}") from None
    data["complete"] = True
    results.save()
    return data


if __name__ == "__main__":
    main()
