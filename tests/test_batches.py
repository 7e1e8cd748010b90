"""The training feed (stages/lib/training/batches.py): resumable order, fixed pipeline."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from stages.lib.training import batches


def _split(examples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    images = generator.random((examples, 28, 28), dtype=np.float32)
    return images, generator.integers(0, 10, examples).astype(np.uint8)


def test_a_resumed_feed_gives_the_batches_of_an_uninterrupted_one() -> None:
    train, validation = _split(70, 0), _split(10, 1)
    whole = list(batches.feed(train, validation, 32, seed=3, epochs=range(0, 2)).batches)
    resumed = list(batches.feed(train, validation, 32, seed=3, epochs=range(1, 2)).batches)
    steps = batches.steps_per_epoch(70, 32)
    assert steps == 3 and len(whole) == 2 * steps and len(resumed) == steps
    assert [len(labels) for _, labels in resumed] == [32, 32, 6]
    for (x_whole, y_whole), (x_resumed, y_resumed) in zip(whole[steps:], resumed, strict=True):
        np.testing.assert_array_equal(x_whole.numpy(), x_resumed.numpy())
        np.testing.assert_array_equal(y_whole.numpy(), y_resumed.numpy())
    assert not np.array_equal(whole[0][1].numpy(), whole[steps][1].numpy())  # reshuffled


def test_the_feed_runs_without_tf_data_autotuning() -> None:
    """Its model thread held each cell's `fit` about two seconds at its end, in a quarter of the
    cells on two workers (benchmarks/fit_teardown.py); these pipelines have nothing to tune."""
    for prebatched in (True, False):
        feed = batches.feed(
            _split(70, 0), _split(10, 1), 32, seed=0, epochs=range(1), prebatched=prebatched
        )
        tuned = tf.data.Options()
        tuned.autotune.enabled = True
        for dataset in (feed.batches, feed.validation):
            assert dataset.options().autotune.enabled is False
            for (x, y), (x_tuned, y_tuned) in zip(
                dataset, dataset.with_options(tuned), strict=True
            ):  # the same batches either way
                np.testing.assert_array_equal(x.numpy(), x_tuned.numpy())
                np.testing.assert_array_equal(y.numpy(), y_tuned.numpy())
