"""The README's screenshots, taken from a study's store: `make screenshots`, or
`python tests/screenshots.py --root <project> --out docs/images`.

Reads the project's params.yaml, mlflow.db and reports/study/index.html and writes nothing there:
the store is copied to a temporary folder, the study's saved views are written again into the
copy (so the pictures show the current view, even from a store reported by older code), and
`mlpstudy ui` serves the copy to Debian's Chromium (tests/browser.py), MLflow's Assistant closed.
Writes, into --out:
- mlflow-runs.png: the runs table the study's link opens on (grouped by the first factor);
- mlflow-charts.png: the chart view of the same view (test accuracy per group);
- report.png: the top of reports/study/index.html.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import browser
from conftest import PROJECT_ROOT

from stages.lib.core.config import load_params
from stages.lib.core.paths import Paths
from stages.lib.tracking import study_tracking, study_view, tracking

MLPSTUDY = Path(sys.executable).with_name("mlpstudy")
STORE_FILES = ("mlflow.db", "mlflow.db-wal")  # the sqlite store (its journal, if any)


def copy_project(root: Path, target: Path) -> Paths:
    """params.yaml and the sqlite store of `root`, copied into `target` (read only at `root`)."""
    target.mkdir()
    for name in ("params.yaml", *STORE_FILES):
        if (root / name).is_file():
            shutil.copyfile(root / name, target / name)
    if not (target / "mlflow.db").is_file():
        raise SystemExit(f"{root / 'mlflow.db'}: no MLflow store; run `dvc repro` first")
    return Paths.at(target)


def write_views(paths: Paths) -> None:
    """The study's saved views, as `report` writes them, into the copied store."""
    params = load_params(paths.params)
    experiment = tracking.open_experiment(params.study.name, paths, create=False)
    parent = study_tracking.grid_parent(experiment, params)
    study_view.write_views(experiment, params, parent, None)


def shoot(page, target: Path) -> None:
    page.mouse.move(1, 1)  # no hover tooltip in the picture
    page.wait_for_timeout(1000)  # charts and fonts settle
    page.screenshot(path=str(target))
    print(f"wrote {target}")


def take(link: str, report: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = browser.launch(playwright)
        page = browser.new_page(chromium, width=1600, height=900)
        page.goto(link)
        page.get_by_text("Group: ", exact=False).first.wait_for()
        shoot(page, out / "mlflow-runs.png")
        page.goto(link.replace("/runs?", "/runs?compareRunsMode=CHART&", 1))
        page.get_by_placeholder("Search metric charts").fill("test/accuracy")
        page.locator(".js-plotly-plot").first.wait_for()  # drawn, not its spinner
        shoot(page, out / "mlflow-charts.png")
        if report.is_file():
            page = browser.new_page(chromium, width=1100, height=900)
            page.goto(report.as_uri())
            shoot(page, out / "report.png")
        chromium.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT, help="the study's project")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "images")
    args = parser.parse_args(argv)
    root, out = args.root.resolve(), args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the copy's sqlite store, never another
    os.environ.pop("DVC_EXP_NAME", None)  # the workspace's views
    with tempfile.TemporaryDirectory(prefix="mlpstudy-screenshots-") as temporary:
        paths = copy_project(root, Path(temporary) / "project")
        write_views(paths)
        log = Path(temporary) / "ui.log"
        server, link = browser.start_ui(MLPSTUDY, paths.root, dict(os.environ), log)
        try:
            take(link, root / "reports" / "study" / "index.html", out)
        finally:
            server.kill()


if __name__ == "__main__":
    main()
