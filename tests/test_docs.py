"""The README and docs/ cannot drift silently from the code or from the committed study.

- The results the README states (its block between `<!-- results` and `<!-- /results -->`) are
  those of the committed `reports/study/`: the best and worst combination and their accuracy, the
  cell count, every quoted finding, every other number (measured times in minutes excepted).
- Every `mlpstudy <command>` shown is a command of `stages.cli.app`, every `make <target>` a
  Makefile target, every repository path in backticks exists (in git, as a DVC output, or as a
  git-ignored runtime path), every link between markdown files resolves, anchors included.
- Examples of progress lines come from the committed study's per-cell histories.

Fast: reads files and imports the CLI (which imports no TensorFlow).
"""

from __future__ import annotations

import csv
import fnmatch
import math
import re
from functools import cache
from pathlib import Path

import processes
import pytest
import yaml
from conftest import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
DOCS = sorted((PROJECT_ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
STUDY = PROJECT_ROOT / "reports" / "study"
# Pages written elsewhere that the docs already link to. Each entry must still be missing: once
# the page lands, this test fails until the entry is removed.
GRID_AXES = ("activation", "initializer", "optimizer", "architecture", "batch_size", "dropout")


def name(page: Path) -> str:
    return page.relative_to(PROJECT_ROOT).as_posix()


def code_spans(text: str) -> list[str]:
    """Inline code spans and the lines of fenced code blocks."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    spans = re.findall(r"``(.+?)``|`([^`\n]+)`", prose)
    return [a or b for a, b in spans] + [line for block in fenced for line in block.splitlines()]


def results_block() -> str:
    found = re.search(r"<!-- results.*?-->(.*?)<!-- /results -->", README.read_text(), re.DOTALL)
    assert found, "README.md: no '<!-- results ... -->' ... '<!-- /results -->' block"
    return found.group(1)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------ results against the reports
def test_the_readme_states_the_committed_best_and_worst_combination() -> None:
    block = results_block()
    rows = sorted(read_csv(STUDY / "combinations.csv"), key=lambda row: int(row["rank"]))
    for word, row in (("Best", rows[0]), ("worst", rows[-1])):
        label, accuracy = row["combination"], 100 * float(row["test_accuracy_mean"])
        stated = f"**{word}** `{label}`: **{accuracy:.2f}%**"
        assert re.search(rf"\*\*{word}\*\* `{re.escape(label)}`: \*\*{accuracy:.2f}%\*\*", block), (
            f"README.md 'What you will see' should say {stated} (reports/study/combinations.csv)"
        )


def test_the_readme_states_the_committed_cell_count() -> None:
    cells = len(read_csv(STUDY / "cells.csv"))
    stated = re.findall(r"\*\*(\d+) cells\*\*", results_block())
    assert stated == [str(cells)], f"README.md: the report has {cells} cells, it says {stated}"


def test_every_quoted_finding_is_in_the_committed_summary() -> None:
    summary = (STUDY / "summary.md").read_text()
    quotes = [line[1:].strip() for line in results_block().splitlines() if line.startswith(">")]
    assert quotes, "README.md: no finding quoted from reports/study/summary.md"
    for quote in filter(None, quotes):
        assert quote in summary, f"README.md quotes a finding summary.md no longer says: {quote}"


def test_every_number_the_readme_states_as_a_result_is_in_the_committed_summary() -> None:
    summary_numbers = set(re.findall(r"\d+(?:\.\d+)?", (STUDY / "summary.md").read_text()))
    block = re.sub(r"\d+(?:\.\d+)? min\b", "", results_block())  # measured, not in the reports
    block = re.sub(r"<!--.*?-->", "", block, flags=re.DOTALL)
    for number in re.findall(r"\d+(?:\.\d+)?", block):
        assert number in summary_numbers, (
            f"README.md 'What you will see' states {number}, which reports/study/summary.md does "
            "not: update the README from the report"
        )


def test_the_default_grid_size_the_readme_states_is_params_yaml_s() -> None:
    train = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())["train"]
    size = math.prod(len(train[axis]) for axis in (*GRID_AXES, "seed"))
    stated = re.search(r"The default grid:.*?= (\d+) cells", README.read_text(), re.DOTALL)
    assert stated, "README.md: no 'The default grid: ... = <n> cells'"
    assert int(stated.group(1)) == size, f"README.md: params.yaml's grid has {size} cells"


def test_the_readme_states_no_test_count() -> None:
    """A count goes stale with every test added; CI's output says it."""
    assert not re.search(r"\d+ (tests )?passed", README.read_text())


def test_progress_line_examples_come_from_the_committed_study() -> None:
    pattern = (
        r"train (?P<key>[\w.-]+) epoch (?P<epoch>\d+)/\d+: loss (?P<loss>[\d.]+)"
        r" val_accuracy (?P<val_accuracy>[\d.]+) val_loss (?P<val_loss>[\d.]+)"
    )
    examples = [(page, m) for page in PAGES for m in re.finditer(pattern, page.read_text())]
    assert examples, "no progress line example left to check: drop this test or the pattern"
    for page, example in examples:
        history = PROJECT_ROOT / "reports" / "train" / example["key"] / "history.csv"
        assert history.is_file(), f"{name(page)}: example of {example['key']}, no {history}"
        (row,) = [r for r in read_csv(history) if r["epoch"] == example["epoch"]]
        for column in ("loss", "val_accuracy", "val_loss"):
            assert f"{float(row[column]):.4f}" == example[column], (
                f"{name(page)}: the example's {column} at epoch {example['epoch']} of "
                f"{example['key']} is {float(row[column]):.4f} in {history.name}"
            )


# ------------------------------------------------------------ commands, targets, paths and links
def test_every_mlpstudy_command_shown_exists() -> None:
    import typer.main

    from stages.cli import app

    commands = set(typer.main.get_command(app).commands)
    for page in PAGES:
        for span in code_spans(page.read_text()):
            for command in re.findall(r"(?<![\w/.-])mlpstudy ([a-z][\w-]*)", span):
                assert command in commands, (
                    f"{name(page)}: `mlpstudy {command}` is not a command; "
                    f"there are: {', '.join(sorted(commands))}"
                )


def test_every_make_target_shown_exists() -> None:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.MULTILINE))
    for page in PAGES:
        for span in code_spans(page.read_text()):
            for target in re.findall(r"(?:^|&&|\|)\s*make ([a-z][\w-]*)", span.strip()):
                assert target in targets, f"{name(page)}: `make {target}` is not a Makefile target"


