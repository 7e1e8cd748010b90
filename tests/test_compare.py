"""`mlpstudy compare` against real MLflow stores: a sqlite file and a real `mlflow server`.

The stores are filled through the product's own tracking code (the params, tags and metric names
that train and evaluate log), so a change in what train logs shows up here.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import free_port
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from stages.cli import app
from stages.lib.core.cell_config import effective_config, flat_params
from stages.lib.core.config import AXES, Params, load_params
from stages.lib.core.grid import Cell, grid
from stages.lib.core.paths import Paths
from stages.lib.reporting import compare, compare_view
from stages.lib.reporting.report_run import REPORT_KIND, RUN_NAME
from stages.lib.tracking import runs, tracking, tracking_log
from stages.lib.tracking.changed_metrics import log_changed_metrics

ROOT = Path(__file__).resolve().parents[1]
STUDY = "compare-test-study"


def small_params() -> Params:
    real = load_params(ROOT / "params.yaml")
    changes = {"activation": ["relu", "tanh"], "initializer": ["he_normal"]}
    changes |= {"optimizer": ["adam", "sgd"], "seed": [0, 1]}
    return Params.model_validate(
        {
            **real.model_dump(),
            "study": {"name": STUDY},
            "train": {**real.train.model_dump(), **changes},
        }
    )


def accuracy_of(cell: Cell) -> float:
    return (
        {"relu": 0.97, "tanh": 0.95}[cell.activation]
        + 0.01 * (cell.optimizer == "adam")
        + (0.002 * cell.seed)
    )


def log_cell(experiment: tracking.Experiment, params: Params, cell: Cell, accuracy: float) -> str:
    """One cell's run as train creates it and evaluate completes it."""
    tags = {"kind": runs.CELL_KIND, "study": params.study.name, "cell": cell.key}
    run_id = runs.create_run(
        experiment, cell.key, flat_params(effective_config(params, cell)), tags
    )
    client = experiment.client
    summary = {"best_val_accuracy": accuracy - 0.001, "best_epoch": 3, "epochs_run": 4}
    tracking_log.log_summary(client, run_id, {**summary, "train_seconds": 10.0 + cell.seed})
    log_changed_metrics(
        client, run_id, {"test/accuracy": accuracy, "test/loss": 1 - accuracy, "test/f1_macro": 0.9}
    )
    client.set_terminated(run_id)
    return run_id


def fill_store(paths: Paths) -> dict[str, str]:
    """8 cell runs, a newer re-run of one cell, a report run, another study; returns run ids."""
    params = small_params()
    experiment = tracking.open_experiment(params.study.name, paths)
    ids = {
        cell.key: log_cell(experiment, params, cell, accuracy_of(cell))
        for cell in grid(params.train)
    }
    time.sleep(0.01)  # the re-run starts strictly later
    rerun = grid(params.train)[0]
    ids["rerun"] = log_cell(experiment, params, rerun, 0.5)
    client = experiment.client
    report = client.create_run(
        experiment.experiment_id, run_name=RUN_NAME, tags={"kind": REPORT_KIND}
    )
    ids["report"] = report.info.run_id
    client.create_experiment("another-study")
    return ids


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Paths, dict[str, str]]:
    """A project with a params.yaml naming the study and its store at the default mlflow.db."""
    paths = Paths.at(tmp_path_factory.mktemp("project"))
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("DVC_ROOT", raising=False)
        ids = fill_store(paths)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["study"]["name"] = STUDY
    paths.params.write_text(yaml.safe_dump(raw, sort_keys=False))
    return paths, ids


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["compare", *args])
    return result.exit_code, result.output


def test_one_row_per_cell_run_without_the_report_run(project) -> None:
    paths, ids = project
    table = compare.load_runs(f"sqlite:///{paths.mlflow_db}", STUDY)
    assert len(table) == 9
    assert set(table["run_id"]) == set(ids.values()) - {ids["report"]}
    assert table.columns[:8].tolist() == ["cell", *AXES]
    row = table[table["run_id"] == ids["tanh-he_normal-sgd-base-256-0.0-1"]].iloc[0]
    assert (row["activation"], row["optimizer"], row["seed"]) == ("tanh", "sgd", 1)
    assert row["test/accuracy"] == pytest.approx(0.952)
    assert row["best_val_accuracy"] == pytest.approx(0.951)
    assert row["train_seconds"] == pytest.approx(11.0)
    sgd_rate = str(small_params().train.optimizers["sgd"].settings["learning_rate"])
    assert row["optimizer.learning_rate"] == sgd_rate  # every param is a column (CSV, --where)
    assert table.iloc[0]["run_id"] == ids["rerun"]  # newest first
    empty = compare.load_runs(f"sqlite:///{paths.mlflow_db}", "another-study")
    assert empty.empty and "test/accuracy" in empty.columns


