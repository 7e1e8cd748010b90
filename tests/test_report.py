"""The report stage on per-cell files written from the train/evaluate file formats.

The cell files are written here (train and evaluate take minutes for a grid); their formats are
the ones stages/lib/reporting/cell_results.py reads. MLflow is a real sqlite store under tmp_path.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from PIL import Image

from stages import report
from stages.lib.core.config import ConfigError, Params, ReportParams, load_params
from stages.lib.core.grid import Cell, grid
from stages.lib.core.paths import Paths

ROOT = Path(__file__).resolve().parents[1]
BASE = {"relu": 0.97, "tanh": 0.95, "sigmoid": 0.80}
EPOCHS = 4
FIGURES = {
    "main_effects.png",
    "interactions_activation_x_initializer_by_optimizer.png",
    "learning_curves.png",
    "per_digit.png",
    "activations.png",
    "gradient_norms.png",
    "dead_saturated.png",
}
T_975_1 = 12.706205  # Student t quantile for a 95% interval with 2 seeds (1 degree of freedom)


def make_params(**train: object) -> Params:
    """The real params.yaml with a small grid (and other `train` changes)."""
    real = load_params(ROOT / "params.yaml")
    grid_values = {
        "activation": ["relu", "tanh", "sigmoid"],
        "initializer": ["he_normal"],
        "optimizer": ["adam", "sgd"],
        "seed": [0, 1],
        "epochs": EPOCHS,
    }
    return Params.model_validate(
        {**real.model_dump(), "train": {**real.train.model_dump(), **grid_values, **train}}
    )


def report_params(params: Params, **changes: object) -> ReportParams:
    """`params.report` with `changes`, validated."""
    return ReportParams.model_validate({**params.report.model_dump(), **changes})


def accuracy_of(cell: Cell) -> float:
    return BASE[cell.activation] + (0.01 if cell.optimizer == "adam" else 0.0) + 0.004 * cell.seed


def write_cell(paths: Paths, cell: Cell, hidden_layers: int = 2) -> None:
    """The cell's reports/train/ and reports/evaluate/ files as train and evaluate write them."""
    accuracy = accuracy_of(cell)
    train, tables = paths.train_reports(cell.key), paths.evaluate_tables(cell.key)
    train.mkdir(parents=True, exist_ok=True)
    tables.mkdir(parents=True, exist_ok=True)
    paths.evaluate_metrics(cell.key).parent.mkdir(parents=True, exist_ok=True)
    epochs = np.arange(1, EPOCHS + 1)
    val_accuracy = accuracy - 0.02 * (EPOCHS - epochs) / EPOCHS
    pd.DataFrame(
        {
            "epoch": epochs,
            "loss": 1.0 / epochs,
            "accuracy": val_accuracy + 0.005,
            "val_loss": 1.1 / epochs,
            "val_accuracy": val_accuracy,
            "epoch_seconds": 1.5,
        }
    ).to_csv(train / "history.csv", index=False)
    metrics = {
        "best_val_accuracy": float(val_accuracy[-1]),
        "best_val_loss": 1.1 / EPOCHS,
        "best_epoch": EPOCHS,
        "epochs_run": EPOCHS,
        "stopped_early": False,
        "parameter_count": 109386,
        "train_seconds": 1.5 * EPOCHS + cell.seed,
        "device": "cpu",
    }
    (train / "metrics.json").write_text(json.dumps(metrics))
    relu_family = cell.activation == "relu"
    rows = [
        {
            "epoch": epoch,
            "layer": f"hidden_{layer}",
            "grad_norm": 0.5 / (layer * (epoch + 1)),
            "grad_to_weight": 0.01,
            "preact_mean": 0.0,
            "preact_std": 1.0,
            "dead_fraction": 0.05 * epoch / EPOCHS if relu_family else math.nan,
            "saturated_fraction": math.nan if relu_family else 0.1 * epoch / EPOCHS,
            "kernel_norm": 10.0,
        }
        for epoch in range(EPOCHS + 1)
        for layer in range(1, hidden_layers + 1)
    ]
    pd.DataFrame(rows).to_csv(train / "diagnostics.csv", index=False)
    recall = [min(1.0, accuracy + 0.002 * (digit - 5)) for digit in range(10)]
    paths.evaluate_metrics(cell.key).write_text(
        json.dumps(
            {
                "test_loss": 1.0 - accuracy,
                "test_accuracy": accuracy,
                "test_f1_macro": accuracy - 0.001,
                "test_images": 10000,
                "test_errors": round(10000 * (1 - accuracy)),
                "recall": {str(digit): value for digit, value in enumerate(recall)},
                "most_confused": [],
            }
        )
    )
    pd.DataFrame(
        {"digit": range(10), "support": 1000, "recall": recall, "precision": recall, "f1": recall}
    ).to_csv(tables / "per_digit.csv", index=False)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Paths:
    """A project folder whose default MLflow store is tmp_path/project/mlflow.db."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    paths = Paths.at(tmp_path / "project")
    paths.root.mkdir()
    return paths


def report_runs(paths: Paths, study: str, view: int = ViewType.ACTIVE_ONLY) -> list:
    client = MlflowClient(f"sqlite:///{paths.mlflow_db}")
    experiment = client.get_experiment_by_name(study)
    return client.search_runs(
        [experiment.experiment_id], "tags.kind = 'report'", run_view_type=view
    )


def test_report_of_a_grid_then_of_a_smaller_one(project: Paths) -> None:
    params = make_params()
    for cell in grid(params.train):
        write_cell(project, cell)
    first = report.run(params, project)
    folder = project.study_report

    # Exactly the grid's cells, in grid order; the aggregates agree with a direct computation.
    cells = pd.read_csv(folder / "cells.csv")
    assert cells["key"].tolist() == [cell.key for cell in grid(params.train)]
    assert cells["test_accuracy"].tolist() == pytest.approx(
        [accuracy_of(cell) for cell in grid(params.train)]
    )
    assert cells["digit_3"].tolist() == pytest.approx(
        [accuracy_of(cell) - 0.004 for cell in grid(params.train)]
    )
    combinations = pd.read_csv(folder / "combinations.csv")
    direct = cells.groupby(["activation", "initializer", "optimizer"])["test_accuracy"].agg(
        ["mean", "std", "count"]
    )
    assert len(combinations) == len(direct) == 6
    for _, row in combinations.iterrows():
        expected = direct.loc[(row["activation"], row["initializer"], row["optimizer"])]
        half = T_975_1 * expected["std"] / math.sqrt(2)
        assert row["n"] == expected["count"] == 2
        assert row["test_accuracy_mean"] == pytest.approx(expected["mean"])
        assert row["test_accuracy_std"] == pytest.approx(expected["std"])
        assert row["test_accuracy_ci_low"] == pytest.approx(expected["mean"] - half, abs=1e-6)
        assert row["test_accuracy_ci_high"] == pytest.approx(expected["mean"] + half, abs=1e-6)
    assert combinations["test_accuracy_mean"].is_monotonic_decreasing
    assert combinations["rank"].tolist() == list(range(1, 7))

    summary = json.loads((folder / "summary.json").read_text())
    assert summary["cells"] == 12 and summary["combinations"] == 6
    assert (summary["best"]["activation"], summary["best"]["optimizer"]) == ("relu", "adam")
    assert (summary["worst"]["activation"], summary["worst"]["optimizer"]) == ("sigmoid", "sgd")
    assert summary["best"]["test_accuracy_mean"] == pytest.approx(direct["mean"].max())
    assert first["best"] == summary["best"]

    check_figures(folder)
    check_documents(folder)
    check_findings(folder, summary)
    runs = report_runs(project, params.study.name)
    assert len(runs) == 1
    assert runs[0].info.run_id == first["mlflow_run_id"]
    assert runs[0].info.run_name == "study-report" and runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["best_mean_test_accuracy"] == pytest.approx(direct["mean"].max())
    client = MlflowClient(f"sqlite:///{project.mlflow_db}")
    artifacts = {item.path for item in client.list_artifacts(first["mlflow_run_id"])}
    assert {
        "cells.csv",
        "combinations.csv",
        "comparisons.csv",
        "summary.json",
        "summary.md",
        "index.html",
    } <= artifacts
    figure_artifacts = client.list_artifacts(first["mlflow_run_id"], "figures")
    assert {Path(item.path).name for item in figure_artifacts} == FIGURES

    # sigmoid leaves the grid; its files stay behind and must not appear anywhere.
    smaller = make_params(activation=["relu", "tanh"])
    second = report.run(smaller, project)
    cells = pd.read_csv(folder / "cells.csv")
    assert cells["key"].tolist() == [cell.key for cell in grid(smaller.train)]
    assert len(cells) == 8 and "sigmoid" not in set(
        pd.read_csv(folder / "combinations.csv")["activation"]
    )
    markdown = (folder / "summary.md").read_text()
    assert "- activation: relu, tanh\n" in markdown
    assert "| sigmoid |" not in markdown and "sigmoid /" not in markdown
    assert second["cells"] == 8 and second["worst"]["activation"] == "tanh"
    # Re-running replaces the report run instead of adding one.
    runs = report_runs(project, params.study.name)
    assert [run.info.run_id for run in runs] == [second["mlflow_run_id"]]
    deleted = report_runs(project, params.study.name, ViewType.DELETED_ONLY)
    assert [run.info.run_id for run in deleted] == [first["mlflow_run_id"]]


def check_figures(folder: Path) -> None:
    figures = folder / "figures"
    assert {path.name for path in figures.iterdir()} == FIGURES
    for path in figures.iterdir():
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            width, height = image.size
            assert image.format == "PNG"
            assert 400 <= width <= 3000 and 250 <= height <= 3000, (path.name, image.size)
            colors = image.convert("L").getextrema()
            assert colors[1] - colors[0] > 100, f"{path.name} looks blank"


def check_documents(folder: Path) -> None:
    markdown = (folder / "summary.md").read_text()
    assert markdown.startswith("# Study report: ")
    for heading in ("## The grid", "## Best and worst", "## Combinations, best first", "## Cells"):
        assert heading in markdown
    links = re.findall(r"\]\((figures/[^)]+)\)", markdown)
    assert {Path(link).name for link in links} == FIGURES
    assert all((folder / link).is_file() for link in links)
    page = (folder / "index.html").read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(FIGURES)
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    for source in sources:
        data = base64.b64decode(source.removeprefix("data:image/png;base64,"))
        assert Image.open(io.BytesIO(data)).format == "PNG"
    assert "<link" not in page and "http" not in page
    assert page.count("<figcaption>") == len(FIGURES)
    assert "<table>" in page and "Best" in page


def check_findings(folder: Path, summary: dict) -> None:
    """The statistics: one sentence per factor at the top, the tables and CSV behind them."""
    comparisons = pd.read_csv(folder / "comparisons.csv")
    # Activation: 3 pairs, each over 2 optimizers x 2 seeds; optimizer: 3 activations x 2 seeds.
    # The shared initializer is not compared.
    assert comparisons["factor"].tolist() == ["activation"] * 3 + ["optimizer"]
    assert comparisons["pairs"].tolist() == [4, 4, 4, 6]
    relu_sigmoid = comparisons[
        (comparisons["better"] == "relu") & (comparisons["worse"] == "sigmoid")
    ]
    assert relu_sigmoid["difference"].item() == pytest.approx(17.0)  # 0.97 - 0.80, in points
    assert comparisons["differs"].all()  # every difference is the same in every pair
    markdown = (folder / "summary.md").read_text()
    top = markdown[: markdown.index("## The grid")]
    assert "- **Activation:** relu beats sigmoid by 17.00 points (95% CI 17.00 to 17.00" in top
    assert "; relu beats tanh by 2.00 points (95% CI 2.00 to 2.00, Holm p < 0.001, 4 matched" in top
    assert (
        "- **Shared by every cell** (not compared): initializer he_normal, architecture base, "
        "batch size 256, dropout 0.0." in top
    )
    assert "- **Optimizer:** adam beats sgd by 1.00 points" in top
    assert "- **Tied with the best** (`relu / adam`): none;" in top
    assert "## Differences between levels" in markdown
    page = (folder / "index.html").read_text()
    assert "<strong>Optimizer:</strong> adam beats sgd by 1.00 points" in page
    assert summary["comparisons"]["activation"]["relu_vs_sigmoid"]["differs"] is True
    assert summary["tied_with_best"] == 0
    combinations = pd.read_csv(folder / "combinations.csv")
    assert combinations["tied_with_best"].tolist() == [True] + [False] * 5


def test_interaction_views_are_chosen_in_params(project: Paths) -> None:
    params = make_params(initializer=["he_normal", "glorot_uniform"])
    views = [
        {"rows": "optimizer", "columns": "activation"},
        {"rows": "initializer", "columns": "optimizer", "panels": "activation"},
    ]
    params = params.model_copy(
        update={"report": report_params(params, confidence=0.9, interactions=views)}
    )
    for cell in grid(params.train):
        write_cell(project, cell)
    report.run(params, project)
    figures = project.study_report / "figures"
    drawn = {path.name for path in figures.glob("interactions*.png")}
    assert drawn == {
        "interactions_optimizer_x_activation.png",
        "interactions_initializer_x_optimizer_by_activation.png",
    }
    with Image.open(figures / "interactions_initializer_x_optimizer_by_activation.png") as image:
        one_panel = Image.open(figures / "interactions_optimizer_x_activation.png").size[0]
        assert image.size[0] > 2 * one_panel  # three panels, one per activation
    markdown = (project.study_report / "summary.md").read_text()
    assert "[Interactions: initializer x optimizer](figures/interactions_initializer_x_" in markdown
    assert "one panel per activation" in markdown
    assert markdown.count("](figures/interactions_") == 2
    assert (
        'id="interactions_optimizer_x_activation"'
        in (project.study_report / "index.html").read_text()
    )
    # No views: no interaction figure, and the earlier ones are removed.
    params = params.model_copy(
        update={"report": report_params(params, confidence=0.9, interactions=[])}
    )
    report.run(params, project)
    assert not list(figures.glob("interactions*.png"))


def test_one_seed_leaves_intervals_undefined_and_diagnostics_off_drops_their_figures(
    project: Paths,
) -> None:
    params = make_params(seed=[0])
    for cell in grid(params.train):
        write_cell(project, cell)
    report.run(params, project)
    assert (project.study_report / "figures" / "gradient_norms.png").is_file()

    off = make_params(seed=[0], diagnostics={"enabled": False, "probe_size": 256})
    for cell in grid(off.train):
        (project.train_reports(cell.key) / "diagnostics.csv").unlink()
    summary = report.run(off, project)
    combinations = pd.read_csv(project.study_report / "combinations.csv")
    assert combinations["n"].eq(1).all()
    assert combinations["test_accuracy_ci_low"].isna().all()
    assert combinations["test_accuracy_std"].isna().all()
    assert summary["best"]["test_accuracy_ci_low"] is None
    markdown = (project.study_report / "summary.md").read_text()
    assert "CI —" in markdown
    assert "**Tied with the best** (`relu / adam`): cannot be tested" in markdown
    assert "- **Optimizer:** adam beats sgd by 1.00 points" in markdown  # over 3 activations
    names = {path.name for path in (project.study_report / "figures").iterdir()}
    assert names == FIGURES - {"gradient_norms.png", "dead_saturated.png"}
    assert "gradient_norms" not in (project.study_report / "index.html").read_text()


@pytest.mark.parametrize(
    ("folder", "file", "stage"),
    [
        ("evaluate_tables", "per_digit.csv", "evaluate"),
        ("train_reports", "metrics.json", "train"),
        ("train_reports", "diagnostics.csv", "train"),
    ],
)
def test_a_cell_without_results_is_named_with_the_stage_to_run(
    project: Paths, folder: str, file: str, stage: str
) -> None:
    params = make_params()
    cells = grid(params.train)
    for cell in cells:
        write_cell(project, cell)
    missing = cells[3]
    (getattr(project, folder)(missing.key) / file).unlink()
    target = "evaluate" if stage == "evaluate" else f"train@{missing.key}"
    with pytest.raises(ConfigError, match=rf"{missing.key}.*dvc repro {target}`"):
        report.run(params, project)
    assert not project.study_report.exists()
    assert not project.mlflow_db.exists()


def test_a_malformed_cell_file_is_named(project: Paths) -> None:
    params = make_params(activation=["relu"])
    for cell in grid(params.train):
        write_cell(project, cell)
    broken = project.evaluate_metrics(grid(params.train)[0].key)
    broken.write_text('{"test_loss": 0.1}')
    with pytest.raises(ConfigError, match=rf"{broken.name}: missing key.*test_accuracy"):
        report.run(params, project)


@pytest.mark.slow
def test_report_and_compare_on_real_train_and_evaluate_runs(project: Paths, tmp_path: Path) -> None:
    """2 activations x 2 seeds really trained (2 epochs, tiny synthetic data) and evaluated."""
    from synthetic import write_mirror

    from stages import evaluate, preprocess, train
    from stages.lib.reporting import compare, compare_view

    params = make_params(
        activation=["relu", "tanh"],
        optimizer=["adam"],
        epochs=2,
        architectures={"base": [16]},
        batch_size=[64],
        steps_per_execution=1,
        diagnostics={"enabled": False, "probe_size": 32},
    )
    params = params.model_copy(
        update={"preprocess": params.preprocess.model_copy(update={"validation_size": 100})}
    )
    write_mirror(project.raw, n_train=600, n_test=200, gz=False)
    preprocess.run(params.preprocess, project)
    for cell in grid(params.train):
        train.run(params, cell, project)
    evaluate.run(params, project)
    summary = report.run(params, project)

    cells = pd.read_csv(project.study_report / "cells.csv")
    for _, row in cells.iterrows():
        evaluated = json.loads(project.evaluate_metrics(row["key"]).read_text())
        trained = json.loads((project.train_reports(row["key"]) / "metrics.json").read_text())
        assert row["test_accuracy"] == pytest.approx(evaluated["test_accuracy"])
        assert row["digit_7"] == pytest.approx(evaluated["recall"]["7"])
        assert row["best_epoch"] == trained["best_epoch"]
    assert summary["cells"] == 4
    assert len(report_runs(project, params.study.name)) == 1
    runs = compare.load_runs(f"sqlite:///{project.mlflow_db}", params.study.name)
    assert sorted(runs["cell"]) == sorted(cell.key for cell in grid(params.train))
    ranked = compare_view.select(runs)
    assert ranked.iloc[0]["test/accuracy"] == pytest.approx(cells["test_accuracy"].max())


def test_cli_report_without_results_exits_2_naming_the_cell(project: Paths) -> None:
    from typer.testing import CliRunner

    from stages.cli import app

    params = make_params(activation=["relu"])
    project.params.write_text(yaml.safe_dump(params.model_dump(), sort_keys=False))
    first = grid(params.train)[0]
    result = CliRunner().invoke(app, ["report", "--root", str(project.root)])
    assert result.exit_code == 2
    assert f"reports/train/{first.key}/metrics.json: missing" in result.output
    assert f"dvc repro train@{first.key}" in result.output
