"""The study in MLflow's UI, seen in a real browser (issue 12).

A small real pipeline (2 activations x 2 seeds, synthetic data) fills the project's store; the
test starts `mlpstudy ui` (a real `mlflow server` on 127.0.0.1) and drives Debian's Chromium with
Playwright, asserting what a person sees. Screenshots go to $MLPSTUDY_TEST_ARTIFACTS/mlflow-ui/
(default: .test-artifacts/ at the project root, git-ignored); with MLPSTUDY_UPDATE_SCREENSHOTS=1
the README's screenshots in docs/images/ are refreshed from the same run. Nothing is downloaded:
Chromium comes from the system (`apt-get install chromium`, which .ci/run does); without it the
test skips, naming what is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import urllib.request
from pathlib import Path

import processes
import pytest
import yaml
from conftest import PROJECT_ROOT, free_port
from mlflow.tracking import MlflowClient
from project import BIN, dvc, make_project, shrink, shrunk_cell

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("MLPSTUDY_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",  # root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-breakpad",
]
SHOTS = Path(os.environ.get("MLPSTUDY_TEST_ARTIFACTS", PROJECT_ROOT / ".test-artifacts"))
README_SHOTS = {"runs-grouped.png", "charts-grouped.png"}  # docs/images/ (README)
WAIT_MS = 30_000
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
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install chromium` (.ci/run does)")
    return sync_playwright


def start_ui(project: Path, env: dict[str, str], log: Path) -> tuple[processes.Child, str]:
    """`mlpstudy ui` on a free port; returns it and the link it printed, once the server answers."""
    port = free_port()
    child = processes.spawn(
        [BIN / "mlpstudy", "ui", "--port", str(port), "--root", project], log=log, env=env
    )
    deadline = time.monotonic() + 120
    while True:
        link = re.search(r"Study runs: (\S+)", child.output())
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                if link:
                    return child, link.group(1)
        except OSError:
            pass
        if child.process.poll() is not None or time.monotonic() > deadline:
            child.kill()
            pytest.fail(child.describe("the UI did not start"))
        time.sleep(0.5)


def shoot(page, name: str) -> None:
    folder = SHOTS / "mlflow-ui"
    folder.mkdir(parents=True, exist_ok=True)
    page.mouse.move(1, 1)  # no hover tooltip in the picture
    page.screenshot(path=str(folder / name))
    if os.environ.get("MLPSTUDY_UPDATE_SCREENSHOTS") == "1" and name in README_SHOTS:
        target = PROJECT_ROOT / "docs" / "images" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / name, target)


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
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000
            )
            page = browser.new_page(viewport={"width": 1440, "height": 760})
            page.set_default_timeout(WAIT_MS)
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

    # The printed link lands on the training runs, one row per grid revision.
    page.goto(link)
    page.get_by_role("link", name=parent, exact=True).wait_for()
    assert f"/experiments/{experiment_id}/runs" in page.url, page.url
    assert page.get_by_text("Traces", exact=True).count() <= 1  # no GenAI overview page
    close = page.get_by_role("button", name="Close")  # the assistant's side panel, if shown
    if close.count():
        close.first.click()
    page.locator('button[data-component-id*="runnamecellrenderer"]').first.click()
    for name in [*CELLS, "study-report"]:
        page.get_by_role("link", name=name, exact=True).wait_for()
    # Every factor is a column (a param), beside the test accuracy logged on each cell's run.
    columns = ["test/accuracy", "activation", "initializer", "optimizer", "seed"]
    toggle_columns(page, [*columns, "Dataset", "Models"])  # shown; the last two hidden
    headers = page.get_by_role("columnheader").all_inner_texts()
    assert set(columns) <= set(headers) and "Dataset" not in headers, headers
    shoot(page, "runs-nested.png")

    # Group by activation: one group per activation, each holding its two cells.
    page.get_by_role("button", name="Group by").click()
    page.get_by_placeholder("Search").fill("activation")
    page.get_by_text("activation", exact=True).last.click()
    page.keyboard.press("Escape")
    for activation in ("relu", "tanh"):
        page.get_by_text(f"Group: {activation}", exact=True).wait_for()
    for name in CELLS:
        page.get_by_role("link", name=name, exact=True).wait_for()
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
    assert cell["mlflow.source.name"].startswith("mlpstudy train --activation relu")
    note = cell["mlflow.note.content"]
    assert note.startswith("Cell relu-glorot_uniform-adam-tiny-64-0.0-1 of ")
    assert "architecture tiny, batch size 64, dropout 0.0, seed 1" in note
    assert (cell["architecture"], cell["batch_size"], cell["dropout"]) == ("tiny", "64", "0.0")
    assert children["study-report"]["mlflow.source.name"] == "mlpstudy report"
    described = client.get_experiment(experiment.experiment_id).tags["mlflow.note.content"]
    assert "seed: 0, 1 (2 cells)" in described