def test_filters_sort_and_latest(project) -> None:
    paths, ids = project
    table = compare.load_runs(f"sqlite:///{paths.mlflow_db}", STUDY)
    relu = compare_view.select(table, ["activation=relu"])
    assert set(relu["activation"]) == {"relu"} and len(relu) == 5
    both = compare_view.select(table, ["activation=relu", "optimizer=sgd", "seed=1"])
    assert both["cell"].tolist() == ["relu-he_normal-sgd-base-256-0.0-1"]
    either = compare_view.select(table, ["optimizer=sgd", "optimizer=adam", "activation=tanh"])
    assert len(either) == 4
    ranked = compare_view.select(table)
    assert ranked["test/accuracy"].is_monotonic_decreasing
    assert ranked.iloc[0]["cell"] == "relu-he_normal-adam-base-256-0.0-1"
    assert ranked.iloc[-1]["run_id"] == ids["rerun"]
    ascending = compare_view.select(table, sort="train_seconds", ascending=True)
    assert ascending["train_seconds"].is_monotonic_increasing
    latest = compare_view.select(table, latest=True)
    assert len(latest) == 8 and ids["rerun"] in set(latest["run_id"])
    assert ids["relu-he_normal-adam-base-256-0.0-0"] not in set(latest["run_id"])


def test_cli_defaults_to_params_and_the_root_store_and_writes_csv(
    project, no_env, tmp_path
) -> None:
    paths, _ = project
    out = tmp_path / "runs.csv"
    code, output = invoke(
        "--root", str(paths.root), "--where", "activation=tanh", "--csv", str(out)
    )
    assert code == 0, output
    assert f"{STUDY}: 4 of 9 cell runs" in output
    assert "tanh-he_normal-adam-base-256-0.0-1" in output and "relu-he_normal" not in output
    assert "0.9620" in output  # tanh / adam / seed 1, shown to 4 decimals
    written = pd.read_csv(out)
    assert len(written) == 4 and set(written["activation"]) == {"tanh"}
    assert written["test/accuracy"].tolist() == pytest.approx([0.962, 0.96, 0.952, 0.95])
    assert "optimizer.learning_rate" in written.columns


def test_where_filters_and_shows_any_axis_of_the_grid(no_env, tmp_path) -> None:
    params = small_params()
    axes = {"architecture": ["base", "wide"], "batch_size": [64, 256], "dropout": [0.0, 0.25]}
    train = params.train.model_copy(update={"activation": ["relu"], "optimizer": ["adam"], **axes})
    params = params.model_copy(update={"train": train})
    paths = Paths.at(tmp_path)
    experiment = tracking.open_experiment(STUDY, paths)
    for cell in grid(params.train):
        log_cell(experiment, params, cell, accuracy_of(cell))
    uri = f"sqlite:///{paths.mlflow_db}"
    table = compare.load_runs(uri, STUDY)

    wide = compare_view.select(table, ["architecture=wide", "batch_size=64", "dropout=0.25"])

    assert wide["cell"].tolist() == [
        "relu-he_normal-adam-wide-64-0.25-1",
        "relu-he_normal-adam-wide-64-0.25-0",
    ]
    assert wide["hidden_units"].tolist() == ["[512]", "[512]"]
    code, output = invoke("--study", STUDY, "--tracking-uri", uri, "--where", "architecture=wide")
    assert code == 0, output
    assert f"{STUDY}: 8 of 16 cell runs" in output and "relu-he_normal-adam-base" not in output


def test_cli_works_without_params_yaml(project, no_env, tmp_path) -> None:
    paths, _ = project
    uri = f"sqlite:///{paths.mlflow_db}"
    code, output = invoke("--root", str(tmp_path), "--study", STUDY, "--tracking-uri", uri)
    assert code == 0, output
    assert f"{STUDY}: 9 cell runs" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--where", "colour=red"], "--where: no column 'colour'; columns: cell, activation"),
        (["--sort", "speed"], "--sort: no column 'speed'; columns: cell, activation"),
        (["--where", "activation"], "--where: 'activation' is not COLUMN=VALUE"),
        (["--study", "nope"], "no experiment 'nope' in sqlite:///.*another-study, compare-test"),
    ],
)
def test_cli_bad_input_exits_2_with_what_is_allowed(project, no_env, args, message) -> None:
    paths, _ = project
    code, output = invoke("--root", str(paths.root), *args)
    assert code == 2
    assert re.search(message, output.replace("\n", "")), output


def test_cli_missing_store_or_study_name_exits_2(no_env, tmp_path) -> None:
    code, output = invoke("--root", str(tmp_path), "--study", STUDY)
    assert code == 2 and "no MLflow store at" in output
    assert not (tmp_path / "mlflow.db").exists()  # compare never creates a store
    code, output = invoke("--root", str(tmp_path))
    assert code == 2 and "--study: not given, and there is no params.yaml" in output


# ------------------------------------------------------------------------- a real MLflow server
@pytest.mark.slow
def test_compare_against_a_real_mlflow_server(mlflow_server, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    ids = fill_store(Paths.at(tmp_path))  # logged over HTTP, as train does with a team server
    assert not (tmp_path / "mlflow.db").exists()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    out = tmp_path / "server.csv"
    code, output = invoke(
        "--root", str(tmp_path), "--study", STUDY, "--tracking-uri", mlflow_server,
        "--where", "optimizer=adam", "--latest", "--csv", str(out),
    )  # fmt: skip
    assert code == 0, output
    written = pd.read_csv(out)
    assert len(written) == 4 and set(written["optimizer"]) == {"adam"}
    assert ids["report"] not in set(written["run_id"])
    assert written["test/accuracy"].is_monotonic_decreasing
    assert MlflowClient(mlflow_server).get_experiment_by_name(STUDY) is not None


def test_unreachable_server_exits_1(no_env, tmp_path) -> None:
    port = free_port()  # nothing listens there
    code, output = invoke("--study", STUDY, "--tracking-uri", f"http://127.0.0.1:{port}")
    assert code == 1 and "is not reachable" in output
