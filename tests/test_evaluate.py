"""The evaluate stage on a real tiny model: train one cell for an epoch, then evaluate it.

Every number is checked against an independent computation from predictions.csv or from the
model itself; MLflow is a real sqlite store under the test's temp folder.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import PROJECT_ROOT
from mlflow.tracking import MlflowClient
from PIL import Image
from project import shrink, shrunk_cell
from synthetic import make_digits
from training import train_one
from typer.testing import CliRunner

from stages import evaluate
from stages.cli import app
from stages.lib.core.config import ConfigError, Params
from stages.lib.core.errors import StageError
from stages.lib.core.paths import Paths
from stages.lib.data.prepared import load_split, write_splits
from stages.lib.evaluation import confusion_figure, evaluation_figures, evaluation_record
from stages.lib.evaluation import metrics as metrics_module
from stages.lib.evaluation.classifier import EXPORT_FILE, export_classifier, predict_logits
from stages.lib.tracking import changed_metrics

CELL = shrunk_cell("relu", "glorot_uniform", "adam", 0)  # the one cell of shrink()
SHOWN = 9
TEST_COUNT = 200


def tiny_params() -> Params:
    """The real params.yaml, shrunk to one cell that trains for one epoch on tiny data."""
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    shrink(raw)
    raw["evaluate"].update(batch_size=64, misclassified_shown=SHOWN)
    return Params.model_validate(raw)


def write_project(root: Path, params: Params) -> Paths:
    paths = Paths.at(root)
    paths.params.parent.mkdir(parents=True, exist_ok=True)
    paths.params.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    write_splits(
        paths,
        {
            "train": make_digits(500, seed=1),
            "validation": make_digits(100, seed=2),
            "test": make_digits(TEST_COUNT, seed=3),
        },
    )
    return paths


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory):
    """(paths, params, returned metrics) after training one cell and evaluating it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("DVC_ROOT", raising=False)
        params = tiny_params()
        paths = write_project(tmp_path_factory.mktemp("evaluate"), params)
        train_one(params, CELL, paths)
        result = evaluate.run(params, paths, [CELL])[CELL.key]
        yield paths, params, result


def run_id(paths: Paths) -> str:
    return json.loads(paths.run_record(CELL.key).read_text())["run_id"]


def modified(paths: Paths, key: str = CELL.key) -> dict[str, int]:
    """When each file that evaluate wrote for the cell was last written (ns), by its path."""
    files = evaluation_record.cell_outputs(paths, key)
    return {str(file.relative_to(paths.root)): file.stat().st_mtime_ns for file in files}


def client(paths: Paths) -> MlflowClient:
    return MlflowClient(f"sqlite:///{paths.mlflow_db}")


def read_predictions(paths: Paths) -> tuple[np.ndarray, np.ndarray]:
    with paths.evaluate_predictions(CELL.key).open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["actual", "predicted"]
    return (
        np.array([int(row["actual"]) for row in rows]),
        np.array([int(row["predicted"]) for row in rows]),
    )


@pytest.mark.slow
def test_reports_parse_and_agree_with_an_independent_computation(evaluated):
    paths, _, result = evaluated
    tables = paths.evaluate_tables(CELL.key)
    actual, predicted = read_predictions(paths)
    _, test_labels = load_split(paths, "test")
    np.testing.assert_array_equal(actual, test_labels)  # one row per test image, in order

    metrics = json.loads(paths.evaluate_metrics(CELL.key).read_text())
    assert metrics == result
    assert metrics["test_images"] == TEST_COUNT
    assert metrics["test_accuracy"] == pytest.approx(np.mean(actual == predicted), abs=1e-6)
    assert metrics["test_errors"] == np.count_nonzero(actual != predicted)
    assert 0 < metrics["test_errors"] < TEST_COUNT  # one epoch: some right, some wrong

    counts = np.bincount(actual * 10 + predicted, minlength=100).reshape(10, 10)
    with (tables / "confusion.csv").open() as handle:
        table = list(csv.reader(handle))
    assert table[0][1:] == [str(digit) for digit in range(10)]
    assert [row[0] for row in table[1:]] == [str(digit) for digit in range(10)]
    np.testing.assert_array_equal(np.array([row[1:] for row in table[1:]], dtype=int), counts)

    with (tables / "per_digit.csv").open() as handle:
        per_digit = list(csv.DictReader(handle))
    assert list(per_digit[0]) == ["digit", "support", "recall", "precision", "f1"]
    for digit, row in enumerate(per_digit):
        support, found, chosen = counts[digit].sum(), counts[digit, digit], counts[:, digit].sum()
        recall = found / support
        precision = found / chosen if chosen else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert int(row["digit"]) == digit and int(row["support"]) == support
        assert float(row["recall"]) == pytest.approx(recall, abs=1e-6)
        assert float(row["precision"]) == pytest.approx(precision, abs=1e-6)
        assert float(row["f1"]) == pytest.approx(f1, abs=1e-6)
        assert metrics["recall"][str(digit)] == pytest.approx(recall, abs=1e-6)
    f1_values = [float(row["f1"]) for row in per_digit]
    assert metrics["test_f1_macro"] == pytest.approx(np.mean(f1_values), abs=1e-5)

    off_diagonal = counts - np.diag(np.diag(counts))
    top = metrics["most_confused"][0]
    assert top["count"] == off_diagonal.max()
    assert off_diagonal[top["true"], top["predicted"]] == top["count"]
    assert top["share"] == pytest.approx(top["count"] / counts[top["true"]].sum(), abs=1e-6)


