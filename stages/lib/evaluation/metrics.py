"""Classification metrics from labels and logits: pure numpy, so tests check them by hand.

The confusion matrix has the true digit as row and the predicted digit as column. Ratios whose
denominator is zero (a digit absent from the labels, or never predicted) are 0.0, as in
scikit-learn's `zero_division=0`: JSON has no NaN, and DVC and MLflow then show a number.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stages.lib.data.idx import NUM_CLASSES

MOST_CONFUSED_SHOWN = 5


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log(softmax(logits)) per row in float64, stable for large logits (max subtracted first)."""
    shifted = np.asarray(logits, dtype=np.float64)
    shifted = shifted - shifted.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities per row (float64); each row sums to 1."""
    return np.exp(log_softmax(logits))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean sparse categorical cross-entropy of `labels` under `logits` (Keras' from_logits)."""
    rows = np.arange(len(labels))
    return float(-log_softmax(logits)[rows, np.asarray(labels, dtype=np.int64)].mean())


def confusion_matrix(
    labels: np.ndarray, predictions: np.ndarray, classes: int = NUM_CLASSES
) -> np.ndarray:
    """Counts (classes, classes), int64: row = true class, column = predicted class."""
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    if labels.shape != predictions.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} must be (N,)")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= classes):
            raise ValueError(f"{name} must lie in 0..{classes - 1}")
    flat = np.bincount(labels * classes + predictions, minlength=classes * classes)
    return flat.reshape(classes, classes)


def _ratio(numerators: np.ndarray, denominators: np.ndarray) -> np.ndarray:
    """numerators / denominators, 0.0 where the denominator is 0."""
    numerators = np.asarray(numerators, dtype=np.float64)
    denominators = np.asarray(denominators, dtype=np.float64)
    result = np.zeros(np.broadcast_shapes(numerators.shape, denominators.shape))
    np.divide(numerators, denominators, out=result, where=denominators != 0)
    return result


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum: the share of each true class predicted as each column.

    Rows sum to 1, or to 0 for a class absent from the labels.
    """
    return _ratio(matrix, np.asarray(matrix).sum(axis=1, keepdims=True))


def per_class(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Support, recall (= the per-digit accuracy), precision and F1 of each class."""
    matrix = np.asarray(matrix)
    correct = np.diag(matrix)
    support = matrix.sum(axis=1)
    recall = _ratio(correct, support)
    precision = _ratio(correct, matrix.sum(axis=0))
    f1 = _ratio(2 * precision * recall, precision + recall)
    return {"support": support, "recall": recall, "precision": precision, "f1": f1}


def most_confused(matrix: np.ndarray, top: int = MOST_CONFUSED_SHOWN) -> list[dict[str, Any]]:
    """The `top` largest off-diagonal counts, largest first (ties: lower true, then predicted).

    Each entry: true class, predicted class, count, and the share of the true class's images
    that went to that prediction. Pairs that never occur are left out.
    """
    matrix = np.asarray(matrix)
    shares = normalize_rows(matrix)
    pairs = [
        (int(matrix[true, predicted]), true, predicted)
        for true in range(matrix.shape[0])
        for predicted in range(matrix.shape[1])
        if true != predicted and matrix[true, predicted] > 0
    ]
    pairs.sort(key=lambda pair: (-pair[0], pair[1], pair[2]))
    return [
        {
            "true": true,
            "predicted": predicted,
            "count": count,
            "share": float(shares[true, predicted]),
        }
        for count, true, predicted in pairs[:top]
    ]


def summarize(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Everything evaluate reports, from one pass of predictions (`logits` (N, classes))."""
    logits = np.asarray(logits)
    predictions = logits.argmax(axis=1)
    matrix = confusion_matrix(labels, predictions, logits.shape[1])
    classes = per_class(matrix)
    return {
        "count": len(labels),
        "loss": cross_entropy(logits, labels),
        "accuracy": float(np.trace(matrix) / max(len(labels), 1)),
        "f1_macro": float(classes["f1"].mean()),
        "per_class": classes,
        "confusion": matrix,
        "confusion_normalized": normalize_rows(matrix),
        "most_confused": most_confused(matrix),
        "predictions": predictions,
    }


def most_confident_mistakes(
    labels: np.ndarray, predictions: np.ndarray, confidence: np.ndarray, shown: int
) -> np.ndarray:
    """Indices of up to `shown` misclassified images, most confident first (ties: lower index).

    The confident mistakes are the instructive ones (a sloppy digit, or a wrong label).
    """
    wrong = np.flatnonzero(np.asarray(labels) != np.asarray(predictions))
    order = np.lexsort((wrong, -np.asarray(confidence, dtype=np.float64)[wrong]))
    return wrong[order[:shown]]
