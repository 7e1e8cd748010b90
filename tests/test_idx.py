"""Strict IDX parsing: every malformation stops with one line naming the file and the fault."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from synthetic import idx_bytes, make_digits

from stages.lib.core.config import ConfigError
from stages.lib.core.paths import MNIST_FILES, Paths
from stages.lib.data.idx import read_images, read_labels, read_pair, read_raw_split, require_raw

IMAGES_NAME = "data/raw/train-images-idx3-ubyte"
LABELS_NAME = "data/raw/train-labels-idx1-ubyte"


@pytest.fixture
def digits() -> tuple[np.ndarray, np.ndarray]:
    return make_digits(30, seed=3)


def write(root: Path, name: str, data: bytes) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def error_of(call, *args) -> str:
    with pytest.raises(ConfigError) as caught:
        call(*args)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_good_files_round_trip(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    images_path = write(tmp_path, IMAGES_NAME, idx_bytes(images))
    labels_path = write(tmp_path, LABELS_NAME, idx_bytes(labels))
    loaded_images, loaded_labels = read_pair(images_path, labels_path, tmp_path)
    assert loaded_images.dtype == np.uint8 and loaded_images.shape == (30, 28, 28)
    assert loaded_labels.dtype == np.uint8 and loaded_labels.shape == (30,)
    np.testing.assert_array_equal(loaded_images, images)
    np.testing.assert_array_equal(loaded_labels, labels)


def header(magic: tuple[int, int, int, int], *dims: int) -> bytes:
    return bytes(magic) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize(
    ("name", "data", "fault"),
    [
        (IMAGES_NAME, header((0, 1, 8, 3), 1, 28, 28) + bytes(784), "magic number 0x00010803"),
        (IMAGES_NAME, header((0, 0, 0x0D, 3), 1, 28, 28) + bytes(784), "data type byte 0x0D"),
        (IMAGES_NAME, header((0, 0, 8, 2), 1, 784) + bytes(784), "2 dimensions in the header"),
        (IMAGES_NAME, header((0, 0, 8, 3), 2, 32, 32) + bytes(2048), "images are 32x32 pixels"),
        (IMAGES_NAME, header((0, 0, 8, 3), 3, 28, 28) + bytes(784 * 2), "truncated"),
        (IMAGES_NAME, header((0, 0, 8, 3), 1, 28, 28) + bytes(790), "6 trailing bytes"),
        (IMAGES_NAME, header((0, 0, 8, 3), 1, 28), "header truncated"),
        (IMAGES_NAME, b"\x00\x00", "too short for an IDX header"),
        (IMAGES_NAME, header((0, 0, 8, 3), 0, 28, 28), "declares 0 images"),
        (LABELS_NAME, header((0, 0, 8, 1), 4) + bytes([1, 2, 3]), "truncated"),
        (LABELS_NAME, header((0, 0, 8, 1), 4) + bytes([1, 2, 3, 4, 5]), "1 trailing bytes"),
        (LABELS_NAME, header((0, 0, 8, 3), 1, 28, 28) + bytes(784), "3 dimensions in the header"),
        (LABELS_NAME, header((0, 0, 8, 1), 5) + bytes([0, 9, 4, 12, 200]), "label 12 at index 3"),
    ],
    ids=[
        "wrong-magic",
        "wrong-dtype",
        "wrong-dims",
        "not-28x28",
        "truncated-images",
        "trailing-image-bytes",
        "truncated-header",
        "tiny-file",
        "no-images",
        "truncated-labels",
        "trailing-label-bytes",
        "images-as-labels",
        "label-out-of-range",
    ],
)
def test_malformed_file_names_file_and_fault(
    tmp_path: Path, name: str, data: bytes, fault: str
) -> None:
    path = write(tmp_path, name, data)
    read = read_images if "images" in name else read_labels
    message = error_of(read, path, tmp_path)
    assert message.startswith(f"{name}: ")
    assert fault in message


def test_label_out_of_range_message_is_exact(tmp_path: Path) -> None:
    path = write(tmp_path, LABELS_NAME, idx_bytes(np.array([0, 1, 2, 12, 3], dtype=np.uint8)))
    assert (
        error_of(read_labels, path, tmp_path)
        == f"{LABELS_NAME}: label 12 at index 3 is outside 0..9"
    )


def test_image_and_label_counts_must_agree(
    tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = digits
    images_path = write(tmp_path, IMAGES_NAME, idx_bytes(images))
    labels_path = write(tmp_path, LABELS_NAME, idx_bytes(labels[:-1]))
    message = error_of(read_pair, images_path, labels_path, tmp_path)
    assert IMAGES_NAME in message and LABELS_NAME in message
    assert "30 images" in message and "29 labels" in message


def test_missing_raw_files_tell_to_download(tmp_path: Path) -> None:
    paths = Paths.at(tmp_path)
    write(tmp_path, f"data/raw/{MNIST_FILES[0]}", b"")
    message = error_of(require_raw, paths)
    assert f"data/raw/{MNIST_FILES[1]}" in message and f"data/raw/{MNIST_FILES[0]}" not in message
    assert "mlpstudy download" in message and "dvc repro download" in message
    assert "mlpstudy download" in error_of(read_raw_split, paths, "test")
