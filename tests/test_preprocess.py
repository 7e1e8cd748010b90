"""The preprocess stage on tiny synthetic IDX files (and, where present, the real MNIST files)."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from synthetic import idx_bytes, make_digits, write_mirror
from typer.testing import CliRunner

from stages import preprocess
from stages.cli import app
from stages.lib.core.config import ConfigError, PreprocessParams, load_params
from stages.lib.core.paths import MNIST_FILES, Paths
from stages.lib.data.prepared import SPLITS, load_split, split_file

ROOT = Path(__file__).resolve().parents[1]
REAL_MNIST = ROOT.parent / "shared" / "mnist"
# Uneven classes, so proportional allocation is really tested: 70, 66, ..., 34 training images.
TRAIN_PER_CLASS = np.array([70 - 4 * digit for digit in range(10)])
VALIDATION_SIZE = 100


def params(**changes: int) -> PreprocessParams:
    """The real `preprocess` section of params.yaml with `changes`, validated like the product."""
    real = load_params(ROOT / "params.yaml").preprocess
    return PreprocessParams.model_validate({**real.model_dump(), **changes})


def write_raw(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Raw IDX files with uneven classes under `root`/data/raw; returns the training arrays."""
    images, labels = make_digits(700, seed=5)
    keep = np.zeros(len(labels), dtype=bool)
    for digit, count in enumerate(TRAIN_PER_CLASS):
        keep[np.flatnonzero(labels == digit)[:count]] = True
    train = (images[keep], labels[keep])
    test = make_digits(200, seed=6)
    raw = Paths.at(root).raw
    raw.mkdir(parents=True)
    for name, array in zip(MNIST_FILES, (*train, *test), strict=True):
        (raw / name).write_bytes(idx_bytes(array))
    return train


def load_all(paths: Paths) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {name: load_split(paths, name) for name in SPLITS}


def row_hashes(images: np.ndarray, labels: np.ndarray) -> list[str]:
    return sorted(
        hashlib.sha256(image.tobytes() + bytes([label])).hexdigest()
        for image, label in zip(images, labels, strict=True)
    )


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    """One run on the synthetic project: (paths, original training arrays, returned stats)."""
    root = tmp_path_factory.mktemp("project")
    train = write_raw(root)
    paths = Paths.at(root)
    stats = preprocess.run(params(validation_size=VALIDATION_SIZE), paths)
    return paths, train, stats


def test_outputs_load_as_uint8_with_exact_sizes(prepared) -> None:
    paths, _, _ = prepared
    splits = load_all(paths)
    assert sorted(p.name for p in paths.prepared.iterdir()) == [
        "test.npz",
        "train.npz",
        "validation.npz",
    ]
    expected = {
        "train": TRAIN_PER_CLASS.sum() - VALIDATION_SIZE,
        "validation": VALIDATION_SIZE,
        "test": 200,
    }
    for name, (images, labels) in splits.items():
        assert images.dtype == np.uint8 and labels.dtype == np.uint8
        assert images.shape == (expected[name], 28, 28) and labels.shape == (expected[name],)


def test_validation_is_stratified(prepared) -> None:
    paths, _, _ = prepared
    _, labels = load_split(paths, "validation")
    per_class = np.bincount(labels, minlength=10)
    proportional = VALIDATION_SIZE * TRAIN_PER_CLASS / TRAIN_PER_CLASS.sum()
    assert per_class.sum() == VALIDATION_SIZE
    assert np.all(np.abs(per_class - proportional) < 1), (per_class, proportional)


def test_train_and_validation_partition_the_training_set(prepared) -> None:
    paths, (images, labels), _ = prepared
    original = row_hashes(images, labels)
    assert len(set(original)) == len(original)  # rows are distinguishable
    train = row_hashes(*load_split(paths, "train"))
    validation = row_hashes(*load_split(paths, "validation"))
    assert not set(train) & set(validation)
    assert sorted(train + validation) == original


def test_same_seed_same_split_and_rerun_replaces_the_directory(prepared, tmp_path: Path) -> None:
    first, _, _ = prepared
    write_raw(tmp_path)
    again = Paths.at(tmp_path)
    again.prepared.mkdir(parents=True)
    (again.prepared / "stale.npz").write_bytes(b"from an older run")
    preprocess.run(params(validation_size=VALIDATION_SIZE), again)
    for name, (images, labels) in load_all(first).items():
        np.testing.assert_array_equal(load_split(again, name)[0], images)
        np.testing.assert_array_equal(load_split(again, name)[1], labels)
    assert not (again.prepared / "stale.npz").exists()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["prepared", "raw"]


def test_another_seed_gives_another_split(prepared, tmp_path: Path) -> None:
    first, _, _ = prepared
    write_raw(tmp_path)
    other = Paths.at(tmp_path)
    seed = params().split_seed + 1
    preprocess.run(params(validation_size=VALIDATION_SIZE, split_seed=seed), other)
    before = row_hashes(*load_split(first, "validation"))
    after = row_hashes(*load_split(other, "validation"))
    assert before != after
    np.testing.assert_array_equal(  # still stratified the same way
        np.bincount(load_split(other, "validation")[1], minlength=10),
        np.bincount(load_split(first, "validation")[1], minlength=10),
    )


