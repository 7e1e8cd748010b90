"""What a training run's hidden layers look like on a fixed probe batch (see docs/diagnostics.md).

Accuracy says which grid cell wins; these measures say why: vanishing gradients, dead ReLU units,
saturated sigmoid/tanh units, a zero initialization that never breaks symmetry. They come from one
forward and one backward pass over the probe batch, walking the model's layers so that each hidden
`Dense` layer's pre-activation `x @ kernel + bias` can be seen before its activation is applied.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

RELU_FAMILY: frozenset[str] = frozenset({"relu", "leaky_relu", "elu", "selu", "gelu"})
SATURATING_RANGE: dict[str, tuple[float, float]] = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}
HIDDEN_PREFIX = "hidden_"

BOUND_DISTANCE = 0.02  # an output this close to a bound of the activation's range is saturated
MIN_DERIVATIVE = 0.05  # ... and so is one where the activation's derivative is below this
SATURATED_SHARE = 0.5  # a unit saturated on more than this share of probe examples is saturated

MEASURES: tuple[str, ...] = (
    "grad_norm",
    "grad_to_weight",
    "preact_mean",
    "preact_std",
    "dead_fraction",
    "saturated_fraction",
    "kernel_norm",
)


def probe_indices(n_train: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices of the probe batch: the same for every cell with the same seed.

    Drawn with numpy's own generator, so neither TensorFlow's state nor anything the cell did
    before changes them. A training set smaller than `size` is probed whole.
    """
    if n_train < 1:
        raise ValueError(f"n_train: {n_train} is not allowed; the training set must be non-empty")
    if size < 1:
        raise ValueError(f"probe size: {size} is not allowed; it must be >= 1")
    if seed < 0:
        raise ValueError(f"seed: {seed} is not allowed; a seed is an integer >= 0")
    chosen = np.random.default_rng(seed).choice(n_train, size=min(size, n_train), replace=False)
    return np.sort(chosen)


def hidden_layers(model: keras.Model) -> list[keras.layers.Dense]:
    """The model's hidden `Dense` layers (named `hidden_<n>`), in forward order."""
    hidden = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.Dense) and layer.name.startswith(HIDDEN_PREFIX)
    ]
    if not hidden:
        names = ", ".join(layer.name for layer in model.layers)
        raise ValueError(f"model has no Dense layers named {HIDDEN_PREFIX}<n> (layers: {names})")
    return hidden


def measure(
    model: keras.Model, images: np.ndarray, labels: np.ndarray, activation: str
) -> dict[str, float]:
    """`diag/<layer>/<measure>` -> value per hidden layer; NaN where undefined or not applicable.

    Runs eagerly: at probe size 256 one call costs a few milliseconds, while tracing a
    `tf.function` costs ~0.3 s once, more than eager calls cost over a whole 10-epoch run.
    """
    if activation not in RELU_FAMILY and activation not in SATURATING_RANGE:
        allowed = ", ".join(sorted(RELU_FAMILY | SATURATING_RANGE.keys()))
        raise ValueError(f"activation: {activation!r} is not supported; allowed: {allowed}")
    hidden = hidden_layers(model)
    table = _layer_statistics(model, hidden, activation, images, labels)
    values: dict[str, float] = {}
    for layer, row in zip(hidden, table.numpy().tolist(), strict=True):
        for name, value in zip(MEASURES, row, strict=True):
            values[f"diag/{layer.name}/{name}"] = value if math.isfinite(value) else math.nan
    return values


def _layer_statistics(
    model: keras.Model,
    hidden: list[keras.layers.Dense],
    activation: str,
    images: np.ndarray,
    labels: np.ndarray,
) -> tf.Tensor:
    """One row per hidden layer holding the MEASURES, in that order, from one forward pass."""
    hidden_ids = {id(layer) for layer in hidden}
    preactivations, outputs = [], []
    with tf.GradientTape() as tape:
        x = tf.convert_to_tensor(images)
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if id(layer) in hidden_ids:
                pre = tf.matmul(x, layer.kernel)
                if layer.bias is not None:
                    pre = pre + layer.bias
                x = layer.activation(pre)
                preactivations.append(pre)
                outputs.append(x)
            else:
                x = layer(x, training=False)
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(labels, x, from_logits=True)
        )
    kernels = [layer.kernel for layer in hidden]
    gradients = tape.gradient(loss, kernels)
    rows = []
    for kernel, gradient, pre, out in zip(kernels, gradients, preactivations, outputs, strict=True):
        kernel_norm = tf.norm(tf.convert_to_tensor(kernel))
        grad_norm = tf.norm(gradient)
        rows.append(
            tf.stack(
                [
                    grad_norm,
                    grad_norm / kernel_norm,  # 0/0 and x/0 give NaN and inf: reported as NaN
                    tf.reduce_mean(pre),
                    tf.math.reduce_std(pre),
                    _dead_fraction(pre, activation),
                    _saturated_fraction(out, activation),
                    kernel_norm,
                ]
            )
        )
    return tf.stack(rows)


def _dead_fraction(pre: tf.Tensor, activation: str) -> tf.Tensor:
    """Share of units whose pre-activation is never positive on the probe batch."""
    if activation not in RELU_FAMILY:
        return tf.constant(math.nan)
    dead = tf.reduce_max(pre, axis=0) <= 0.0
    return tf.reduce_mean(tf.cast(dead, tf.float32))


def _saturated_fraction(out: tf.Tensor, activation: str) -> tf.Tensor:
    """Share of units saturated (near a bound, or flat) on more than half the probe examples."""
    if activation not in SATURATING_RANGE:
        return tf.constant(math.nan)
    low, high = SATURATING_RANGE[activation]
    derivative = out * (1.0 - out) if activation == "sigmoid" else 1.0 - tf.square(out)
    near_bound = tf.minimum(out - low, high - out) <= BOUND_DISTANCE
    saturated = tf.logical_or(near_bound, derivative < MIN_DERIVATIVE)
    share = tf.reduce_mean(tf.cast(saturated, tf.float32), axis=0)
    return tf.reduce_mean(tf.cast(share > SATURATED_SHARE, tf.float32))
