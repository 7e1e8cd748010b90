"""The study in MLflow's UI, seen in a real browser (issues 12, 22).

A small real pipeline (2 activations x 2 seeds, synthetic data) fills the project's store, and a
reported synthetic study (12 cells, no training) shows the saved view the report writes; each test
starts `mlpstudy ui` (a real `mlflow server` on 127.0.0.1) and drives Debian's Chromium with
Playwright (tests/browser.py), asserting what a person sees. Screenshots go to
$MLPSTUDY_TEST_ARTIFACTS/mlflow-ui/ (default: .test-artifacts/ at the project root, git-ignored);
the README's come from the real study (tests/screenshots.py, `make screenshots`). Nothing is
downloaded: without Chromium (`apt-get install chromium`, which .ci/run does) the tests skip,
naming what is missing.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import browser as ui
import pytest
import yaml
from conftest import PROJECT_ROOT
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from project import BIN, dvc, make_project, shrink, shrunk_cell
from test_report import accuracy_of, make_params, write_cell

from stages import report
from stages.lib.core.config import AXES, Params
from stages.lib.core.grid import grid
from stages.lib.core.paths import Paths
from stages.lib.tracking import runs, study_tracking, tracking

pytestmark = pytest.mark.slow

SHOTS = Path(os.environ.get("MLPSTUDY_TEST_ARTIFACTS", PROJECT_ROOT / ".test-artifacts"))
# The UI's model-training views (see stages/lib/tracking/study_ui.py).
ML = "workflowType=machine_learning"
CELLS = [shrunk_cell(a, "glorot_uniform", "adam", s).key for a in ("relu", "tanh") for s in (0, 1)]


def two_by_two(params: dict) -> None:
    shrink(params)
    params["train"].update(activation=["relu", "tanh"], seed=[0, 1])


def browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (dev extra: `make setup`)")
    if not ui.CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {ui.CHROMIUM}: `apt-get install chromium` (.ci/run does)")
    return sync_playwright


def start_ui(project: Path, env: dict[str, str], log: Path):
    return ui.start_ui(BIN / "mlpstudy", project, env, log)


def shoot(page, name: str) -> None:
    folder = SHOTS / "mlflow-ui"
    folder.mkdir(parents=True, exist_ok=True)
    page.mouse.move(1, 1)  # no hover tooltip in the picture
    page.screenshot(path=str(folder / name))


def test_the_study_reads_in_mlflow_ui_in_a_real_browser(tmp_path) -> None:
    sync_playwright = browser_or_skip()
    project, env = make_project(tmp_path, two_by_two)
    dvc(project, env, "repro")
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    (parent,) = [name for name in runs if name.startswith("grid-")]
    server, link = start_ui(project, env, tmp_path / "ui.log")
    try:
        with sync_playwright() as playwright:
            browser = ui.launch(playwright)
            page = ui.new_page(browser, height=760)
            see_the_study(page, link, parent, runs, experiment.experiment_id)
            browser.close()
    finally:
        server.kill()


def toggle_columns(page, names: list[str]) -> None:
    """Tick or untick columns in the runs table's column selector (first match: the param)."""
    page.get_by_role("button", name="Columns").click()
    search = page.get_by_placeholder("Search columns")
    tree = page.get_by_test_id("column-selector-tree")
    for name in names:
        search.fill(name)
        # whole-name match: "initializer" must not pick the report's "grid.initializer"
        tree.locator(f"xpath=.//span[normalize-space(string(.))='{name}']").first.click()
    page.keyboard.press("Escape")


