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
    "time_to_target.png",
    "per_digit.png",
    "activations.png",
    "gradient_norms.png",
    "dead_saturated.png",
}
OUTCOME_METRICS = (  # logged on each cell's run by the report
    "epochs_to_target",
    "seconds_to_target",
    "reached_target",
    "failed_to_train",
    "best_val_loss",
    "generalization_gap",
)
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
    """The statistics: findings at the top, most important first; the tables and CSV behind them."""
    every = pd.read_csv(folder / "comparisons.csv")
    comparisons = every[every["outcome"] == "test_accuracy"]
    # Activation: 3 pairs, each over 2 optimizers x 2 seeds; optimizer: 3 activations x 2 seeds.
    # The shared initializer is not compared.
    assert comparisons["factor"].tolist() == ["activation"] * 3 + ["optimizer"]
    assert comparisons["pairs"].tolist() == [4, 4, 4, 6]
    relu_sigmoid = comparisons[
        (comparisons["better"] == "relu") & (comparisons["worse"] == "sigmoid")
    ]
    assert relu_sigmoid["effect"].item() == pytest.approx(17.0)  # 0.97 - 0.80, in points
    # Every activation pair goes the same way 4 times of 4: too few pairs for a rank test to
    # decide (never "no difference"); the optimizer's 6 of 6 are enough.
    assert set(comparisons["verdict"]) == {"too few", "differs"}
    assert comparisons[comparisons["factor"] == "optimizer"]["verdict"].item() == "differs"
    markdown = (folder / "summary.md").read_text()
    top = markdown[: markdown.index("## The grid")]
    assert "no difference" not in top.lower() and "no level differs" not in top.lower()
    assert (
        "- **Test accuracy, activation:** relu is ahead of sigmoid in every decided pair "
        "(4 of 4, by 17.00 to 17.00; 17.00 points" in top  # the largest gap first
    )
    assert "seeds would decide it" in top
    assert (
        "- **Shared by every cell** (not compared): initializer he_normal, architecture base, "
        "batch size 256, dropout 0.0." in top
    )
    assert "- **Test accuracy, optimizer:** adam beats sgd by 1.00 points" in top
    assert "- **Not shown worse than the best** (`relu / adam`): none;" in top
    assert top.index("**Failure to train") < top.index("**Test accuracy")
    assert "## Differences between levels" in markdown
    page = (folder / "index.html").read_text()
    assert "<strong>Test accuracy, optimizer:</strong> adam beats sgd by 1.00 points" in page
    assert '<a href="figures/main_effects.png">main effects</a>' in page  # links, not raw Markdown
    assert "](figures/" not in page
    assert summary["effects"]["test_accuracy"]["optimizer"]["differs"] is True
    assert summary["effects"]["test_accuracy"]["activation"]["pair"] == "relu_vs_sigmoid"
    assert summary["tied_with_best"] == 0
    combinations = pd.read_csv(folder / "combinations.csv")
    assert combinations["tied_with_best"].tolist() == [True] + [False] * 5


def write_history(paths: Paths, cell: Cell, val_accuracy: list[float]) -> None:
    """Replace the cell's history: these validation accuracies, training 0.5 points above."""
    epochs = np.arange(1, len(val_accuracy) + 1)
    history = {"epoch": epochs, "loss": 0.1, "accuracy": np.add(val_accuracy, 0.005)}
    history |= {"val_loss": 0.2, "val_accuracy": val_accuracy, "epoch_seconds": 1.5}
    pd.DataFrame(history).to_csv(paths.train_reports(cell.key) / "history.csv", index=False)


def log_cell_runs(paths: Paths, params: Params) -> dict[str, str]:
    """A run per cell in the study's store, recorded in run.json as train does; {key: run id}."""
    from stages.lib.tracking import runs, tracking

    experiment = tracking.open_experiment(params.study.name, paths)
    ids = {}
    for cell in grid(params.train):
        tags = {"kind": runs.CELL_KIND, "study": params.study.name, "cell": cell.key}
        ids[cell.key] = runs.create_run(experiment, cell.key, {}, tags)
        paths.run_record(cell.key).parent.mkdir(parents=True, exist_ok=True)
        paths.run_record(cell.key).write_text(json.dumps({"run_id": ids[cell.key]}))
    return ids