def test_stats_match_an_independent_computation(prepared) -> None:
    paths, _, returned = prepared
    stats = json.loads((paths.preprocess_reports / "stats.json").read_text())
    assert stats == returned
    assert sorted(stats) == sorted(SPLITS)
    for name, (images, labels) in load_all(paths).items():
        digits, counts = np.unique(labels, return_counts=True)
        pixels = images.astype(np.float64)
        assert stats[name]["count"] == len(labels)
        assert stats[name]["class_counts"] == {str(d): 0 for d in range(10)} | {
            str(d): int(n) for d, n in zip(digits, counts, strict=True)
        }
        assert stats[name]["pixel_mean"] == pytest.approx(pixels.mean(), abs=1e-3)
        assert stats[name]["pixel_std"] == pytest.approx(pixels.std(), abs=1e-3)
        assert stats[name]["pixel_mean_scaled"] == pytest.approx(pixels.mean() / 255, abs=1e-5)
        assert stats[name]["pixel_std_scaled"] == pytest.approx(pixels.std() / 255, abs=1e-5)


@pytest.mark.parametrize("name", ["samples.png", "class_distribution.png"])
def test_figures_are_modest_png_images(prepared, name: str) -> None:
    paths, _, _ = prepared
    path = paths.preprocess_reports / name
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG"
        width, height = image.size
    assert 400 <= width <= 2000 and 300 <= height <= 2000
    assert path.stat().st_size < 500_000
    assert not [p for p in paths.preprocess_reports.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("size", [TRAIN_PER_CLASS.sum() - 9, TRAIN_PER_CLASS.sum(), 10**6])
def test_bad_validation_size_stops_before_any_work(tmp_path: Path, size: int) -> None:
    write_raw(tmp_path)
    paths = Paths.at(tmp_path)
    images_file = paths.raw / MNIST_FILES[0]
    images_file.write_bytes(images_file.read_bytes()[:-5])  # would fail if the images were read
    with pytest.raises(ConfigError) as caught:
        preprocess.run(params(validation_size=int(size)), paths)
    maximum = TRAIN_PER_CLASS.sum() - 10
    assert str(caught.value).startswith(f"preprocess.validation_size: {size} is out of range")
    assert f"allowed: 1..{maximum}" in str(caught.value)
    assert not paths.prepared.exists() and not paths.preprocess_reports.exists()


def test_allocation_is_exact_and_leaves_every_class_a_training_image() -> None:
    counts = np.array([1, 2, 97, 0, 5, 5, 5, 5, 5, 5])
    for size in range(1, counts.sum() - 8):
        allocation = preprocess.allocate_validation(counts, size)
        assert allocation.sum() == size
        assert np.all(allocation <= np.maximum(counts - 1, 0))
    allocation = preprocess.allocate_validation(np.full(10, 7), 25)  # ties go to the lower digits
    assert allocation.tolist() == [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]


def test_load_split_reports_missing_or_broken_arrays(tmp_path: Path) -> None:
    paths = Paths.at(tmp_path)
    with pytest.raises(ConfigError, match=r"data/prepared/train\.npz: missing; run `dvc repro"):
        load_split(paths, "train")
    paths.prepared.mkdir(parents=True)
    np.savez(
        split_file(paths, "test"),
        images=np.zeros((2, 28, 28), np.float32),
        labels=np.zeros(2, np.uint8),
    )
    with pytest.raises(ConfigError, match=r"data/prepared/test\.npz: images are float32"):
        load_split(paths, "test")


def test_cli_exits_2_naming_a_malformed_raw_file(tmp_path: Path) -> None:
    settings = yaml.safe_load((ROOT / "params.yaml").read_text())
    settings["preprocess"]["validation_size"] = 20  # of the 60 training images written below
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(settings))
    write_mirror(tmp_path / "data" / "raw", n_train=60, n_test=20, gz=False)
    labels_file = tmp_path / "data" / "raw" / "t10k-labels-idx1-ubyte"
    labels_file.write_bytes(labels_file.read_bytes()[:8] + bytes([3, 42] + [0] * 18))
    result = CliRunner().invoke(app, ["preprocess", "--root", str(tmp_path)])
    assert result.exit_code == 2
    assert "data/raw/t10k-labels-idx1-ubyte: label 42 at index 1 is outside 0..9" in result.output


@pytest.mark.real_data
def test_real_mnist(tmp_path: Path) -> None:
    if not all((REAL_MNIST / f"{name}.gz").is_file() for name in MNIST_FILES):
        pytest.skip(f"the real MNIST files are not in {REAL_MNIST}")
    paths = Paths.at(tmp_path)
    paths.raw.mkdir(parents=True)
    for name in MNIST_FILES:
        with gzip.open(REAL_MNIST / f"{name}.gz") as source, open(paths.raw / name, "wb") as out:
            shutil.copyfileobj(source, out)
    cfg = params()
    stats = preprocess.run(cfg, paths)
    train_counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    test_counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert stats["test"]["count"] == 10000
    assert list(stats["test"]["class_counts"].values()) == test_counts
    assert stats["train"]["count"] + stats["validation"]["count"] == 60000
    assert stats["validation"]["count"] == cfg.validation_size
    validation = np.array(list(stats["validation"]["class_counts"].values()))
    train = np.array(list(stats["train"]["class_counts"].values()))
    np.testing.assert_array_equal(train + validation, train_counts)
    proportional = cfg.validation_size * np.array(train_counts) / 60000
    assert np.all(np.abs(validation - proportional) < 1)
    images, labels = load_split(paths, "validation")
    assert images.shape == (cfg.validation_size, 28, 28)
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), validation)
