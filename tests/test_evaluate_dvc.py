"""evaluate under a real `dvc repro` in a temporary git repo: what lands in git and what in DVC's
cache, confusion plots drawn from the cache (also for an older revision), byte-identical exports.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from project import dvc, dvc_json, git, make_project
from test_pipeline import edit_params, ran_stages

from stages.lib.core.paths import Paths
from stages.lib.evaluation.classifier import EXPORT_FILE

pytestmark = pytest.mark.slow

CELL = "relu-glorot_uniform-adam-tiny-64-0.0-0"  # the one cell of shrink()'s grid


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

    output = dvc(project, env, "repro", "--force", "--single-item", "evaluate")

    assert ran_stages(output) == {"evaluate"}
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