def test_outcomes_beside_accuracy_reach_cells_combinations_and_each_cell_run(
    project: Paths,
) -> None:
    """relu reaches 97% validation accuracy at epoch 2 in every seed; sigmoid in seed 0 only (at
    epoch 4), and fails to train in seed 2 (best validation accuracy 11%, chance + 1 point)."""
    params = make_params(activation=["relu", "sigmoid"], optimizer=["adam"], seed=[0, 1, 2])
    cells = grid(params.train)
    for cell in cells:
        write_cell(project, cell)
        if cell.activation == "relu":
            write_history(project, cell, [0.95, 0.971, 0.975, 0.98])
        else:
            write_history(project, cell, [0.90, 0.93, 0.95, 0.97 if cell.seed == 0 else 0.96])
    failed = next(c for c in cells if c.activation == "sigmoid" and c.seed == 2)
    metrics_file = project.train_reports(failed.key) / "metrics.json"
    metrics_file.write_text(
        json.dumps({**json.loads(metrics_file.read_text()), "best_val_accuracy": 0.11})
    )
    ids = log_cell_runs(project, params)
    report.run(params, project)

    table = pd.read_csv(project.study_report / "cells.csv").set_index("key")
    relu = table[table["activation"] == "relu"]
    assert relu["epochs_to_target"].tolist() == [2.0] * 3
    assert relu["seconds_to_target"].tolist() == [3.0] * 3  # two epochs of 1.5 s
    assert relu["reached_target"].all() and not relu["failed_to_train"].any()
    assert relu["generalization_gap"].tolist() == pytest.approx([0.5] * 3)  # at best epoch 4
    assert relu["grad_ratio_init"].tolist() == pytest.approx([2.0] * 3)  # 0.5 / (0.5 / 2)
    assert relu["dead_fraction_end"].tolist() == pytest.approx([0.05] * 3)
    sigmoid = table[table["activation"] == "sigmoid"]
    assert sigmoid["reached_target"].tolist() == [True, False, False]
    assert sigmoid["epochs_to_target"].iloc[0] == 4.0
    assert sigmoid["epochs_to_target"].iloc[1:].isna().all()  # censored: no invented number
    assert sigmoid["epochs_observed"].tolist() == [EPOCHS] * 3
    assert sigmoid["failed_to_train"].tolist() == [False, False, True]
    assert sigmoid["saturated_fraction_end"].tolist() == pytest.approx([0.1] * 3)

    combinations = pd.read_csv(project.study_report / "combinations.csv")
    combinations = combinations.set_index("activation")
    assert combinations.loc["relu", "reached"] == 3
    assert combinations.loc["relu", "epochs_to_target_median"] == 2.0
    assert combinations.loc["relu", "epochs_to_target_mean"] == 2.0
    assert combinations.loc["relu", "generalization_gap_mean"] == pytest.approx(0.5)
    assert combinations.loc["relu", "best_val_loss_mean"] == pytest.approx(1.1 / EPOCHS)
    assert combinations.loc["sigmoid", "reached"] == 1
    assert math.isnan(combinations.loc["sigmoid", "epochs_to_target_median"])  # 1 of 3 reached
    assert math.isnan(combinations.loc["sigmoid", "epochs_to_target_mean"])
    assert combinations.loc["sigmoid", "failed"] == 1
    assert combinations.loc["sigmoid", "failure_rate"] == pytest.approx(1 / 3)
    assert combinations.loc["sigmoid", "failure_rate_ci_high"] < 1.0
    assert combinations.loc["relu", "failure_rate_ci_high"] == pytest.approx(1 - 0.025 ** (1 / 3))

    client = MlflowClient(f"sqlite:///{project.mlflow_db}")
    relu_run = client.get_run(ids[cells[0].key]).data.metrics
    assert {key: relu_run[key] for key in OUTCOME_METRICS} == pytest.approx(
        {
            "epochs_to_target": 2.0,
            "seconds_to_target": 3.0,
            "reached_target": 1.0,
            "failed_to_train": 0.0,
            "best_val_loss": 1.1 / EPOCHS,
            "generalization_gap": 0.5,
        }
    )
    censored = client.get_run(ids[failed.key]).data.metrics
    assert censored["reached_target"] == 0.0 and censored["failed_to_train"] == 1.0
    assert "epochs_to_target" not in censored and "seconds_to_target" not in censored

    # Again: nothing changed, no new point. A higher target: relu's times become NaN (not stale).
    report.run(params, project)
    assert len(client.get_metric_history(ids[cells[0].key], "epochs_to_target")) == 1
    assert len(client.get_metric_history(ids[failed.key], "reached_target")) == 1
    higher = params.model_copy(update={"report": report_params(params, target_val_accuracy=0.99)})
    report.run(higher, project)
    history = client.get_metric_history(ids[cells[0].key], "epochs_to_target")
    assert [point.step for point in history] == [0, 1] and math.isnan(history[-1].value)
    reached = client.get_metric_history(ids[cells[0].key], "reached_target")
    assert [(point.step, point.value) for point in reached] == [(0, 1.0), (1, 0.0)]
    assert "epochs_to_target" not in client.get_run(ids[failed.key]).data.metrics
    assert pd.read_csv(project.study_report / "cells.csv")["epochs_to_target"].isna().all()


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
    assert "**Not shown worse than the best** (`relu / adam`): cannot be tested" in markdown
    # One seed: the optimizer is still compared over the 3 activations (3 of 3 pairs: too few).
    assert "- **Test accuracy, optimizer:** adam is ahead of sgd in every decided pair" in markdown
    names = {path.name for path in (project.study_report / "figures").iterdir()}
    assert names == FIGURES - {"gradient_norms.png", "dead_saturated.png"}
    cells = pd.read_csv(project.study_report / "cells.csv")
    assert cells[["grad_ratio_init", "grad_ratio_end", "dead_fraction_end"]].isna().all().all()
    assert cells["reached_target"].notna().all()  # the other outcomes need no diagnostics
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
    with pytest.raises(ConfigError, match=rf"{missing.key}.*\(or `dvc repro {stage}`\)"):
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
    one_at_a_time = params.train.model_copy(update={"parallel_cells": 1})  # in this process
    outcome = train.run(params.model_copy(update={"train": one_at_a_time}), project)
    assert sorted(outcome["trained"]) == sorted(cell.key for cell in grid(params.train))
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
    client = MlflowClient(f"sqlite:///{project.mlflow_db}")
    for _, row in cells.iterrows():
        run_id = json.loads(project.run_record(row["key"]).read_text())["run_id"]
        logged = client.get_run(run_id).data.metrics
        assert logged["reached_target"] == float(row["reached_target"])
        assert logged["generalization_gap"] == pytest.approx(row["generalization_gap"])
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
    assert "(or `dvc repro train`) before the report" in result.output
