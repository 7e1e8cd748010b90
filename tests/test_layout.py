"""dvc.yaml is the architecture: its paths, params and names agree with the code's definitions."""

from __future__ import annotations

from pathlib import Path

import yaml
from conftest import PROJECT_ROOT
from typer.main import get_command

from stages.cli import app
from stages.lib.core.cell_config import SHARED_SETTINGS
from stages.lib.core.code import PLUMBING, stage_modules
from stages.lib.core.config import SPEED_ONLY, Params
from stages.lib.core.paths import Paths

DVC = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())
PATHS = Paths(Path("/project"))
KEY = "${key}"


def relative(path: Path) -> str:
    return path.relative_to(PATHS.root).as_posix()


def declared(stage: dict, kind: str) -> set[str]:
    return {next(iter(e)) if isinstance(e, dict) else e for e in stage.get(kind, [])}


def test_each_stage_has_its_module_command_and_params_section():
    commands = set(get_command(app).commands)
    sections = set(Params.model_fields)
    for name, stage in DVC["stages"].items():
        assert (PROJECT_ROOT / "stages" / f"{name}.py").is_file(), name
        assert name in commands, name
        assert name in sections, name
        assert stage["cmd"].split()[:2] == ["mlpstudy", name]
        assert f"stages/{name}.py" in stage["deps"]


def test_every_declared_dependency_exists():
    for name, stage in DVC["stages"].items():
        for dep in stage.get("deps", []):
            if dep.startswith("stages/"):
                assert (PROJECT_ROOT / dep).is_file(), f"{name}: {dep}"


def test_outputs_match_the_paths_module():
    stages = DVC["stages"]
    assert declared(stages["download"], "outs") == {relative(PATHS.raw)}
    reports = relative(PATHS.preprocess_reports)
    assert declared(stages["preprocess"], "outs") == {
        relative(PATHS.prepared),
        f"{reports}/stats.json",
    }
    assert {p.rsplit("/", 1)[0] for p in declared(stages["preprocess"], "plots")} == {reports}
    train_outs = {relative(PATHS.models), relative(PATHS.train_reports_dir)}
    assert declared(stages["train"], "outs") == train_outs
    assert PATHS.model_dir(KEY).parent == PATHS.models
    assert PATHS.train_reports(KEY).parent == PATHS.train_reports_dir
    # The stage keeps the cells that are up to date: DVC must not delete its outputs first.
    assert all(next(iter(out.values()))["persist"] for out in stages["train"]["outs"])
    evaluate = stages["evaluate"]
    outs = {PATHS.export_dir(KEY).parent, PATHS.evaluate_tables(KEY).parent}
    outs |= {PATHS.evaluate_metrics(KEY).parent}
    assert declared(evaluate, "outs") == {relative(path) for path in outs}
    plots = {PATHS.evaluate_predictions(KEY).parent, PATHS.evaluate_figures(KEY).parent}
    assert declared(evaluate, "plots") == {relative(path) for path in plots}


def test_dvc_metrics_are_only_the_study_s_headline():
    # Per-cell numbers are plain outputs (in git): as DVC metrics they made `dvc exp show` and
    # `dvc metrics show` a column per cell and number (docs/comparing.md).
    metrics = {name: declared(stage, "metrics") for name, stage in DVC["stages"].items()}
    summary = relative(PATHS.study_report / "summary.json")
    assert {name: files for name, files in metrics.items() if files} == {"report": {summary}}
    assert "metrics" not in DVC  # no top-level metrics either


def test_the_train_stage_runs_on_the_whole_section_and_its_digest_covers_its_code():
    train = DVC["stages"]["train"]
    assert train["cmd"] == "mlpstudy train"
    # The whole params.yaml (the stage skips what is done), so a misspelt section gets the
    # project's message from the stage rather than DVC's "Parameters 'train' are missing".
    assert train["params"] == [{"params.yaml": None}]
    # DVC re-runs the stage when one of these files changes, and the same files' digest is in
    # every cell's configuration digest, so the stage then re-trains every cell.
    code = [dep for dep in train["deps"] if dep.startswith("stages/")]
    assert code == stage_modules("train")
    # Speed-only settings never enter a cell's configuration (re-running trains nothing).
    assert not set(SPEED_ONLY) & set(SHARED_SETTINGS)


