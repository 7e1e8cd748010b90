"""DVC compares studies at a glance (docs/comparing.md), under a real `dvc repro` in a temp git
repo: only the study's headline is a DVC metric, declaring the per-cell files as plain outputs
re-runs nothing, per-cell numbers are one command away, and two grids differ on one screen."""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import PROJECT_ROOT
from project import dvc, dvc_json, git, make_project
from test_pipeline import ran_stages

from stages.lib.core.paths import Paths

pytestmark = pytest.mark.slow

DOC = PROJECT_ROOT / "docs" / "comparing.md"
SUMMARY = "reports/study/summary.json"
# The commands docs/comparing.md shows (checked verbatim against it).
GRID = "^train\\.(activation|initializer|optimizer|architecture|batch_size|dropout|seed|epochs)$"
HEADLINE = [
    *("exp", "show", "--drop", ".*/", "--drop"),
    *("^(download|preprocess|train|evaluate|report)\\.", "--keep", GRID),
]
CHANGED = [*HEADLINE[:2], "--only-changed", *HEADLINE[2:]]
PER_CELL = ["metrics", "show", "reports/evaluate/metrics", "reports/train/*/metrics.json"]
SECOND_GRID = "train.optimizer=[adam,sgd]"  # the shrunk grid is adam only: one new cell
# DVC's own columns in `dvc exp show --csv`, before the metrics.
FIXED = ["Experiment", "rev", "typ", "Created", "parent"]


def per_cell_files(project: Path) -> list[str]:
    """What were DVC metrics before: every cell's train and evaluate metrics, and the stats."""
    paths = Paths.at(project)
    files = [paths.preprocess_reports / "stats.json", *paths.evaluate_metrics_dir.glob("*.json")]
    files += (project / "reports" / "train").glob("*/metrics.json")
    return sorted(path.relative_to(project).as_posix() for path in files)


def declared_as_metrics(pipeline: dict[str, Any]) -> dict[str, Any]:
    """dvc.yaml as it was before: the per-cell files (and the stats) declared as `metrics`."""
    moved = {
        "preprocess": "reports/preprocess/stats.json",
        "train": "reports/train",
        "evaluate": "reports/evaluate/metrics",
    }
    for name, path in moved.items():
        stage = pipeline["stages"][name]
        entry = next(e for e in stage["outs"] if isinstance(e, dict) and path in e)
        stage["outs"].remove(entry)
        stage["metrics"] = [entry, *stage.get("metrics", [])]
    return pipeline


def header(output: str) -> list[str]:
    return next(csv.reader(io.StringIO(output)))


def flat_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    """summary.json's keys as DVC names its columns (`best.optimizer`), null values left out."""
    keys = set()
    for key, value in data.items():
        if isinstance(value, dict):
            keys |= flat_keys(value, f"{prefix}{key}.")
        elif value is not None:
            keys.add(f"{prefix}{key}")
    return keys


