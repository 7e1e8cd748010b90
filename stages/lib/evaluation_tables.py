"""The text outputs of the evaluate stage: metrics.json and three CSV tables.

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

from stages.lib.atomic import write_json, write_text

METRICS_FILE = "metrics.json"
PER_DIGIT_FILE = "per_digit.csv"
CONFUSION_FILE = "confusion.csv"
PREDICTIONS_FILE = "predictions.csv"
DECIMALS = 6  # enough for 1 image in 10^6; keeps the files readable and diffs small


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


def write_tables(folder: Path, summary: dict[str, Any], labels: np.ndarray) -> dict[str, Any]:
    """Write the four text files into `folder`; return the metrics.json content."""
    metrics = metrics_json(summary)
    write_text(folder / PER_DIGIT_FILE, per_digit_csv(summary["per_class"]))
    write_text(folder / CONFUSION_FILE, confusion_csv(summary["confusion"]))
    write_text(folder / PREDICTIONS_FILE, predictions_csv(labels, summary["predictions"]))
    write_json(folder / METRICS_FILE, metrics)
    return metrics


def _number(value: float) -> str:
    return f"{float(value):.{DECIMALS}f}"


def _csv(rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()
