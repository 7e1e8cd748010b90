"""Classification metrics against hand-made examples and independent numpy computations."""

from __future__ import annotations

import numpy as np
import pytest

from stages.lib.evaluation import metrics


@pytest.fixture
def predictions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Saved-style predictions: labels, logits that are right ~80% of the time, and argmax."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 10, size=2000)
    logits = rng.normal(size=(2000, 10))
    right = rng.random(2000) < 0.8
    logits[right, labels[right]] += 6.0
    return labels, logits, logits.argmax(axis=1)


def test_confusion_matrix_agrees_with_a_loop_and_its_diagonal_counts_the_correct(predictions):
    labels, _, predicted = predictions
    matrix = metrics.confusion_matrix(labels, predicted)
    expected = np.zeros((10, 10), dtype=np.int64)
    for true, guess in zip(labels, predicted, strict=True):
        expected[true, guess] += 1
    np.testing.assert_array_equal(matrix, expected)
    assert np.trace(matrix) == np.count_nonzero(labels == predicted)
    np.testing.assert_array_equal(matrix.sum(axis=1), np.bincount(labels, minlength=10))
    np.testing.assert_array_equal(matrix.sum(axis=0), np.bincount(predicted, minlength=10))


def test_per_digit_accuracy_is_the_recall_computed_per_class_with_bincount(predictions):
    labels, _, predicted = predictions
    classes = metrics.per_class(metrics.confusion_matrix(labels, predicted))
    correct = np.bincount(labels[labels == predicted], minlength=10)
    np.testing.assert_allclose(classes["recall"], correct / np.bincount(labels, minlength=10))
    np.testing.assert_allclose(classes["precision"], correct / np.bincount(predicted, minlength=10))
    for digit in range(10):
        mine = labels == digit
        assert classes["recall"][digit] == pytest.approx(np.mean(predicted[mine] == digit))


def test_normalized_rows_sum_to_one_or_zero_for_an_absent_class():
    labels = np.array([0, 0, 1, 1, 1, 3])
    predicted = np.array([0, 1, 1, 1, 3, 3])
    normalized = metrics.normalize_rows(metrics.confusion_matrix(labels, predicted))
    sums = normalized.sum(axis=1)
    np.testing.assert_allclose(sums[[0, 1, 3]], 1.0)
    np.testing.assert_array_equal(sums[[2, *range(4, 10)]], 0.0)
    assert normalized[1, 3] == pytest.approx(1 / 3)


def test_precision_recall_f1_on_a_hand_made_example():
    # Digit 0: 3 images, 2 found, 1 predicted wrongly as 0 -> precision 2/3, recall 2/3.
    # Digit 1: 2 images, both found, one 0 predicted as 1 -> precision 2/3, recall 1.
    # Digit 2: 1 image, predicted 0; never predicted -> precision 0, recall 0, F1 0.
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 1, 0])
    classes = metrics.per_class(metrics.confusion_matrix(labels, predicted))
    np.testing.assert_allclose(classes["precision"][:3], [2 / 3, 2 / 3, 0.0])
    np.testing.assert_allclose(classes["recall"][:3], [2 / 3, 1.0, 0.0])
    np.testing.assert_allclose(classes["f1"][:3], [2 / 3, 0.8, 0.0])
    np.testing.assert_array_equal(classes["support"][:4], [3, 2, 1, 0])
    assert not np.isnan(classes["f1"]).any()  # absent digits 3..9 give 0, not NaN


def test_most_confused_pairs_are_the_largest_off_diagonal_counts_with_their_share():
    labels = np.array([4] * 10 + [9] * 5 + [7] * 4 + [1] * 2)
    predicted = np.array([9] * 3 + [4] * 7 + [4] * 3 + [9] * 2 + [1] * 3 + [7] + [7] * 2)
    pairs = metrics.most_confused(metrics.confusion_matrix(labels, predicted), top=3)
    assert pairs == [
        {"true": 4, "predicted": 9, "count": 3, "share": pytest.approx(0.3)},
        {"true": 7, "predicted": 1, "count": 3, "share": pytest.approx(0.75)},
        {"true": 9, "predicted": 4, "count": 3, "share": pytest.approx(0.6)},
    ]
    perfect = metrics.confusion_matrix(np.arange(10), np.arange(10))
    assert metrics.most_confused(perfect) == []


def test_loss_is_the_mean_negative_log_probability_of_the_true_class(predictions):
    labels, logits, _ = predictions
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = -np.mean(np.log(probabilities[np.arange(len(labels)), labels]))
    assert metrics.cross_entropy(logits, labels) == pytest.approx(expected, rel=1e-12)
    # Large logits must not overflow (the naive formula would give inf/NaN here).
    huge = np.array([[1000.0, 0.0], [0.0, 1000.0]])
    assert metrics.cross_entropy(huge, np.array([0, 0])) == pytest.approx(500.0)
    np.testing.assert_allclose(metrics.softmax(logits).sum(axis=1), 1.0)


def test_summary_of_one_pass_of_logits(predictions):
    labels, logits, predicted = predictions
    summary = metrics.summarize(logits, labels)
    assert summary["accuracy"] == pytest.approx(np.mean(labels == predicted))
    assert summary["f1_macro"] == pytest.approx(summary["per_class"]["f1"].mean())
    np.testing.assert_array_equal(summary["predictions"], predicted)
    assert len(summary["most_confused"]) == metrics.MOST_CONFUSED_SHOWN


def test_most_confident_mistakes_come_first_and_only_mistakes_are_chosen():
    labels = np.array([1, 2, 3, 4, 5])
    predicted = np.array([1, 0, 0, 0, 5])
    confidence = np.array([0.99, 0.4, 0.9, 0.4, 0.8])
    chosen = metrics.most_confident_mistakes(labels, predicted, confidence, shown=2)
    np.testing.assert_array_equal(chosen, [2, 1])  # 0.9, then the lower index of the 0.4 tie
    all_of_them = metrics.most_confident_mistakes(labels, predicted, confidence, shown=10)
    np.testing.assert_array_equal(all_of_them, [2, 1, 3])


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match=r"0\.\.9"):
        metrics.confusion_matrix(np.array([0, 10]), np.array([0, 1]))
    with pytest.raises(ValueError, match="must be"):
        metrics.confusion_matrix(np.array([0, 1]), np.array([0]))