@pytest.mark.slow
def test_loss_and_predictions_agree_with_keras_on_the_trained_model(evaluated):
    import keras

    paths, _, result = evaluated
    images, labels = load_split(paths, "test")
    model = keras.models.load_model(paths.model_file(CELL.key))
    logits = model.predict(images, verbose=0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    assert result["test_loss"] == pytest.approx(float(loss), rel=1e-4)
    _, predicted = read_predictions(paths)
    np.testing.assert_array_equal(predicted, logits.argmax(axis=1))


@pytest.mark.slow
def test_figures_are_valid_pngs_of_sensible_size(evaluated):
    paths, _, _ = evaluated
    for name in ("confusion.png", "misclassified.png"):
        file = paths.evaluate_figures(CELL.key) / name
        with Image.open(file) as image:
            image.verify()
        with Image.open(file) as image:
            assert image.format == "PNG"
            width, height = image.size
            assert 300 <= width <= 2000 and 250 <= height <= 2000, (name, image.size)
            assert len(np.unique(np.asarray(image.convert("L")))) > 10  # drawn, not blank


@pytest.mark.slow
def test_exported_classifier_takes_uint8_batches_of_any_size_and_returns_probabilities(evaluated):
    import keras

    paths, _, _ = evaluated
    classifier = keras.models.load_model(paths.export_dir(CELL.key) / EXPORT_FILE)
    images, _ = load_split(paths, "test")
    _, predicted = read_predictions(paths)
    for size in (1, 7):
        probabilities = np.asarray(classifier(images[:size]))
        assert probabilities.shape == (size, 10)
        assert (probabilities >= 0).all()
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(probabilities.argmax(axis=1), predicted[:size])


@pytest.mark.slow
def test_metrics_and_artifacts_are_in_the_cells_own_run(evaluated):
    paths, _, result = evaluated
    store = client(paths)
    run = store.get_run(run_id(paths))
    values = run.data.metrics
    assert values["test/accuracy"] == pytest.approx(result["test_accuracy"], abs=1e-6)
    assert values["test/loss"] == pytest.approx(result["test_loss"], abs=1e-6)
    assert values["test/f1_macro"] == pytest.approx(result["test_f1_macro"], abs=1e-6)
    for digit in range(10):
        assert values[f"test/recall/digit_{digit}"] == pytest.approx(
            result["recall"][str(digit)], abs=1e-6
        )
        assert f"test/precision/digit_{digit}" in values and f"test/f1/digit_{digit}" in values
    artifacts = {artifact.path for artifact in store.list_artifacts(run.info.run_id, "evaluation")}
    expected = {"metrics.json", "per_digit.csv", "confusion.csv", "predictions.csv"}
    expected |= {"confusion.png", "misclassified.png"}
    assert artifacts == {f"evaluation/{name}" for name in expected}


@pytest.mark.slow
def test_evaluating_a_cell_again_adds_no_run_and_no_metric_point(evaluated, monkeypatch):
    paths, params, result = evaluated
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    store = client(paths)
    experiment = store.get_run(run_id(paths)).info.experiment_id
    runs_before = len(store.search_runs([experiment]))  # the cell's run and its grid's parent
    stamps = modified(paths)
    paths.evaluate_record(CELL.key).unlink()  # no record: the cell is evaluated again
    assert evaluate.run(params, paths, [CELL])[CELL.key] == result
    assert modified(paths).keys() == stamps.keys() and modified(paths) != stamps  # rewritten
    assert len(store.search_runs([experiment])) == runs_before
    assert len(store.search_runs([experiment], "tags.kind = 'cell'")) == 1
    logged = [key for key in store.get_run(run_id(paths)).data.metrics if key.startswith("test/")]
    assert len(logged) == 3 + 3 * 10  # loss, accuracy, f1_macro; recall, precision, f1 per digit
    for key in logged:
        history = store.get_metric_history(run_id(paths), key)
        assert [point.step for point in history] == [0], key


@pytest.mark.slow
def test_only_a_changed_value_is_logged_as_a_new_point_at_the_next_step(evaluated):
    paths, _, _ = evaluated
    store, identifier = client(paths), run_id(paths)
    first = {"probe/changes": 0.25, "probe/stays": 1.0, "probe/nan": float("nan")}
    assert changed_metrics.log_changed_metrics(store, identifier, first).keys() == first.keys()
    second = {**first, "probe/changes": 0.5}
    assert changed_metrics.log_changed_metrics(store, identifier, second) == {"probe/changes": 0.5}
    history = store.get_metric_history(identifier, "probe/changes")
    assert sorted((point.step, point.value) for point in history) == [(0, 0.25), (1, 0.5)]
    assert len(store.get_metric_history(identifier, "probe/stays")) == 1
    assert len(store.get_metric_history(identifier, "probe/nan")) == 1  # NaN equals NaN here


@pytest.mark.slow
def test_a_run_missing_from_the_store_is_a_clear_error(evaluated, tmp_path, monkeypatch):
    paths, params, _ = evaluated
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    other = write_project(tmp_path, params)  # a fresh project: its store does not know the run
    shutil.copytree(paths.model_dir(CELL.key), other.model_dir(CELL.key))
    with pytest.raises(StageError, match=r"has no experiment .*train the grid into this store"):
        evaluate.run(params, other, [CELL])
    assert not other.evaluate_reports.exists()
    store = MlflowClient(f"sqlite:///{other.mlflow_db}")
    assert [e.name for e in store.search_experiments()] == ["Default"]  # evaluate created none

    store.create_experiment(params.study.name)  # the experiment, but without the cell's run
    with pytest.raises(
        StageError,
        match=rf"is not in experiment .*delete data/models/{CELL.key}/ and run `dvc repro`",
    ):
        evaluate.run(params, other, [CELL])
    assert not other.evaluate_reports.exists()


def test_missing_train_outputs_stop_before_any_work(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = tiny_params()
    paths = write_project(tmp_path, params)
    hint = rf"delete data/models/{CELL.key}/ \(if any\) and run `dvc repro train`"
    with pytest.raises(
        ConfigError, match=rf"data/models/{CELL.key}/model.keras: no such file; {hint}"
    ):
        evaluate.run(params, paths, [CELL])[CELL.key]
    model_dir = paths.model_dir(CELL.key)
    model_dir.mkdir(parents=True)
    (model_dir / "model.keras").write_text("not a model")
    with pytest.raises(ConfigError, match=rf"model.keras: not a Keras model .*{hint}"):
        evaluate.run(params, paths, [CELL])[CELL.key]
    shutil.copy(_any_keras_file(tmp_path), model_dir / "model.keras")
    with pytest.raises(ConfigError, match=rf"run.json: missing; {hint}"):
        evaluate.run(params, paths, [CELL])[CELL.key]
    (model_dir / "run.json").write_text('{"cell": "x"}')
    with pytest.raises(ConfigError, match=rf"run.json: has no `run_id` .*{hint}"):
        evaluate.run(params, paths, [CELL])[CELL.key]
    assert not paths.mlflow_db.exists()  # nothing reached MLflow


def _any_keras_file(folder: Path) -> Path:
    """A file with the entries of a `.keras` archive (the check before TensorFlow loads)."""
    import zipfile

    file = folder / "fake.keras"
    with zipfile.ZipFile(file, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("metadata.json", "{}")
    return file


def test_cli_reports_a_missing_model_in_one_line_with_exit_code_2(tmp_path):
    write_project(tmp_path, tiny_params())  # its grid is the one cell CELL
    arguments = ["evaluate", "--root", str(tmp_path)]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert "\n" not in message
    remedy = f"delete data/models/{CELL.key}/ (if any) and run `dvc repro train`"
    assert message.endswith(remedy) and "model.keras" in message


@pytest.mark.slow
def test_exporting_again_later_writes_the_same_bytes(evaluated, tmp_path):
    import time

    import keras

    paths, _, _ = evaluated
    first = (paths.export_dir(CELL.key) / EXPORT_FILE).read_bytes()
    model = keras.models.load_model(paths.model_file(CELL.key), compile=False)
    time.sleep(2.1)  # past the 2-second resolution of zip dates and Keras's `date_saved`
    export_classifier(model, tmp_path / EXPORT_FILE)
    assert (tmp_path / EXPORT_FILE).read_bytes() == first
    assert not [path.name for path in tmp_path.iterdir() if path.name != EXPORT_FILE]  # no temp


@pytest.mark.slow
def test_evaluating_outside_the_dvc_experiment_that_trained_a_cell_clears_its_tag(
    evaluated, monkeypatch
):
    """DVC restores a cell from its run cache in another experiment or the workspace: the run's
    `dvc_exp` tag follows where the cell was used last, never an experiment it has left."""
    paths, params, _ = evaluated
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    store, identifier = client(paths), run_id(paths)
    store.set_tag(identifier, "dvc_exp", "exp-that-trained-it")
    monkeypatch.setenv("DVC_EXP_NAME", "exp-later")
    evaluate.run(params, paths, [CELL])
    assert store.get_run(identifier).data.tags["dvc_exp"] == "exp-later"
    monkeypatch.delenv("DVC_EXP_NAME")
    evaluate.run(params, paths, [CELL])
    assert "dvc_exp" not in store.get_run(identifier).data.tags


# --------------------------------------------------------------- incremental: what is evaluated
def evaluate_again(paths: Paths, params: Params, capsys: pytest.CaptureFixture) -> str:
    """Run evaluate on the one-cell grid; return its last line (how many cells it evaluated)."""
    capsys.readouterr()
    evaluate.run(params, paths, [CELL])
    return capsys.readouterr().out.strip().splitlines()[-1]


@pytest.fixture
def store_env(monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.slow
def test_an_up_to_date_cell_is_skipped_and_its_files_are_untouched(evaluated, store_env, capsys):
    paths, params, result = evaluated
    stamps = modified(paths)
    record = json.loads(paths.evaluate_record(CELL.key).read_text())
    assert record["run_id"] == run_id(paths)
    assert (
        record["config_digest"]
        == json.loads(paths.run_record(CELL.key).read_text())["config_digest"]
    )

    assert evaluate_again(paths, params, capsys) == "evaluate: 0 cells evaluated, 1 up to date"
    assert modified(paths) == stamps
    assert evaluate.run(params, paths, [CELL])[CELL.key] == result  # read from metrics.json


@pytest.mark.slow
@pytest.mark.parametrize("field", ["config_digest", "run_id"])
def test_a_cell_trained_again_is_evaluated_again(evaluated, store_env, capsys, field):
    """A new run id or config digest in run.json is another trained result: the cell's files
    are rewritten and its record names the new one (a new run's metrics land in that run)."""
    paths, params, result = evaluated
    record_file = paths.run_record(CELL.key)
    original = record_file.read_text()
    trained = json.loads(original)
    if field == "run_id":
        store = client(paths)
        experiment = store.get_run(trained["run_id"]).info.experiment_id
        trained["run_id"] = store.create_run(experiment, tags={"kind": "test"}).info.run_id
    else:
        trained["config_digest"] = "0" * 64
    stamps = modified(paths)
    try:
        record_file.write_text(json.dumps(trained))
        line = evaluate_again(paths, params, capsys)
        changed = modified(paths)
        record = json.loads(paths.evaluate_record(CELL.key).read_text())
        if field == "run_id":
            logged = client(paths).get_run(trained["run_id"]).data.metrics
            assert logged["test/accuracy"] == pytest.approx(result["test_accuracy"], abs=1e-6)
    finally:
        record_file.write_text(original)
        evaluate.run(params, paths, [CELL])  # back to the module's trained result
    assert line == "evaluate: 1 cell evaluated, 0 up to date"
    assert changed.keys() == stamps.keys()
    assert all(changed[name] != stamps[name] for name in stamps), "every file written again"
    assert record[field] == trained[field]


@pytest.mark.slow
def test_a_missing_file_or_other_evaluate_params_evaluate_the_cell_again(
    evaluated, store_env, capsys
):
    paths, params, _ = evaluated
    figure = paths.evaluate_figures(CELL.key) / "misclassified.png"
    figure.unlink()
    assert evaluate_again(paths, params, capsys) == "evaluate: 1 cell evaluated, 0 up to date"
    assert figure.is_file()

    fewer = params.model_copy(
        update={"evaluate": params.evaluate.model_copy(update={"misclassified_shown": 4})}
    )
    drawn = figure.read_bytes()
    try:
        assert evaluate_again(paths, fewer, capsys) == "evaluate: 1 cell evaluated, 0 up to date"
        assert figure.read_bytes() != drawn  # 4 digits shown instead of 9
    finally:
        evaluate.run(params, paths, [CELL])
    assert figure.read_bytes() == drawn


@pytest.mark.slow
def test_files_of_cells_no_longer_in_the_grid_are_removed(evaluated, store_env, capsys):
    """Evaluate's outputs always equal the grid: a cell that left it (here: its files copied
    under another key) and a stray file in an output folder both go; the cell's own stay."""
    paths, params, _ = evaluated
    gone = shrunk_cell("tanh", "glorot_uniform", "adam", 0).key
    for source, target in zip(
        paths.evaluate_cell_outputs(CELL.key), paths.evaluate_cell_outputs(gone), strict=True
    ):
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    stray = paths.evaluate_metrics_dir / ".left-by-a-killed-run.tmp"
    stray.write_text("{}")
    stamps = modified(paths)

    line = evaluate_again(paths, params, capsys)

    assert line == (
        "evaluate: 0 cells evaluated, 1 up to date; removed the files of 1 cell no longer in "
        "the grid"
    )
    assert not [path for path in paths.evaluate_cell_outputs(gone) if path.exists()]
    assert not stray.exists()
    assert modified(paths) == stamps


# ------------------------------------------------------------------ per-cell cost, same outputs
def test_predict_logits_are_what_model_predict_returns_to_the_bit():
    """tanh after a Dense layer is one fused op in the traced function that `predict` runs and
    two eager ops when the model is called: those differ in the last bits, these must not."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28), dtype="uint8")
    hidden = keras.layers.Dense(32, activation="tanh")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Dense(32, "sigmoid")(hidden)))
    images, _ = make_digits(300, seed=4)  # 300 = 4 batches of 64 and one of 44

    logits = predict_logits(model, images, 64)

    expected = model.predict(images, batch_size=64, verbose=0)
    assert logits.shape == (300, 10) and logits.dtype == expected.dtype
    np.testing.assert_array_equal(logits, expected)


def test_figures_drawn_again_for_another_cell_have_the_pixels_of_figures_built_for_it(tmp_path):
    """Both figures are built once per process and redrawn per cell; what a cell gets must not
    depend on the cells drawn before it (the constrained layout would start from their layout)."""
    images, labels = make_digits(2000, seed=5)
    cells = []
    for seed, key in ((6, "relu-he_normal-sgd-base-256-0.0-0"), (7, "x")):
        logits = np.random.default_rng(seed).normal(size=(len(labels), 10))
        logits[np.arange(len(labels)), labels] += 1.5 + seed / 10
        cells.append((key, logits, metrics_module.summarize(logits, labels)))

    def draw(key: str, logits: np.ndarray, summary: dict, folder: Path) -> dict[str, bytes]:
        files = {name: folder / name for name in ("confusion.png", "misclassified.png")}
        evaluation_figures.draw_cell(images, labels, logits, summary, SHOWN, key, files)
        return {name: file.read_bytes() for name, file in files.items()}

    for key, logits, summary in cells:  # the second cell's figures are the first's, redrawn
        redrawn = draw(key, logits, summary, tmp_path)
    confusion_figure._confusion_figure.cache_clear()
    evaluation_figures._mistakes_figure.cache_clear()
    built = draw(*cells[-1], tmp_path)  # built for that cell alone

    assert redrawn == built
