"""`mlpstudy predict` on files the tests write: PNGs of test digits, IDX files, and bad input."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import processes
import pytest
import yaml
from conftest import PROJECT_ROOT
from PIL import Image
from project import shrink, shrunk_cell
from synthetic import idx_bytes, make_digits
from typer.testing import CliRunner

from stages.cli import app
from stages.lib.core.config import Params
from stages.lib.core.paths import Paths
from stages.lib.evaluation.classifier import EXPORT_FILE, export_classifier

CELL = shrunk_cell("relu", "he_normal", "adam", 0)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    """(paths, test images, test labels): a project with one exported classifier that knows
    the synthetic digits, trained here with the product's model for a few epochs."""
    from stages.lib.training.model import build_model, compile_model

    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    shrink(raw)
    train = Params.model_validate(raw).train
    paths = Paths.at(tmp_path_factory.mktemp("predict"))
    images, labels = make_digits(1000, seed=11)
    model = build_model(CELL, train)
    compile_model(model, CELL, train, steps_per_epoch=20)
    model.fit(images, labels, epochs=6, batch_size=50, verbose=0)
    test_images, test_labels = make_digits(50, seed=12)
    accuracy = np.mean(model.predict(test_images, verbose=0).argmax(axis=1) == test_labels)
    assert accuracy >= 0.95, "the fixture model must know the digits for the tests to mean much"
    export_classifier(model, paths.export_dir(CELL.key) / EXPORT_FILE)
    model.save(paths.root / "logits.keras")  # like train's model.keras: logits, not probabilities
    return paths, test_images, test_labels


def invoke(paths: Paths, *arguments: str):
    return CliRunner().invoke(app, ["predict", *arguments, "--root", str(paths.root)])


def table_rows(output: str) -> list[list[str]]:
    lines = output.strip().splitlines()
    assert lines[0].split() == ["file", "index", "digit", "probability"]
    return [line.split() for line in lines[1:]]


def save_png(path: Path, image: np.ndarray) -> Path:
    Image.fromarray(image, mode="L").save(path)
    return path


@pytest.mark.slow
def test_a_png_of_a_test_digit_is_classified_as_its_digit(project, tmp_path):
    paths, images, labels = project
    first = save_png(tmp_path / "first.png", images[0])
    second = save_png(tmp_path / "second.png", images[1])
    result = invoke(paths, str(first), str(second), "--cell", CELL.key)
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert [row[0] for row in rows] == [str(first), str(second)]
    assert [row[1] for row in rows] == ["-", "-"]
    assert [int(row[2]) for row in rows] == [int(labels[0]), int(labels[1])]
    assert all(0.5 < float(row[3]) <= 1.0 for row in rows)


@pytest.mark.slow
def test_invert_reads_black_digits_on_white(project, tmp_path):
    paths, images, labels = project
    scan = save_png(tmp_path / "scan.png", 255 - images[2])
    result = invoke(paths, str(scan), "--cell", CELL.key, "--invert")
    assert result.exit_code == 0, result.output
    assert int(table_rows(result.stdout)[0][2]) == labels[2]


@pytest.mark.slow
def test_idx_files_plain_and_gzipped_list_every_image_with_its_index(project, tmp_path):
    paths, images, labels = project
    plain = tmp_path / "digits-idx3-ubyte"
    plain.write_bytes(idx_bytes(images[:6]))
    packed = tmp_path / "digits-idx3-ubyte.gz"
    packed.write_bytes(gzip.compress(idx_bytes(images[6:9])))
    model = paths.export_dir(CELL.key) / EXPORT_FILE
    result = invoke(paths, str(plain), str(packed), "--model", str(model))
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert [(row[0], row[1]) for row in rows] == [(str(plain), str(i)) for i in range(6)] + [
        (str(packed), str(i)) for i in range(3)
    ]
    assert [int(row[2]) for row in rows] == [int(label) for label in labels[:9]]


