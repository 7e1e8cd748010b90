"""The prepared arrays in `data/prepared`: their file names, writing and loading, in one place.

`preprocess` writes them; `train` and `evaluate` load them with :func:`load_split`. Pixels stay
uint8 (0..255): scaling belongs to the model, and uint8 keeps the files a quarter of float32's size.
Each split is one uncompressed `.npz` (fast to load) holding `images` (N, 28, 28) and `labels` (N,).
"""

from __future__ import annotations

import os
import shutil
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from stages.lib.core.config import ConfigError
from stages.lib.core.paths import Paths, display_path
from stages.lib.data.idx import IMAGE_SHAPE, NUM_CLASSES

SPLITS: tuple[str, ...] = ("train", "validation", "test")


def split_file(paths: Paths, name: str) -> Path:
    """The file that holds split `name` (one of :data:`SPLITS`)."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; allowed: {', '.join(SPLITS)}")
    return paths.prepared / f"{name}.npz"


def require_split(paths: Paths, name: str) -> Path:
    """The file of split `name`; ConfigError when it is missing (a cheap check, no loading)."""
    file = split_file(paths, name)
    if not file.is_file():
        raise ConfigError(
            f"{display_path(file, paths.root)}: missing; "
            "run `dvc repro preprocess` (or `mlpstudy preprocess`) first"
        )
    return file


def load_split(paths: Paths, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28) and labels uint8 (N,) of split `name`, checked before use."""
    file = require_split(paths, name)
    where = display_path(file, paths.root)
    try:
        with np.load(file, allow_pickle=False) as archive:
            images, labels = archive["images"], archive["labels"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise ConfigError(
            f"{where}: not a readable prepared split ({error}); run `dvc repro preprocess` again"
        ) from None
    fault = _fault(images, labels)
    if fault:
        raise ConfigError(f"{where}: {fault}; run `dvc repro preprocess` again")
    return images, labels


def _fault(images: np.ndarray, labels: np.ndarray) -> str | None:
    """What is wrong with a loaded split, or None."""
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        return f"images are {images.dtype} {images.shape}, expected uint8 (N, 28, 28)"
    if labels.dtype != np.uint8 or labels.shape != (len(images),):
        return f"labels are {labels.dtype} {labels.shape}, expected uint8 ({len(images)},)"
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        return f"label {int(labels.max())} is outside 0..{NUM_CLASSES - 1}"
    return None


def write_splits(paths: Paths, splits: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Replace `data/prepared` as a whole with exactly `splits`.

    The files are written into a staging directory beside it that is renamed into place, so a
    reader never sees a half-written file or a mix of an old and a new split.
    """
    target = paths.prepared
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    retired = target.parent / f".{target.name}.{uuid.uuid4().hex}.old"
    staging.mkdir()
    try:
        for name, (images, labels) in splits.items():
            with open(staging / split_file(paths, name).name, "wb") as handle:
                np.savez(handle, images=images, labels=labels)
        if target.exists() or target.is_symlink():
            os.rename(target, retired)
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)
        if retired.is_symlink() or retired.is_file():
            retired.unlink()