def summary_columns(project: Path) -> set[str]:
    return flat_keys(json.loads((project / SUMMARY).read_text()))


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A one-cell study reproduced with the per-cell files declared as metrics (as committed
    before), then the real dvc.yaml committed; then a second grid run as an experiment."""
    project, env = make_project(tmp_path_factory.mktemp("dvc-compare"))
    real = (project / "dvc.yaml").read_text()
    before = declared_as_metrics(yaml.safe_load(real))
    (project / "dvc.yaml").write_text(yaml.safe_dump(before, sort_keys=False))
    git(project, env, "commit", "-qam", "per-cell files declared as metrics")
    dvc(project, env, "repro")
    metrics_before = dvc_json(project, env, "metrics", "show")[""]["data"]
    git(project, env, "add", "-A")
    git(project, env, "commit", "-qm", "first study")

    (project / "dvc.yaml").write_text(real)
    git(project, env, "commit", "-qam", "only the headline is a DVC metric")
    result = {
        "project": project,
        "env": env,
        "metrics_before": metrics_before,
        "status": dvc_json(project, env, "status"),
        "repro": dvc(project, env, "repro"),
        "metrics": dvc_json(project, env, "metrics", "show")[""]["data"],
        "exp_show": dvc(project, env, "exp", "show", "--csv", stdout_only=True),
        "headline": dvc(project, env, *HEADLINE, "--csv", stdout_only=True),
        "headline_summary": summary_columns(project),
    }
    # The per-cell command, its glob expanded as a shell would.
    targets = [p.relative_to(project).as_posix() for p in project.glob(PER_CELL[3])]
    result["per_cell"] = dvc_json(project, env, *PER_CELL[:3], *targets)[""]["data"]
    result["per_cell_files"] = per_cell_files(project)

    dvc(project, env, "exp", "run", "-n", "second-grid", "-S", SECOND_GRID)
    result["changed"] = dvc(project, env, *CHANGED, "--csv", stdout_only=True)
    result["changed_summary"] = summary_columns(project)
    return result


def test_declaring_per_cell_files_as_plain_outputs_runs_nothing_again(study):
    # Same lock entries (outs, metrics and plots are all `outs` in dvc.lock): no cell re-trains.
    assert study["status"] == {}
    assert ran_stages(study["repro"]) == set()
    before, per_cell = set(study["metrics_before"]), {SUMMARY, *study["per_cell_files"]}
    assert per_cell <= before  # reports/train as one metrics folder also listed its CSV files
    assert all(name.startswith("reports/train/") for name in before - per_cell)


def test_dvc_metrics_show_lists_only_the_study_s_headline(study):
    assert set(study["metrics"]) == {SUMMARY}
    assert flat_keys(study["metrics"][SUMMARY]["data"]) == study["headline_summary"]


def test_per_cell_numbers_are_one_documented_command_away(study):
    assert " ".join(["dvc", *PER_CELL]) in documented()
    project, shown = study["project"], study["per_cell"]
    cells = [f for f in study["per_cell_files"] if not f.startswith("reports/preprocess/")]
    assert sorted(shown) == cells
    for name in cells:
        numbers = json.loads((project / name).read_text())
        key = "test_accuracy" if name.startswith("reports/evaluate/") else "best_val_accuracy"
        assert shown[name]["data"][key] == pytest.approx(numbers[key])


def test_exp_show_leads_with_the_headline_and_names_no_cell(study):
    summary, metrics_end = study["headline_summary"], len(FIXED) + len(study["headline_summary"])
    columns = header(study["exp_show"])
    assert columns[: len(FIXED)] == FIXED
    assert set(columns[len(FIXED) : metrics_end]) == summary
    assert not [c for c in columns if "recall" in c or c.startswith(("reports/train/", "test."))]
    # The documented headline view: the summary, the study's name and the grid, nothing else.
    assert shlex.join(["dvc", *HEADLINE]) in documented()
    headline = header(study["headline"])
    assert headline[:metrics_end] == columns[:metrics_end]
    grid = [f"train.{axis}" for axis in re.findall(r"\w+", GRID.split("(")[1])]
    assert headline[metrics_end:] == ["study.name", *grid]


def test_two_grids_differ_on_one_screen(study):
    assert shlex.join(["dvc", *CHANGED]) in documented()
    columns = header(study["changed"])
    rows = list(csv.DictReader(io.StringIO(study["changed"])))
    second = next(row for row in rows if row["Experiment"] == "second-grid")
    baseline = next(row for row in rows if row["typ"] == "baseline" and row["rev"] != "workspace")
    assert (baseline["train.optimizer"], second["train.optimizer"]) == (
        "['adam']",
        "['adam', 'sgd']",
    )
    assert (baseline["cells"], second["cells"]) == ("1", "2")
    # Only what differs, beside the two grids: every column fits one screen.
    assert {"cells", "combinations", "best.test_accuracy_mean"} <= set(columns)
    assert "study.name" not in columns and "train.epochs" in columns  # the same, but the grid
    assert len(columns) <= len(FIXED) + len(study["changed_summary"]) + 8


def documented() -> str:
    """docs/comparing.md with line continuations joined."""
    return re.sub(r"\\\n\s*", "", DOC.read_text())