def see_the_study(page, link: str, parent: str, runs: dict, experiment_id: str) -> None:
    base = link.split("#", 1)[0]
    # The experiments list shows the study's description.
    page.goto(f"{base}#/experiments?{ML}")
    page.get_by_text("how do the activation function").first.wait_for()

    # The plain runs table (before a report, without the view): one row per grid revision,
    # opening onto the cells and the report.
    page.goto(f"{base}#/experiments/{experiment_id}/runs?{ML}")
    page.get_by_role("link", name=parent, exact=True).wait_for()
    page.locator('button[data-component-id*="runnamecellrenderer"]').first.click()
    for name in [*CELLS, "study-report"]:
        page.get_by_role("link", name=name, exact=True).wait_for()
    # Every factor can be a column (a param): shown and hidden with "Columns".
    columns = ["test/accuracy", "activation", "initializer", "optimizer", "seed"]
    toggle_columns(page, [*columns, "Dataset", "Models"])  # shown; the last two hidden
    headers = page.get_by_role("columnheader").all_inner_texts()
    assert set(columns) <= set(headers) and "Dataset" not in headers, headers
    shoot(page, "runs-nested.png")

    # The printed link lands on the study's cells, grouped by activation (the report's view).
    page.goto(link)
    for name in CELLS:
        page.get_by_role("link", name=name, exact=True).wait_for()
    assert f"/experiments/{experiment_id}/runs" in page.url, page.url
    assert page.get_by_text("Traces", exact=True).count() <= 1  # no GenAI overview page
    for activation in ("relu", "tanh"):
        page.get_by_text(f"Group: {activation}", exact=True).wait_for()
    headers = page.get_by_role("columnheader").all_inner_texts()
    assert {"test/accuracy", "activation", "seed"} <= set(headers), headers
    shoot(page, "runs-grouped.png")

    # The chart view, grouped: test accuracy per activation.
    page.goto(page.url.replace("/runs?", "/runs?compareRunsMode=CHART&", 1))
    page.get_by_placeholder("Search metric charts").fill("test/accuracy")
    page.get_by_text("test/accuracy").first.wait_for()
    page.wait_for_timeout(1500)  # charts animate in
    shoot(page, "charts-grouped.png")

    # A cell's run page shows its test accuracy.
    cell = runs[CELLS[0]]
    accuracy = cell.data.metrics["test/accuracy"]
    page.goto(f"{base}#/experiments/{experiment_id}/runs/{cell.info.run_id}?{ML}")
    page.get_by_placeholder("Search metrics").fill("test/accuracy")
    row = page.get_by_role("row").filter(has_text="test/accuracy").first
    row.wait_for()
    assert str(accuracy) in row.inner_text(), (accuracy, row.inner_text())  # JS prints as repr
    shoot(page, "cell-run.png")

    # The report's HTML opens in the report run's artifact viewer.
    report = runs["study-report"].info.run_id
    page.goto(f"{base}#/experiments/{experiment_id}/runs/{report}/artifacts?{ML}")
    page.get_by_text("index.html", exact=True).first.click()
    page.frame_locator("iframe").first.get_by_text("best", exact=False).first.wait_for()
    shoot(page, "report-artifact.png")
    page.get_by_text("figures", exact=True).first.click()
    page.get_by_text("main_effects.png", exact=True).first.click()
    page.get_by_text("figures/main_effects.png").first.wait_for()
    page.wait_for_function(  # the figure itself is drawn, not only its name
        "[...document.images].some(image => image.complete && image.naturalWidth > 300)"
    )
    shoot(page, "report-figure.png")


# ------------------------------------------------------------- the study's saved view (issue 22)


def synthetic_study(root: Path) -> tuple[Params, Paths]:
    """A reported study of 3 activations x 2 optimizers x 2 seeds, without training: each cell's
    run is created as train creates it (tags, parent) with the metrics evaluate and report log on
    it, and its files are the ones train and evaluate write (tests/test_report.py)."""
    params = make_params()
    paths = Paths.at(root)
    root.mkdir(parents=True)
    paths.params.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    experiment = tracking.open_experiment(params.study.name, paths)
    client = experiment.client
    parent = study_tracking.grid_parent(experiment, params)
    for cell in grid(params.train):
        write_cell(paths, cell)
        tags = {"kind": runs.CELL_KIND, **study_tracking.cell_tags(parent, params, cell)}
        factors = {axis: str(getattr(cell, axis)) for axis in AXES}
        run_id = runs.create_run(experiment, cell.key, factors, tags)
        outcomes = {"test/accuracy": accuracy_of(cell), "epochs_to_target": 2 + cell.seed}
        client.log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in outcomes.items()])
        client.set_terminated(run_id)
        paths.run_record(cell.key).parent.mkdir(parents=True, exist_ok=True)
        paths.run_record(cell.key).write_text(json.dumps({"run_id": run_id}))
    report.run(params, paths)
    return params, paths


def test_the_link_opens_the_study_compared_grouped_by_the_first_factor(
    tmp_path, monkeypatch, capsys
) -> None:
    sync_playwright = browser_or_skip()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    params, paths = synthetic_study(tmp_path / "project")
    printed = re.search(r"Study in MLflow .*: (\S+)", capsys.readouterr().out)
    assert printed and "viewStateShareKey=" in printed.group(1), printed
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    server, link = start_ui(paths.root, env, tmp_path / "ui.log")
    assert link.split("#", 1)[1] == printed.group(1).split("#", 1)[1]  # the report's link
    cells = grid(params.train)
    try:
        with sync_playwright() as playwright:
            browser = ui.launch(playwright)
            page = ui.new_page(browser)
            page.goto(link)
            see_the_comparison(page, cells)
            browser.close()
    finally:
        server.kill()