def project_imports(module_file: Path, seen: set[Path] | None = None) -> set[Path]:
    """The project's own modules that `module_file` imports, transitively."""
    import ast

    seen = set() if seen is None else seen
    for node in ast.walk(ast.parse(module_file.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stages"):
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith("stages")]
        for name in names:
            path = PROJECT_ROOT / (name.replace(".", "/") + ".py")
            if path.is_file() and path not in seen:
                seen.add(path)
                project_imports(path, seen)
    return seen


def test_each_stage_depends_on_exactly_the_code_it_runs():
    """Less PLUMBING (stages/lib/core/code.py): modules that never change what a stage computes."""
    for name, stage in DVC["stages"].items():
        module = PROJECT_ROOT / "stages" / f"{name}.py"
        code = {module} | project_imports(module)
        expected = {p.relative_to(PROJECT_ROOT).as_posix() for p in code} - PLUMBING
        listed = {dep for dep in stage["deps"] if dep.startswith("stages/")}
        assert listed == expected, (
            f"{name}: dvc.yaml lists {sorted(listed)}, code {sorted(expected)}"
        )
        # What train and evaluate digest to tell whether their code changed since a cell's result.
        assert set(stage_modules(name)) == expected, name


# ------------------------------------------------------------------ folders and import directions
LIB = PROJECT_ROOT / "stages" / "lib"


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__")


def imported_modules(path: Path) -> set[str]:
    """The project modules `path` imports directly (anywhere in it, lazy imports included)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stages"):
            for alias in node.names:  # `from stages.lib.data import idx` imports a module
                candidate = f"{node.module}.{alias.name}"
                is_module = (PROJECT_ROOT / (candidate.replace(".", "/") + ".py")).is_file()
                found.add(candidate if is_module else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("stages")}
    return found


def allowed_imports() -> dict[str, set[str]]:
    """Each subpackage's "May import:" line, from its docstring (the rule is written once)."""
    import ast

    rules = {}
    for init in sorted(LIB.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        lines = [line for line in doc.splitlines() if line.startswith("May import:")]
        assert len(lines) == 1, f"{init}: its docstring needs one 'May import: ...' line"
        names = lines[0].removeprefix("May import:").strip().rstrip(".")
        rules[init.parent.name] = set() if names == "nothing" else set(names.split(", "))
    return rules


def test_shared_code_lives_in_documented_subpackages():
    assert not [p.name for p in LIB.glob("*.py") if p.name != "__init__.py"]
    rules = allowed_imports()
    assert set(rules) == {p.name for p in LIB.iterdir() if (p / "__init__.py").is_file()}
    assert {"core", "data", "tracking", "training", "evaluation", "reporting"} <= set(rules)
    for package, allowed in rules.items():
        assert allowed <= set(rules), f"{package} may import unknown {allowed - set(rules)}"


def test_imports_only_go_down():
    rules = allowed_imports()
    # The rules themselves form layers: no two subpackages may import each other, even indirectly.
    import graphlib

    list(graphlib.TopologicalSorter(rules).static_order())  # raises CycleError on a cycle
    wrong = []
    for path in sorted(LIB.rglob("*.py")):
        package = path.relative_to(LIB).parts[0]
        if package == "__init__.py":
            continue
        for target in imported_modules(path):
            parts = target.split(".")
            if parts[:2] != ["stages", "lib"] or len(parts) < 3:
                wrong.append(f"{module_name(path)} imports {target} (a stage or the CLI)")
            elif parts[2] != package and parts[2] not in rules[package]:
                wrong.append(
                    f"{module_name(path)} imports {target}: {package} may import "
                    f"{', '.join(sorted(rules[package])) or 'nothing'}"
                )
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_itself_back():
    import graphlib

    graph = {}
    for path in sorted((PROJECT_ROOT / "stages").rglob("*.py")):
        graph[module_name(path)] = {m for m in imported_modules(path) if m != module_name(path)}
    list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError naming the cycle