@cache
def tracked() -> tuple[str, ...]:
    command = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]
    listed = processes.run(command, cwd=PROJECT_ROOT, timeout=60, check=True)
    return tuple(listed.stdout.splitlines())


@cache
def dvc_outputs() -> tuple[str, ...]:
    """Every output, metric and plot path of dvc.yaml, with `${...}` as a wildcard."""
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    found = []
    for stage in stages.values():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key, []):
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                found.append(re.sub(r"\$\{[^}]*\}", "*", path).rstrip("/"))
    return tuple(found)


def git_ignored(path: str) -> bool:
    checked = processes.run(["git", "check-ignore", "-q", "--no-index", path], cwd=PROJECT_ROOT)
    return checked.returncode == 0


def path_exists(path: str) -> bool:
    """`path` as the docs write it (`<cell>` and `…` as wildcards, `{a,b}` as either) is a
    tracked file or folder, a DVC output (or inside one), or a git-ignored runtime path."""
    braces = re.search(r"\{([^{}]*,[^{}]*)\}", path)
    if braces:
        return all(
            path_exists(path[: braces.start()] + choice + path[braces.end() :])
            for choice in braces.group(1).split(",")
        )
    pattern = re.sub(r"<[^>]*>|\[[^]]*\]|…|\.\.\.|\*", "*", path).rstrip("/")
    files = tracked()
    if any(fnmatch.fnmatch(f, pattern) or fnmatch.fnmatch(f, pattern + "/*") for f in files):
        return True
    # Outputs DVC caches (not those kept in git, which must exist above), or folders holding them.
    in_git = [f for f in files if not f.endswith((".gitignore", ".dvc"))]
    cached = [
        out
        for out in dvc_outputs()
        if not any(fnmatch.fnmatch(f, out) or fnmatch.fnmatch(f, out + "/*") for f in in_git)
    ]
    if any(fnmatch.fnmatch(pattern, out) or fnmatch.fnmatch(pattern, out + "/*") for out in cached):
        return True
    if any(fnmatch.fnmatch(out, pattern + "/*") for out in cached):
        return True
    return git_ignored(re.sub(r"\*", "x", pattern) + ("/" if path.endswith("/") else ""))


def repository_paths(page: Path) -> list[str]:
    """Backticked spans that name a path of this repository: a span starting with a top-level
    file or folder of the repository (or a runtime one git ignores), or a `.py` file."""
    roots = {f.split("/")[0] for f in tracked()} | {".venv", ".mlpstudy", "mlflow.db"}
    roots |= {"mlartifacts", ".test-artifacts", "dvc_plots"}
    found = []
    for span in re.findall(r"`([^`\n]+)`", page.read_text()):
        span = span.strip()
        if " " in span or "://" in span or span.startswith(("/", "..", "$", "-")):
            continue
        head = span.split("/")[0]
        in_root = head in roots and (head != span or span.endswith("/") or "." in span)
        if in_root or span.endswith(".py"):
            found.append(span)
    return found


def resolves(path: str) -> bool:
    if path_exists(path):
        return True
    if path.endswith(".py"):  # a module named within stages/, stages/lib/ or by its file name
        return any(
            f == f"stages/{path}" or f == f"stages/lib/{path}" or f.endswith(f"/{path}")
            for f in tracked()
        )
    return False


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_every_repository_path_shown_exists(page: Path) -> None:
    missing = [path for path in repository_paths(page) if not resolves(path)]
    assert not missing, f"{name(page)} names paths that do not exist: {missing}"


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lowercase, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_every_link_between_pages_resolves(page: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        file, _, anchor = target.partition("#")
        linked = (page.parent / file).resolve() if file else page
        relative = linked.relative_to(PROJECT_ROOT).as_posix()
        assert linked.exists(), f"{name(page)} links to {target}, which does not exist"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{name(page)}: no heading #{anchor} in {relative}"


def test_every_docs_page_is_in_the_readme_table_and_says_what_it_is_for() -> None:
    readme = README.read_text()
    for page in DOCS:
        assert f"]({name(page)})" in readme, f"README.md's docs table does not list {name(page)}"
        lines = [line for line in page.read_text().splitlines() if line.strip()]
        assert lines[0].startswith("# "), f"{name(page)}: starts with its title"
        assert len(lines) > 1, f"{name(page)}: says what it is for after its title"
        assert not lines[1].startswith(("#", "|", "-", "`")), (
            f"{name(page)}: the line after the title says what the page is for"
        )


def test_the_readme_stays_a_runbook_of_at_most_about_200_lines() -> None:
    lines = README.read_text().count("\n")
    assert lines <= 220, f"README.md has {lines} lines: move reference text to docs/"