def see_the_comparison(page, cells: list) -> None:
    """Every cell, outcomes and varied factors as columns, one group per activation (best mean
    first) holding its cells (best first); grouping by the optimizer is a saved view away."""
    for cell in cells:  # every cell, none hidden in a collapsed parent row
        page.get_by_role("link", name=cell.key, exact=True).wait_for()
    assert page.get_by_role("link", name="study-report", exact=True).count() == 0
    shoot(page, "study-view.png")
    headers = [" ".join(h.split()) for h in page.get_by_role("columnheader").all_inner_texts()]
    for varied in ("test/accuracy", "epochs_to_target", "activation", "optimizer", "seed"):
        assert varied in headers, (varied, headers)
    for constant in ("initializer", "architecture", "batch_size", "dropout", "Dataset", "Models"):
        assert constant not in headers, (constant, headers)
    assert_grouped(page, cells, "activation")

    page.get_by_test_id("saved-views-trigger").click()
    page.get_by_text("Study: by optimizer", exact=True).click()
    page.get_by_text("Group: sgd", exact=True).wait_for()
    assert_grouped(page, cells, "optimizer")


def assert_grouped(page, cells: list, factor: str) -> None:
    """The table shows one group per level of `factor`, in order of mean test accuracy, each
    holding exactly its cells in order of test accuracy, best first."""
    shown: dict[str, list[str]] = {}
    for row in page.evaluate(ui.TABLE_ROWS):
        name = row.get(ui.NAME_COLUMN, "")
        group = re.search(r"Group: (\S+)", name)
        if group:
            level = shown.setdefault(group.group(1), [])
        else:
            level.append(name)
    levels = {str(getattr(cell, factor)) for cell in cells}
    members = {lvl: [c for c in cells if str(getattr(c, factor)) == lvl] for lvl in levels}
    mean = {lvl: sum(map(accuracy_of, group)) / len(group) for lvl, group in members.items()}
    assert list(shown) == sorted(levels, key=mean.get, reverse=True), shown
    for lvl, group in members.items():
        best_first = [c.key for c in sorted(group, key=accuracy_of, reverse=True)]
        assert shown[lvl] == best_first, (lvl, shown[lvl])


def test_a_new_grid_revision_holds_reused_and_new_cells_and_the_old_parent_goes(tmp_path) -> None:
    project, env = make_project(tmp_path)  # one cell, seed 0
    dvc(project, env, "repro")
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "seed: 0 (1 cells)" in experiment.tags["mlflow.note.content"]
    (first,) = client.search_runs([experiment.experiment_id], "tags.kind = 'grid'")

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["seed"] = [0, 1]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(project, env, "repro")

    live = client.search_runs([experiment.experiment_id])
    (parent,) = [run for run in live if run.data.tags["kind"] == "grid"]
    assert parent.info.run_id != first.info.run_id  # the first revision's parent, emptied, went
    children = {
        run.info.run_name: run.data.tags
        for run in live
        if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert set(children) == {
        "relu-glorot_uniform-adam-tiny-64-0.0-0",
        "relu-glorot_uniform-adam-tiny-64-0.0-1",
        "study-report",
    }
    cell = children["relu-glorot_uniform-adam-tiny-64-0.0-1"]
    assert cell["activation"] == "relu" and cell["seed"] == "1"
    assert cell["mlflow.source.name"] == f"mlpstudy train (cell {cell['cell']})"
    assert cell["cell"] == "relu-glorot_uniform-adam-tiny-64-0.0-1"
    note = cell["mlflow.note.content"]
    assert note.startswith("Cell relu-glorot_uniform-adam-tiny-64-0.0-1 of ")
    assert "architecture tiny, batch size 64, dropout 0.0, seed 1" in note
    assert (cell["architecture"], cell["batch_size"], cell["dropout"]) == ("tiny", "64", "0.0")
    assert children["study-report"]["mlflow.source.name"] == "mlpstudy report"
    described = client.get_experiment(experiment.experiment_id).tags["mlflow.note.content"]
    assert "seed: 0, 1 (2 cells)" in described
