"""evaluate under a real `dvc repro` in a temporary git repo: what lands in git and what in DVC's
cache, confusion plots drawn from the cache (also for an older revision), byte-identical exports,
and a grid that changes: only added or re-trained cells are evaluated, removed ones' files go.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
from project import dvc, dvc_json, git, make_project
from test_pipeline import edit_params, ran_stages

from stages.lib.core.paths import Paths
from stages.lib.evaluation.classifier import EXPORT_FILE
from stages.lib.evaluation.evaluation_record import cell_outputs

pytestmark = pytest.mark.slow

CELL = "relu-glorot_uniform-adam-tiny-64-0.0-0"  # the one cell of shrink()'s grid
ADDED = "relu-glorot_uniform-adam-tiny-64-0.0-1"  # seed 1, added to that grid


def cache_objects(project: Path) -> set[str]:
    cache = project / ".dvc" / "cache"
    return {str(path.relative_to(cache)) for path in cache.rglob("*") if path.is_file()}


def predictions(paths: Paths) -> list[dict[str, str]]:
    with paths.evaluate_predictions(CELL).open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory: pytest.TempPathFactory):
    """(project, env) after a whole `dvc repro` of the one-cell grid, committed to git."""
    project, env = make_project(tmp_path_factory.mktemp("evaluate-dvc"))
    dvc(project, env, "repro")
    git(project, env, "add", "-A")
    git(project, env, "commit", "-q", "-m", "first run")
    return project, env


def test_predictions_and_figures_are_in_dvc_s_cache_and_the_rest_in_git(reproduced):
    project, env = reproduced
    paths = Paths.at(project)
    tracked = set(git(project, env, "ls-files", stdout_only=True).splitlines())
    evaluate = paths.evaluate_reports.relative_to(project).as_posix()
    assert f"{evaluate}/metrics/{CELL}.json" in tracked
    assert f"{evaluate}/tables/{CELL}/confusion.csv" in tracked
    cached = (f"{evaluate}/predictions/", f"{evaluate}/figures/")
    assert not [path for path in tracked if path.startswith(cached)]
    # The .gitignore that DVC writes there is the one the project commits (copied by make_project).
    assert git(project, env, "status", "--porcelain", stdout_only=True) == ""
    assert dvc_json(project, env, "status") == {}
    # The files are DVC outputs with their content in the cache: removed, `dvc checkout` restores.
    for folder in (paths.evaluate_predictions_dir, paths.evaluate_figures_dir):
        assert git(project, env, "check-ignore", str(folder), stdout_only=True).strip()
    before = paths.evaluate_predictions(CELL).read_bytes()
    paths.evaluate_predictions(CELL).unlink()
    (paths.evaluate_figures(CELL) / "confusion.png").unlink()
    dvc(project, env, "checkout", "evaluate")
    assert paths.evaluate_predictions(CELL).read_bytes() == before
    assert (paths.evaluate_figures(CELL) / "confusion.png").stat().st_size > 1000


def test_evaluating_again_writes_byte_identical_exports_and_no_new_cache_object(reproduced):
    project, env = reproduced
    paths = Paths.at(project)
    export = paths.export_dir(CELL) / EXPORT_FILE
    before, objects = export.read_bytes(), cache_objects(project)
    paths.evaluate_record(CELL).unlink()  # else the cell is up to date and skipped

    output = dvc(project, env, "repro", "--force", "--single-item", "evaluate")

    assert ran_stages(output) == {"evaluate"}
    assert "evaluate: 1 cell evaluated, 0 up to date" in output
    assert export.read_bytes() == before
    assert cache_objects(project) == objects
    assert git(project, env, "status", "--porcelain", stdout_only=True) == ""


def test_plots_show_and_diff_draw_the_confusion_matrix_from_the_cache(reproduced):
    project, env = reproduced
    paths = Paths.at(project)
    old = predictions(paths)
    edit_params(project, lambda params: params["train"].update(epochs=2))
    dvc(project, env, "repro")
    new = predictions(paths)
    assert new != old  # another epoch changes some predictions, else the diff proves little
    name = paths.evaluate_predictions(CELL).relative_to(project).as_posix()
    figure = (paths.evaluate_figures(CELL) / "confusion.png").relative_to(project).as_posix()

    shown = dvc_json(project, env, "plots", "show")
    assert "errors" not in shown, shown.get("errors")
    (plot,) = shown["data"][name]
    assert _values(plot) == {"workspace": _pairs(new)}
    assert [image["type"] for image in shown["data"][figure]] == ["image"]

    # HEAD's predictions exist only in DVC's cache now: `dvc plots diff` reads them from there.
    diff = dvc_json(project, env, "plots", "diff", "HEAD")
    assert "errors" not in diff, diff.get("errors")
    (plot,) = diff["data"][name]
    assert sorted(plot["revisions"]) == ["HEAD", "workspace"]
    assert _values(plot) == {"workspace": _pairs(new), "HEAD": _pairs(old)}
    assert '"mark": "rect"' in json.dumps(plot["content"]["spec"])  # DVC's confusion template
    assert sorted(image["revisions"][0] for image in diff["data"][figure]) == ["HEAD", "workspace"]


def _values(plot: dict) -> dict[str, list[tuple[str, str]]]:
    """The (actual, predicted) rows of a rendered plot, per revision."""
    rows: dict[str, list[tuple[str, str]]] = {}
    for value in plot["content"]["data"]["values"]:
        rows.setdefault(value["rev"], []).append((value["actual"], value["predicted"]))
    return rows


def _pairs(rows: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(row["actual"], row["predicted"]) for row in rows]


# ----------------------------------------------------------------------------- the grid changes
def written(paths: Paths, key: str) -> dict[str, int]:
    """When each file evaluate wrote for cell `key` was last written (ns), by path."""
    return {str(file): file.stat().st_mtime_ns for file in cell_outputs(paths, key)}


def records(paths: Paths, key: str) -> tuple[dict, dict]:
    """The cell's run.json (train's) and evaluated.json (evaluate's)."""
    run = json.loads(paths.run_record(key).read_text())
    return run, json.loads(paths.evaluate_record(key).read_text())


def evaluate_line(output: str) -> str:
    """evaluate's last line in a `dvc repro` output: how many cells it evaluated."""
    lines = [
        line for line in output.splitlines() if re.match(r"evaluate: \d+ cells? evaluated", line)
    ]
    assert len(lines) == 1, output
    return lines[0]


@pytest.fixture(scope="module")
def grid_changes(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A one-cell grid reproduced, then a cell added, then that cell trained again, then it
    removed, each followed by `dvc repro`: what each step printed and left behind."""
    project, env = make_project(tmp_path_factory.mktemp("evaluate-grid"))
    paths = Paths.at(project)
    dvc(project, env, "repro")
    steps: dict = {"paths": paths, "env": env, "first": written(paths, CELL)}

    edit_params(project, lambda params: params["train"].update(seed=[0, 1]))
    steps["added"] = dvc(project, env, "repro")
    steps["after adding"] = written(paths, CELL), written(paths, ADDED)
    steps["added records"] = records(paths, ADDED)
    steps["added status"] = dvc_json(project, env, "status")

    shutil.rmtree(paths.model_dir(ADDED))  # how a user re-trains one cell
    steps["retrained"] = dvc(project, env, "repro")
    steps["after retraining"] = written(paths, CELL), written(paths, ADDED)
    steps["retrained records"] = records(paths, ADDED)

    edit_params(project, lambda params: params["train"].update(seed=[0]))
    steps["removed"] = dvc(project, env, "repro")
    steps["after removing"] = written(paths, CELL)
    steps["removed status"] = dvc_json(project, env, "status")
    return steps


def test_adding_a_cell_evaluates_only_that_cell(grid_changes):
    assert evaluate_line(grid_changes["added"]) == "evaluate: 1 cell evaluated, 1 up to date"
    kept, added = grid_changes["after adding"]
    assert kept == grid_changes["first"]  # not one file of the first cell written again
    assert len(added) == len(kept)
    assert grid_changes["added status"] == {}  # DVC recorded the persistent outputs as they are
    run, record = grid_changes["added records"]
    assert (record["run_id"], record["config_digest"]) == (run["run_id"], run["config_digest"])


def test_a_cell_trained_again_is_evaluated_again(grid_changes):
    assert evaluate_line(grid_changes["retrained"]) == "evaluate: 1 cell evaluated, 1 up to date"
    kept, retrained = grid_changes["after retraining"]
    before_kept, before = grid_changes["after adding"]
    assert kept == before_kept
    assert all(retrained[name] != before[name] for name in before), "every file written again"
    run, record = grid_changes["retrained records"]
    assert run["run_id"] != grid_changes["added records"][0]["run_id"]  # trained into a new run
    assert (record["run_id"], record["config_digest"]) == (run["run_id"], run["config_digest"])


def test_a_cell_removed_from_the_grid_loses_its_evaluate_files(grid_changes):
    paths = grid_changes["paths"]
    assert evaluate_line(grid_changes["removed"]) == (
        "evaluate: 0 cells evaluated, 1 up to date; removed the files of 1 cell no longer in the "
        "grid"
    )
    assert not [path for path in paths.evaluate_cell_outputs(ADDED) if path.exists()]
    assert grid_changes["after removing"] == grid_changes["first"]
    for folder in paths.evaluate_outputs:  # exactly the one cell's entries are left
        assert {entry.name for entry in folder.iterdir()} == {
            path.name for path in paths.evaluate_cell_outputs(CELL) if path.parent == folder
        }
    assert grid_changes["removed status"] == {}
