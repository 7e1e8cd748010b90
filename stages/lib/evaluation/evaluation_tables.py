"""The files of the evaluate stage per cell: metrics.json, three CSV tables and two figures.

metrics.json is what `dvc metrics show` tabulates for all cells side by side, so it holds only the
headline numbers, the per-digit recall and the most confused pairs; precision and F1 per digit are
in per_digit.csv (and in MLflow). predictions.csv feeds DVC's `confusion` plot template.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from stages.lib.core.atomic import write_json, write_text
from stages.lib.core.paths import Paths

METRICS_FILE = "metrics.json"
PER_DIGIT_FILE = "per_digit.csv"
CONFUSION_FILE = "confusion.csv"
PREDICTIONS_FILE = "predictions.csv"
CONFUSION_FIGURE = "confusion.png"
MISTAKES_FIGURE = "misclassified.png"
DECIMALS = 6  # enough for 1 image in 10^6; keeps the files readable and diffs small


def cell_files(paths: Paths, cell_key: str) -> dict[str, Path]:
    """Where each evaluate file of a cell lives (see Paths), by its name in the MLflow run."""
    tables, figures = paths.evaluate_tables(cell_key), paths.evaluate_figures(cell_key)
    return {
        METRICS_FILE: paths.evaluate_metrics(cell_key),
        PREDICTIONS_FILE: paths.evaluate_predictions(cell_key),
        PER_DIGIT_FILE: tables / PER_DIGIT_FILE,
        CONFUSION_FILE: tables / CONFUSION_FILE,
        CONFUSION_FIGURE: figures / CONFUSION_FIGURE,
        MISTAKES_FIGURE: figures / MISTAKES_FIGURE,
    }


def metrics_json(summary: dict[str, Any]) -> dict[str, Any]:
    """The DVC metrics of one cell. Nested keys flatten to `recall.0` etc. in `dvc metrics show`."""
    recall = summary["per_class"]["recall"]
    return {
        "test_loss": round(summary["loss"], DECIMALS),
        "test_accuracy": round(summary["accuracy"], DECIMALS),
        "test_f1_macro": round(summary["f1_macro"], DECIMALS),
        "test_images": int(summary["count"]),
        "test_errors": int(summary["count"] - np.trace(summary["confusion"])),
        "recall": {str(digit): round(float(value), DECIMALS) for digit, value in enumerate(recall)},
        "most_confused": [
            {**pair, "share": round(pair["share"], DECIMALS)} for pair in summary["most_confused"]
        ],
    }


def per_digit_csv(per_class: dict[str, np.ndarray]) -> str:
    """digit, support, recall, precision, f1: one row per digit."""
    columns = ("support", "recall", "precision", "f1")
    rows = [
        [digit, int(per_class["support"][digit])]
        + [_number(per_class[name][digit]) for name in columns[1:]]
        for digit in range(len(per_class["support"]))
    ]
    return _csv([["digit", *columns], *rows])


def confusion_csv(matrix: np.ndarray) -> str:
    """The counts with a header of predicted digits and the true digit leading each row."""
    classes = range(matrix.shape[0])
    header = ["true\\predicted", *(str(digit) for digit in classes)]
    return _csv([header, *([digit, *map(int, matrix[digit])] for digit in classes)])


def predictions_csv(labels: np.ndarray, predictions: np.ndarray) -> str:
    """actual,predicted per test image, in the order of the test split."""
    lines = [f"{int(a)},{int(p)}" for a, p in zip(labels, predictions, strict=True)]
    return "actual,predicted\n" + "".join(f"{line}\n" for line in lines)


def write_tables(
    files: dict[str, Path], summary: dict[str, Any], labels: np.ndarray
) -> dict[str, Any]:
    """Write the four text files of `cell_files(...)`; return the metrics.json content."""
    metrics = metrics_json(summary)
    write_text(files[PER_DIGIT_FILE], per_digit_csv(summary["per_class"]))
    write_text(files[CONFUSION_FILE], confusion_csv(summary["confusion"]))
    write_text(files[PREDICTIONS_FILE], predictions_csv(labels, summary["predictions"]))
    write_json(files[METRICS_FILE], metrics)
    return metrics


def _number(value: float) -> str:
    return f"{float(value):.{DECIMALS}f}"


def _csv(rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()
