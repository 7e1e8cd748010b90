"""The default study's `dvc repro --force`: the baseline design against this one, side by side.

Each design's own params.yaml, unchanged (the default study: 54 cells), in a fresh scratch
project of its own code, built as benchmarks/grid_scaling.py builds them (the code copied, `git
init`, the venv's real `dvc`, no inherited DVC_*, MLFLOW_*, DASK_* or MLPSTUDY_* variable;
`dvc repro preprocess` first, not timed, so the download is not part of it). Then the timed
command is `dvc repro --force`: every stage, download and preprocess included, each cell trained
(the project is fresh, so nothing is found up to date), evaluated and reported.

- baseline:  the code of a git commit (--baseline, default 7128918: one `train@<key>` stage per
             cell, a warm home-made pool training ahead of DVC);
- candidate: the working tree this script lives in (one `train` stage, the cells on Dask).

The runs alternate, baseline first, then in mirrored order (B C C B ... for --repeats 2), so a
drift of the machine's speed hits both alike. For each run: wall seconds and the cells trained
(54 in both, checked: a run.json and a history.csv each). No sum of `fit` seconds: the
baseline's run.json times only the part of a cell its DVC stage ran, not the epochs its pool
trained ahead. Printed: each design's median and the ratio candidate / baseline (<= 1: no
slower).

    .venv/bin/python benchmarks/default_study.py [--repeats 1] [--baseline 7128918]
        [--out benchmarks/results/default_study.json] [--keep]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import yaml
from grid_scaling import (
    DEFAULT_BASELINE,
    ROOT,
    BenchmarkError,
    Design,
    Results,
    Workspace,
    baseline_source,
    candidate_label,
    header,
)

from stages.lib.core.config import AXES


def cells_of(source: Path) -> int:
    """The number of cells of the grid in `source`'s params.yaml."""
    train = yaml.safe_load((source / "params.yaml").read_text())["train"]
    return math.prod(len(train[axis]) for axis in AXES)


def forced_run(workspace: Workspace, design: Design, repeat: int) -> dict[str, Any]:
    load = os.getloadavg()[0]
    project = workspace.project(design, f"default-{repeat}", lambda params: None)
    cells = cells_of(design.source)
    try:
        wall = project.dvc("repro", "--force")
        project.fit_seconds(cells)  # checks that every cell trained
    finally:
        left = project.finish()
    return {
        "design": design.name,
        "repeat": repeat,
        "cells": cells,
        "wall_seconds": wall,
        "processes_left_behind": left,
        "load_average_before": load,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each design (1)")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git commit of the baseline")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "default_study.json"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch projects")
    args = parser.parse_args()
    if args.repeats < 1:
        raise SystemExit("--repeats: at least 1")
    base = Path(tempfile.mkdtemp(prefix="default-study-"))
    workspace = Workspace(base, args.keep)
    source, full = baseline_source(args.baseline, base / "baseline-source")
    designs = {
        "baseline": Design("baseline", source, f"git commit {full}"),
        "candidate": Design("candidate", ROOT, candidate_label()),
    }
    order: list[str] = []
    for repeat in range(args.repeats):
        pair = ["baseline", "candidate"]
        order += pair if repeat % 2 == 0 else pair[::-1]
    results = Results(
        args.out,
        {**header("benchmarks/default_study.py", workspace, designs), "runs": []},
    )
    print(f"scratch projects under {base}; data: {workspace.data}")
    for design in designs.values():
        print(f"  {design.name}: {design.label}")
    try:
        for index, name in enumerate(order):
            repeat = order[: index + 1].count(name)
            print(f"\n[{name}] run {repeat}: dvc repro --force", flush=True)
            run = forced_run(workspace, designs[name], repeat)
            results.data["runs"].append(run)
            results.save()
            print(f"    {run['wall_seconds']:.1f} s for {run['cells']} cells", flush=True)
    except BenchmarkError as error:
        results.data["error"] = str(error)
        results.save()
        raise SystemExit(f"\nbenchmark stopped (partial results in {args.out}): {error}") from None
    finally:
        if args.keep:
            print(f"\nscratch projects kept under {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    runs = results.data["runs"]
    median = {
        name: statistics.median(run["wall_seconds"] for run in runs if run["design"] == name)
        for name in designs
    }
    ratio = median["candidate"] / median["baseline"]
    results.data.update(median_wall_seconds=median, ratio=ratio, no_slower=ratio <= 1.0)
    results.data["complete"] = True
    results.save()
    print("\nThe default study, `dvc repro --force` in a fresh project (median of the runs):")
    for name in designs:
        print(f"  {name:9s} {median[name]:7.1f} s ({median[name] / 60:.1f} min)")
    verdict = "no slower" if ratio <= 1.0 else "SLOWER"
    print(f"  candidate / baseline {ratio:.2f} ({verdict})")
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