@pytest.mark.slow
def test_a_model_with_logits_outputs_still_prints_probabilities(project, tmp_path):
    paths, images, labels = project
    digit = save_png(tmp_path / "digit.png", images[3])
    result = invoke(paths, str(digit), "--model", str(paths.root / "logits.keras"))
    assert result.exit_code == 0, result.output
    row = table_rows(result.stdout)[0]
    assert int(row[2]) == labels[3] and 0.0 <= float(row[3]) <= 1.0


@pytest.fixture
def listed(tmp_path: Path) -> tuple[Paths, np.ndarray]:
    """(paths, images): a project whose one exported "model" is never loaded, because every
    test using it fails on an argument or a file first (so they need no training)."""
    paths = Paths.at(tmp_path / "listed")
    exported = paths.export_dir(CELL.key) / EXPORT_FILE
    exported.parent.mkdir(parents=True)
    exported.write_text("never loaded")
    return paths, make_digits(3, seed=12)[0]


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert "\n" not in message, message
    assert message.startswith("error: ")
    for fragment in fragments:
        assert fragment in message, message


def test_bad_files_are_refused_in_one_line(listed, tmp_path):
    paths, _ = listed
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    assert_one_line_error(
        invoke(paths, str(text), "--cell", CELL.key), f"{text}: not an image file", "PNG or JPEG"
    )
    big = save_png(tmp_path / "big.png", np.zeros((32, 32), dtype=np.uint8))
    assert_one_line_error(
        invoke(paths, str(big), "--cell", CELL.key), f"{big}: the PNG image is 32x32", "28x28"
    )
    labels_file = tmp_path / "labels-idx1-ubyte"
    labels_file.write_bytes(idx_bytes(np.arange(10, dtype=np.uint8)))
    assert_one_line_error(
        invoke(paths, str(labels_file), "--cell", CELL.key), f"{labels_file}: ", "IDX image files"
    )
    wide = tmp_path / "wide-idx3-ubyte"
    wide.write_bytes(idx_bytes(np.zeros((2, 28, 30), dtype=np.uint8)))
    assert_one_line_error(invoke(paths, str(wide), "--cell", CELL.key), "28x30", "28x28")
    missing = tmp_path / "missing.png"
    assert_one_line_error(invoke(paths, str(missing), "--cell", CELL.key), "no such file")


def test_bad_models_and_cells_are_refused_in_one_line(listed, tmp_path):
    paths, images = listed
    digit = str(save_png(tmp_path / "digit.png", images[0]))
    not_a_model = tmp_path / "model.keras"
    not_a_model.write_text("{}")
    assert_one_line_error(
        invoke(paths, digit, "--model", str(not_a_model)), f"{not_a_model}: not a Keras model"
    )
    assert_one_line_error(invoke(paths, digit, "--model", digit), f"{digit}: not a Keras model")
    assert_one_line_error(
        invoke(paths, digit, "--cell", "relu-he_normal-adam-9"),
        "'relu-he_normal-adam-9' has no exported model",
        f"cells with one: {CELL.key}",
    )
    model = str(paths.export_dir(CELL.key) / EXPORT_FILE)
    assert_one_line_error(invoke(paths, digit, "--cell", CELL.key, "--model", model), "not both")
    assert_one_line_error(invoke(paths, digit), "give --cell CELL or --model FILE", CELL.key)


def test_bad_input_is_refused_before_tensorflow_is_imported(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    fake = tmp_path / "model.keras"
    fake.write_text("not a model")
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from stages.lib.evaluation import predict\n"
        "from stages.lib.core.config import ConfigError\n"
        "from stages.lib.core.paths import Paths\n"
        "for model in (Path(sys.argv[2]), None):\n"
        "    try:\n"
        "        predict.run([Path(sys.argv[1])], Paths.at(sys.argv[3]), cell=None, model=model)\n"
        "    except ConfigError as error:\n"
        "        print(error)\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    result = processes.run(
        [sys.executable, "-c", script, text, fake, tmp_path], check=True, timeout=120
    )
    lines = result.stdout.strip().splitlines()
    assert "not a Keras model" in lines[0] and "give --cell CELL" in lines[1]
    assert lines[-1] == "False False"
