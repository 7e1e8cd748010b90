"""Tiny synthetic MNIST-format data that tests write themselves, so the suite runs anywhere.

Each digit class is a distinct blob pattern plus noise, so a small MLP learns it in an epoch or two
and tests can check that training really learns.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np

from stages.lib.core.paths import MNIST_FILES


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file (big-endian header, uint8 data) holding `array`."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    dims = struct.pack(f">{array.ndim}I", *array.shape)
    return magic + dims + array.tobytes()


def make_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` 28x28 uint8 images with labels cycling 0..9 (shuffled), learnable by class."""
    rng = np.random.default_rng(seed)
    labels = np.resize(np.arange(10, dtype=np.uint8), count)
    rng.shuffle(labels)
    prototypes = np.zeros((10, 28, 28), dtype=np.float32)
    for digit in range(10):
        row, col = divmod(digit, 4)
        prototypes[digit, 2 + row * 8 : 9 + row * 8, 2 + col * 6 : 8 + col * 6] = 220.0
    noise = rng.normal(0.0, 25.0, size=(count, 28, 28))
    images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels


def write_mirror(
    directory: Path, n_train: int = 600, n_test: int = 200, gz: bool = True, seed: int = 0
) -> dict[str, str]:
    """Write the four MNIST files (gzipped or raw) into `directory` plus a SHA256SUMS file.

    Returns the SHA-256 of each decompressed file, keyed by the standard file name.
    """
    directory.mkdir(parents=True, exist_ok=True)
    train_images, train_labels = make_digits(n_train, seed)
    test_images, test_labels = make_digits(n_test, seed + 1)
    contents = dict(
        zip(
            MNIST_FILES,
            (idx_bytes(a) for a in (train_images, train_labels, test_images, test_labels)),
            strict=True,
        )
    )
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    for name, data in contents.items():
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (directory / name).write_bytes(data)
    (directory / "SHA256SUMS").write_text(
        "".join(f"{digest}  {name}\n" for name, digest in digests.items())
    )
    return digests
