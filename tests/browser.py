"""MLflow's UI in a real browser, for tests/test_mlflow_ui.py and tests/screenshots.py:
`mlpstudy ui` (a real `mlflow server`) on a free port of 127.0.0.1, and Debian's Chromium
(`apt-get install chromium`; .ci/run installs it) driven by Playwright, never a downloaded one.
"""

from __future__ import annotations

import os
import re
import time
import urllib.request
from pathlib import Path

import processes
from conftest import free_port

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
WAIT_MS = 30_000
# On a local server MLflow 3.17 opens its Assistant panel (a third of the page) on the first
# visit, unless the browser's localStorage says it did: keys `<name>_v<version>`, JSON values.
ASSISTANT_CLOSED = """
window.localStorage.setItem("mlflow.assistant.fab.autoOpenedOnFirstLoad_v1", "true");
window.localStorage.setItem("mlflow.assistant.panelOpen_v1", "false");
"""
NAME_COLUMN = "attributes.`Run Name`"
# The runs table's cells by row (ag-grid splits a row into pinned and scrolled parts): column key
# (e.g. metrics.`test/accuracy`) -> text, rows in their shown order.
TABLE_ROWS = """() => {
  const rows = {};
  for (const cell of document.querySelectorAll('.ag-row [col-id]')) {
    const index = Number(cell.closest('.ag-row').getAttribute('row-index'));
    (rows[index] ??= {})[cell.getAttribute('col-id')] = cell.innerText.trim();
  }
  return Object.keys(rows).sort((a, b) => a - b).map(index => rows[index]);
}"""


def launch(playwright):
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000
    )


def new_page(browser, width: int = 1440, height: int = 1000):
    """A page of `browser` on which MLflow's Assistant stays closed."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.add_init_script(ASSISTANT_CLOSED)
    page.set_default_timeout(WAIT_MS)
    return page


def start_ui(
    mlpstudy: Path, project: Path, env: dict[str, str], log: Path
) -> tuple[processes.Child, str]:
    """`mlpstudy ui` on a free port; returns it and the link it printed, once the server answers."""
    port = free_port()
    command = [mlpstudy, "ui", "--port", str(port), "--root", project]
    child = processes.spawn(command, log=log, env=env)
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
            raise AssertionError(child.describe("the UI did not start"))
        time.sleep(0.5)
