"""The training data as TensorFlow feeds it: batches built from tensors, one call per epoch.

Keras' own feeding of numpy arrays gathers every batch on the host, step by step. Here each epoch
is one shuffled copy of the split, already cut into batches (a dataset of whole batches, so the
input pipeline does one small piece of work per batch, not per image), and `model.fit` runs all
of an epoch's steps in one compiled call (`steps_per_execution`).

The order of epoch `e` is a stateless shuffle keyed by the cell's seed and `e`, so it depends on
nothing that ran before: a run resumed at epoch `e` sees exactly the batches that an uninterrupted
run sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

# Separates the shuffle's key from other uses of a cell's seed (initializers, dropout, probe).
SHUFFLE_STREAM = 7_919


@dataclass(frozen=True)
class Feed:
    """What `model.fit` takes: the batches, how many there are per epoch, and validation data."""

    batches: tf.data.Dataset
    steps_per_epoch: int
    validation: tf.data.Dataset


def steps_per_epoch(examples: int, batch_size: int) -> int:
    """Batches per epoch: every example once, the last batch smaller when it does not divide."""
    return math.ceil(examples / batch_size)


def epoch_order(examples: int, seed: int, epoch: int | tf.Tensor) -> tf.Tensor:
    """The permutation of `examples` indices used in (0-based) `epoch` of a cell with `seed`."""
    key = tf.stack([tf.constant(SHUFFLE_STREAM * seed + 1, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(tf.range(examples), seed=key)


def feed(
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    batch_size: int,
    seed: int,
    epochs: range,
    prebatched: bool = True,
    validation_batch_size: int = 2048,
) -> Feed:
    """Epochs `epochs` (0-based, e.g. range(initial_epoch, epochs)) of shuffled batches.

    `prebatched=False` yields the same batches through `Dataset.batch`, which
    `tf.distribute` strategies know how to split across replicas.
    """
    images, labels = (tf.constant(array) for array in train)
    examples = int(images.shape[0])
    full = examples // batch_size

    def one_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
        order = epoch_order(examples, seed, epoch)
        x, y = tf.gather(images, order), tf.gather(labels, order)
        if not prebatched:
            return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
        whole = full * batch_size
        batches = tf.data.Dataset.from_tensor_slices(
            (
                tf.reshape(x[:whole], (full, batch_size, *images.shape[1:])),
                tf.reshape(y[:whole], (full, batch_size)),
            )
        )
        if whole < examples:
            batches = batches.concatenate(tf.data.Dataset.from_tensors((x[whole:], y[whole:])))
        return batches

    stream = tf.data.Dataset.range(epochs.start, epochs.stop).flat_map(one_epoch)
    checked = tf.data.Dataset.from_tensor_slices(tuple(tf.constant(a) for a in validation))
    return Feed(
        stream.prefetch(2).with_options(untuned()),
        steps_per_epoch(examples, batch_size),
        checked.batch(validation_batch_size).cache().with_options(untuned()),
    )


def untuned() -> tf.data.Options:
    """No tf.data autotuning: these pipelines have nothing to tune (no parallel stage, a fixed
    prefetch), and its model thread can hold an iterator's destruction, at the end of `fit`,
    for about two seconds (benchmarks/fit_teardown.py). The batches are the same either way."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return options
