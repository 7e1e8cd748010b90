"""Stage `preprocess`: raw IDX files -> stratified train/validation/test arrays, stats, figures.

The validation set is split off the training images, stratified by digit so every split has the
class balance of the original, and seeded so the same `split_seed` always gives the same split.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stages.lib.core.atomic import write_json
from stages.lib.core.config import ConfigError, PreprocessParams
from stages.lib.core.paths import Paths
from stages.lib.data.idx import NUM_CLASSES, RAW_SPLITS, read_labels, read_raw_split, require_raw
from stages.lib.data.prepared import write_splits

STATS_FILE = "stats.json"
SAMPLES_FILE = "samples.png"
CLASS_DISTRIBUTION_FILE = "class_distribution.png"


def run(cfg: PreprocessParams, paths: Paths) -> dict[str, Any]:
    """Write `data/prepared` and `reports/preprocess`; return the statistics (as in stats.json)."""
    require_raw(paths)
    # The labels alone (60 KB) decide whether validation_size is possible: check before the images.
    train_labels = read_labels(paths.raw / RAW_SPLITS["train"][1], paths.root)
    per_class = allocate_validation(class_counts(train_labels), cfg.validation_size)

    train_images, train_labels = read_raw_split(paths, "train")
    test_images, test_labels = read_raw_split(paths, "test")
    train_rows, validation_rows = split_indices(train_labels, per_class, cfg.split_seed)
    splits = {
        "train": (train_images[train_rows], train_labels[train_rows]),
        "validation": (train_images[validation_rows], train_labels[validation_rows]),
        "test": (test_images, test_labels),
    }
    write_splits(paths, splits)

    stats = {name: split_statistics(images, labels) for name, (images, labels) in splits.items()}
    reports = paths.preprocess_reports
    write_json(reports / STATS_FILE, stats)

    from stages.lib.data import dataset_figures

    images, labels = splits["train"]
    dataset_figures.save_samples(images, labels, cfg.sample_grid, reports / SAMPLES_FILE)
    dataset_figures.save_class_distribution(
        {name: class_counts(labels).tolist() for name, (_, labels) in splits.items()},
        reports / CLASS_DISTRIBUTION_FILE,
    )
    return stats


def class_counts(labels: np.ndarray) -> np.ndarray:
    """Images per digit 0..9."""
    return np.bincount(labels, minlength=NUM_CLASSES)


def allocate_validation(counts: np.ndarray, validation_size: int) -> np.ndarray:
    """Validation images per class: proportional to `counts`, summing exactly to `validation_size`.

    Largest-remainder allocation (exact integer arithmetic, ties to the lower digit), capped so
    that every class present keeps at least one training image.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    caps = np.maximum(counts - 1, 0)
    maximum = int(caps.sum())
    if not 1 <= validation_size <= maximum:
        allowed = f"1..{maximum}" if maximum >= 1 else "none"
        raise ConfigError(
            f"preprocess.validation_size: {validation_size} is out of range; allowed: {allowed} "
            f"(fewer than the {total} training images, leaving every digit class present "
            "at least one training image)"
        )
    numerators = counts * validation_size
    allocation = numerators // total  # < counts because validation_size < total, so <= caps
    remainders = numerators % total
    order = np.lexsort((np.arange(len(counts)), -remainders))
    remaining = validation_size - int(allocation.sum())
    while remaining > 0:  # the caps hold at least `maximum` >= validation_size images in all
        for digit in order:
            if remaining and allocation[digit] < caps[digit]:
                allocation[digit] += 1
                remaining -= 1
    return allocation


def split_indices(
    labels: np.ndarray, per_class: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted row indices (train, validation): `per_class[d]` random rows of each digit d."""
    rng = np.random.default_rng(seed)
    chosen = [
        rng.permutation(np.flatnonzero(labels == digit))[: per_class[digit]]
        for digit in range(NUM_CLASSES)
    ]
    validation = np.sort(np.concatenate(chosen))
    in_train = np.ones(len(labels), dtype=bool)
    in_train[validation] = False
    return np.flatnonzero(in_train), validation


def split_statistics(images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Count, images per digit and pixel mean/std (0..255 and scaled to 0..1) of one split."""
    histogram = np.zeros(256, dtype=np.int64)
    for start in range(0, len(images), 8192):  # bincount casts to int64: bound the temporary
        histogram += np.bincount(images[start : start + 8192].ravel(), minlength=256)
    values = np.arange(256, dtype=np.float64)
    pixels = histogram.sum()
    mean = float(histogram @ values / pixels)
    std = float(np.sqrt(histogram @ (values - mean) ** 2 / pixels))
    return {
        "count": len(labels),
        "class_counts": {str(d): int(n) for d, n in enumerate(class_counts(labels))},
        "pixel_mean": round(mean, 4),
        "pixel_std": round(std, 4),
        "pixel_mean_scaled": round(mean / 255, 6),
        "pixel_std_scaled": round(std / 255, 6),
    }
