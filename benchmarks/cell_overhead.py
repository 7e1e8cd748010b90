"""Where a `train@<cell>` stage spends its time outside its epochs, in a real `dvc repro`.

A scratch copy of the project (a git repo) with a small grid is trained twice with
`dvc repro --force train`, side by side in one run:

(a) one process per cell: `MLPSTUDY_TRAIN_SERVICE=off`, each `mlpstudy train` imports TensorFlow,
    Keras and MLflow itself (the design before the warm training process);
(b) the warm process: the cells of the `dvc repro` train one after the other in one warm process
    (stages/lib/training/train_client.py), `train.parallel_cells: 1`;
(c) the product: the same with `train.parallel_cells: 2`: workers train the next cells ahead
    while DVC runs one cell's stage (stages/lib/training/train_pool.py).

For (a) and (b), "whole cell minus epochs" is the `dvc repro` wall time minus the sum of every
cell's `epoch_seconds` (history.csv), per cell, next to the wall time of a bare
`python -c "import tensorflow"` measured in between. For (b) the breakdown comes from the warm
process's log (its start, each request) and each cell's run.json `seconds` (its phases). For all
three, the wall time of the `dvc repro` per cell, over all cells and over the cells after the
first (whose stage starts the processes): what a grid costs.

Data: the real MNIST files when ../shared/mnist (or $MLPSTUDY_MNIST_MIRROR) holds them, else
synthetic digits of the same size.

    .venv/bin/python benchmarks/cell_overhead.py [--cells 6] [--epochs 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COPIED = ("dvc.yaml", "params.yaml", "stages", ".dvc/config", ".dvcignore", ".gitignore")
sys.path.insert(0, str(ROOT / "tests"))


def environment(mirror: Path, sums: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        MLPSTUDY_MNIST_MIRROR=str(mirror),
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@example.invalid",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@example.invalid",
    )
    if sums:
        env["MLPSTUDY_MNIST_SHA256SUMS"] = str(sums)
    return env


def scratch_project(cells: int, epochs: int) -> tuple[Path, dict[str, str]]:
    """A git repo with the project's pipeline, a grid of `cells` cells and prepared data."""
    base = Path(tempfile.mkdtemp(prefix="cell-overhead-"))
    project = base / "project"
    for name in COPIED:
        source, target = ROOT / name, project / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    params = yaml.safe_load((project / "params.yaml").read_text())
    activations = ["relu", "tanh", "sigmoid"]
    seeds = list(range(max(1, -(-cells // len(activations)))))
    params["train"].update(
        activation=activations[: min(cells, 3)],
        initializer=["he_normal"],
        optimizer=["adam"],
        seed=seeds,
        epochs=epochs,
        early_stopping_patience=None,
    )
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    real = Path(os.environ.get("MLPSTUDY_MNIST_MIRROR", ROOT.parent / "shared" / "mnist"))
    if (real / "train-images-idx3-ubyte.gz").is_file():
        env = environment(real, None)
    else:
        from synthetic import write_mirror

        write_mirror(base / "mirror", n_train=60_000, n_test=10_000)
        env = environment(base / "mirror", base / "mirror" / "SHA256SUMS")
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "x"]):
        subprocess.run(command, cwd=project, env=env, check=True)
    subprocess.run(
        [BIN / "dvc", "repro", "preprocess"], cwd=project, env=env, check=True, capture_output=True
    )
    return project, env


def timed(command: list[Any], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{command} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return time.perf_counter() - start


def timed_stages(command: list[Any], cwd: Path, env: dict[str, str]) -> tuple[float, list[float]]:
    """The wall time of `command`, and when (seconds after its start) each train stage began."""
    start = time.perf_counter()
    begun = []
    with subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None
        output = []
        for line in process.stdout:
            output.append(line)
            if line.startswith("Running stage 'train@"):
                begun.append(time.perf_counter() - start)
    if process.returncode != 0:
        raise SystemExit(f"{command} failed:\n{''.join(output)[-4000:]}")
    return time.perf_counter() - start, begun


def epochs_and_phases(project: Path) -> tuple[float, list[dict[str, float]]]:
    total, phases = 0.0, []
    for history in sorted((project / "reports" / "train").glob("*/history.csv")):
        with history.open(newline="") as handle:
            total += sum(float(row["epoch_seconds"]) for row in csv.DictReader(handle))
        record = project / "data" / "models" / history.parent.name / "run.json"
        phases.append(json.loads(record.read_text())["seconds"])
    return total, phases


def wait_until_no_service(project: Path) -> None:
    """A fresh start for (b): no warm process of this project left from an earlier repeat."""
    from project import training_processes

    for pid in training_processes(project):
        os.kill(pid, 15)
    deadline = time.monotonic() + 30
    while training_processes(project) and time.monotonic() < deadline:
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    project, env = scratch_project(args.cells, args.epochs)
    train = yaml.safe_load((project / "params.yaml").read_text())["train"]
    cells = len(train["activation"]) * len(train["seed"])
    print(f"scratch project {project}: {cells} cells x {args.epochs} epochs, early stopping off")
    repro = [BIN / "dvc", "repro", "--force", "train"]
    modes = {  # environment, train.parallel_cells
        "per-process": ({**env, "MLPSTUDY_TRAIN_SERVICE": "off"}, 1),
        "warm": (env, 1),
        "warm x2": (env, 2),
    }
    fixed: dict[str, list[float]] = {mode: [] for mode in modes}
    walls: dict[str, list[float]] = {mode: [] for mode in modes}
    steady: dict[str, list[float]] = {mode: [] for mode in modes}  # cells after the first
    imports: list[float] = []
    log = project / ".mlpstudy" / "train-service.log"
    breakdown: list[dict[str, float]] = []
    for repeat in range(args.repeats):
        for mode, (mode_env, parallel) in modes.items():
            set_parallel_cells(project, parallel)
            imports.append(timed([sys.executable, "-c", "import tensorflow"], project, env))
            wait_until_no_service(project)
            log.unlink(missing_ok=True)
            wall, begun = timed_stages(repro, project, mode_env)
            epochs, phases = epochs_and_phases(project)
            fixed[mode].append((wall - epochs) / cells)
            walls[mode].append(wall / cells)
            steady[mode].append((wall - begun[1]) / (cells - 1))
            print(f"  {mode:12s} repeat {repeat + 1}: wall {wall:6.1f} s, epochs {epochs:6.1f} s")
            if mode == "warm":
                breakdown.append(service_breakdown(log.read_text(), phases, wall, epochs, cells))
    client = statistics.median(
        timed(
            [sys.executable, "-c", "import stages.cli, stages.lib.training.train_client"],
            project,
            env,
        )
        for _ in range(3)
    )
    wait_until_no_service(project)  # leave no warm process behind
    report(
        {mode: fixed[mode] for mode in ("per-process", "warm")}, imports, breakdown, client, cells
    )
    print("\nwall time of the `dvc repro` per cell (median over repeats; the first cell's stage")
    print("starts the processes):")
    print(f"  {'':12s} {'all cells':>11s} {'cells after the first':>23s}")
    for mode, values in walls.items():
        after = statistics.median(steady[mode])
        ratio = statistics.median(steady["warm"]) / after
        print(
            f"  {mode:12s} {statistics.median(values):9.2f} s {after:21.2f} s "
            f"({ratio:.2f} x the speed of warm)"
        )


def set_parallel_cells(project: Path, parallel: int) -> None:
    """`train.parallel_cells`: speed only, no cell declares it (nothing re-trains for it)."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["parallel_cells"] = parallel
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def service_breakdown(
    log: str, phases: list[dict[str, float]], wall: float, epochs: float, cells: int
) -> dict[str, float]:
    """Per cell: the warm process's start (amortized), its phases, and what is left."""
    start = float(re.findall(r"ready for .* after ([\d.]+) s", log)[0])
    served = sum(float(s) for s in re.findall(r"request served in ([\d.]+) s", log))
    per_cell = {
        key: statistics.mean(p.get(key, 0.0) for p in phases)
        for key in ("data", "tracking_start", "model", "model_logging", "outputs")
    }
    per_cell["fit outside epochs"] = (sum(p["fit"] for p in phases) - epochs) / cells
    inside = sum(per_cell.values())
    per_cell["request handling rest"] = served / cells - inside - epochs / cells
    per_cell["warm process start (once, amortized)"] = start / cells
    per_cell["client + DVC (the rest)"] = (wall - served - start) / cells
    return per_cell


def report(
    fixed: dict[str, list[float]],
    imports: list[float],
    breakdown: list[dict[str, float]],
    client: float,
    cells: int,
) -> None:
    tensorflow = statistics.median(imports)
    print(f"\nbare `python -c 'import tensorflow'`: {tensorflow:.2f} s (median, measured between)")
    print("whole cell minus epochs, per cell (median over repeats):")
    for mode, values in fixed.items():
        value = statistics.median(values)
        print(f"  {mode:12s} {value:6.2f} s = {value / tensorflow:5.2f} x import tensorflow")
    print("  target for the product (warm): <= 1.15 x")
    print(f"\nbreakdown of the warm design, per cell over {cells} cells (median over repeats):")
    for key in breakdown[0]:
        value = statistics.median(b[key] for b in breakdown)
        print(f"  {key:38s} {value:6.3f} s")
    print(f"  {'of which client interpreter + imports':38s} {client:6.3f} s")
    start = statistics.median(b["warm process start (once, amortized)"] for b in breakdown) * cells
    rest = statistics.median(fixed["warm"]) - start / cells
    grid = 54
    print(
        f"\na {grid}-cell grid pays the {start:.1f} s start once: {rest + start / grid:.2f} s per "
        f"cell = {(rest + start / grid) / tensorflow:.2f} x import tensorflow"
    )


if __name__ == "__main__":
    main()
