"""Training diagnostics: each measure against hand-computed values on tiny fixed-weight models."""

from __future__ import annotations

import csv
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from synthetic import make_digits

from stages.lib.training.diagnostics import (
    CSV_COLUMNS,
    MEASURES,
    DiagnosticsCallback,
    DiagnosticsLog,
    defined,
    measure,
    probe_indices,
)

UNITS = 8


def tiny_model(activation: str, units: tuple[int, ...] = (UNITS, UNITS), seed: int = 0):
    """The train stage's architecture in miniature: uint8 in, rescale, flatten, hidden, logits."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Flatten()(x)
    for number, width in enumerate(units, start=1):
        x = keras.layers.Dense(width, activation=activation, name=f"hidden_{number}")(x)
        x = keras.layers.Dropout(0.5)(x)  # must be off while measuring
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs)


def set_layer(model, name: str, kernel: np.ndarray, bias: np.ndarray) -> None:
    model.get_layer(name).set_weights([kernel.astype(np.float32), bias.astype(np.float32)])


def probe(count: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return make_digits(count, seed)


def numpy_preactivations(model, images: np.ndarray) -> list[np.ndarray]:
    """Each hidden layer's `x @ kernel + bias`, computed in numpy (Dropout is off at inference)."""
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    result = []
    for layer in model.layers:
        if layer.name.startswith("hidden_"):
            kernel, bias = (w.astype(np.float64) for w in layer.get_weights())
            pre = x @ kernel + bias
            result.append(pre)
            x = np.asarray(layer.activation(pre.astype(np.float32)), dtype=np.float64)
    return result


# ------------------------------------------------------------------------------------ probe batch
def test_probe_is_shared_by_cells_with_the_same_seed_and_differs_across_seeds():
    first = probe_indices(50_000, 256, seed=3)
    tf.random.set_seed(99)  # TensorFlow's state must not matter
    np.random.seed(99)  # ... nor numpy's global one
    again = probe_indices(50_000, 256, seed=3)
    other = probe_indices(50_000, 256, seed=4)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert len(np.unique(first)) == 256
    assert first.min() >= 0 and first.max() < 50_000


def test_probe_of_a_small_training_set_is_the_whole_set():
    np.testing.assert_array_equal(probe_indices(10, 256, seed=0), np.arange(10))


@pytest.mark.parametrize(("n_train", "size", "seed"), [(0, 5, 0), (10, 0, 0), (10, 5, -1)])
def test_probe_rejects_bad_arguments(n_train, size, seed):
    with pytest.raises(ValueError, match="not allowed"):
        probe_indices(n_train, size, seed)


# ------------------------------------------------------------------------------------ dead units
def test_relu_layer_with_all_negative_preactivations_is_entirely_dead():
    model = tiny_model("relu")
    set_layer(model, "hidden_1", np.zeros((784, UNITS)), np.full(UNITS, -1.0))
    values = measure(model, *probe(), activation="relu")
    assert values["diag/hidden_1/dead_fraction"] == 1.0
    assert values["diag/hidden_1/preact_mean"] == pytest.approx(-1.0)
    assert values["diag/hidden_1/preact_std"] == pytest.approx(0.0)
    # No signal passes a dead layer, so it gets no gradient; with a zero kernel the ratio of the
    # two is undefined, reported as NaN.
    assert values["diag/hidden_1/grad_norm"] == 0.0
    assert values["diag/hidden_1/kernel_norm"] == 0.0
    assert math.isnan(values["diag/hidden_1/grad_to_weight"])


def test_dead_fraction_counts_units_never_positive_on_any_probe_example():
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    images[0] = 255  # one bright example among blank ones
    labels = np.arange(4, dtype=np.uint8)
    model = tiny_model("relu")
    kernel = np.zeros((784, UNITS))
    kernel[:, 0] = 1.0 / 784  # unit 0: pre-activation 1 on the bright image, -0.5 on blank ones
    bias = np.array([-0.5, -1.0, -1.0, 0.0, 1.0, 1.0, 1.0, 1.0])  # units 1-3 never positive
    set_layer(model, "hidden_1", kernel, bias)
    values = measure(model, images, labels, activation="relu")
    assert values["diag/hidden_1/dead_fraction"] == 3 / 8


# ------------------------------------------------------------------------------- saturated units
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_squashing_layer_with_huge_weights_is_saturated(activation):
    model = tiny_model(activation)
    rng = np.random.default_rng(0)
    set_layer(model, "hidden_1", rng.normal(0.0, 5.0, (784, UNITS)), np.zeros(UNITS))
    values = measure(model, *probe(), activation=activation)
    assert values["diag/hidden_1/saturated_fraction"] == 1.0
    assert math.isnan(values["diag/hidden_1/dead_fraction"])  # not a ReLU-family activation


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_saturated_fraction_needs_more_than_half_of_the_examples(activation):
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    images[:2] = 255
    labels = np.arange(4, dtype=np.uint8)
    model = tiny_model(activation)
    kernel = np.zeros((784, UNITS))
    kernel[:, 0] = 100.0 / 784  # unit 0: saturated on the 2 bright examples of 4: exactly half
    bias = np.array([0.0, 50.0, -50.0, 0.0, 0.0, 0.0, 0.0, 50.0])  # units 1, 2, 7: always
    set_layer(model, "hidden_1", kernel, bias)
    assert measure(model, images, labels, activation)["diag/hidden_1/saturated_fraction"] == 3 / 8
    images[2] = 255  # unit 0 now saturated on 3 of 4 examples
    assert measure(model, images, labels, activation)["diag/hidden_1/saturated_fraction"] == 4 / 8


@pytest.mark.parametrize(
    "activation", ["relu", "leaky_relu", "elu", "selu", "gelu", "sigmoid", "tanh"]
)
def test_healthy_layer_has_no_dead_or_saturated_units(activation):
    images, labels = probe()
    model = tiny_model(activation)
    rng = np.random.default_rng(1)
    inputs = images.reshape(len(images), -1) / 255.0
    centred = inputs - inputs.mean(axis=0)
    # Each unit's pre-activation has mean 0 over the probe and standard deviation ~1: well scaled.
    kernel = rng.normal(0.0, 1.0, (784, UNITS)) / np.sqrt((centred**2).sum(axis=1).mean())
    bias = -(inputs.mean(axis=0) @ kernel)
    set_layer(model, "hidden_1", kernel, bias)
    values = measure(model, images, labels, activation)
    squashing = activation in ("sigmoid", "tanh")
    applies = "saturated_fraction" if squashing else "dead_fraction"
    does_not = "dead_fraction" if squashing else "saturated_fraction"
    assert values[f"diag/hidden_1/{applies}"] == 0.0
    assert math.isnan(values[f"diag/hidden_1/{does_not}"])
    assert 0.5 < values["diag/hidden_1/preact_std"] < 2.0


# ---------------------------------------------------------------------- gradients, norms, moments
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_measures_equal_direct_tensorflow_and_numpy_computations(activation):
    model = tiny_model(activation, units=(8, 6), seed=7)
    images, labels = probe(32, seed=5)
    values = measure(model, images, labels, activation)

    with tf.GradientTape() as tape:
        logits = model(images, training=False)
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        )
    kernels = [model.get_layer(name).kernel for name in ("hidden_1", "hidden_2")]
    gradients = tape.gradient(loss, kernels)

    for name, kernel, gradient, pre in zip(
        ("hidden_1", "hidden_2"),
        kernels,
        gradients,
        numpy_preactivations(model, images),
        strict=True,
    ):
        grad_norm = float(np.linalg.norm(gradient.numpy()))
        kernel_norm = float(np.linalg.norm(kernel.numpy()))
        assert grad_norm > 0
        assert values[f"diag/{name}/grad_norm"] == pytest.approx(grad_norm, rel=1e-5)
        assert values[f"diag/{name}/kernel_norm"] == pytest.approx(kernel_norm, rel=1e-6)
        assert values[f"diag/{name}/grad_to_weight"] == pytest.approx(
            grad_norm / kernel_norm, rel=1e-5
        )
        assert values[f"diag/{name}/preact_mean"] == pytest.approx(pre.mean(), rel=1e-4, abs=1e-6)
        assert values[f"diag/{name}/preact_std"] == pytest.approx(pre.std(), rel=1e-4)


def test_every_activation_reports_the_same_keys_grouped_by_layer():
    images, labels = probe(16)
    keys = {
        activation: list(measure(tiny_model(activation), images, labels, activation))
        for activation in ("relu", "sigmoid")
    }
    expected = [f"diag/hidden_{n}/{name}" for n in (1, 2) for name in MEASURES]
    assert keys["relu"] == keys["sigmoid"] == expected


def test_unknown_activation_and_model_without_hidden_layers_are_rejected():
    images, labels = probe(8)
    with pytest.raises(ValueError, match="'softplus' is not supported; allowed: elu"):
        measure(tiny_model("relu"), images, labels, "softplus")
    inputs = keras.Input((28, 28), dtype="uint8")
    bare = keras.Model(
        inputs, keras.layers.Dense(10, name="logits")(keras.layers.Flatten()(inputs))
    )
    with pytest.raises(ValueError, match="no Dense layers named hidden_<n>"):
        measure(bare, images, labels, "relu")


def test_defined_drops_not_applicable_values():
    assert defined({"a": 1.0, "b": math.nan, "c": 0.0}) == {"a": 1.0, "c": 0.0}


# -------------------------------------------------------------------------------------- callback
@pytest.mark.slow
def test_callback_emits_epoch_zero_then_each_epoch_and_resumes_without_repeats():
    images, labels = make_digits(64, seed=0)
    probe_images, probe_labels = images[:16], labels[:16]

    def run(initial_epoch: int) -> tuple[dict[int, dict[str, float]], dict[str, float]]:
        model = tiny_model("relu", seed=initial_epoch)
        model.compile(
            optimizer="adam",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        before = measure(model, probe_images, probe_labels, "relu")
        emitted: dict[int, dict[str, float]] = {}
        callback = DiagnosticsCallback(
            probe_images,
            probe_labels,
            "relu",
            on_measure=lambda epoch, values: emitted.__setitem__(epoch, values),
            initial_epoch=initial_epoch,
        )
        model.fit(
            images, labels, batch_size=32, epochs=3, initial_epoch=initial_epoch,
            callbacks=[callback], verbose=0, shuffle=False,
        )  # fmt: skip
        return emitted, before

    fresh, before = run(initial_epoch=0)
    assert list(fresh) == [0, 1, 2, 3]
    assert fresh[0] == before  # epoch 0 is the initialization, before any training step
    assert fresh[3]["diag/hidden_1/kernel_norm"] != fresh[0]["diag/hidden_1/kernel_norm"]

    resumed, _ = run(initial_epoch=1)
    assert list(resumed) == [2, 3]


def test_callback_rejects_a_mismatched_probe_batch():
    images, labels = probe(8)
    with pytest.raises(ValueError, match="8 images and 7 labels"):
        DiagnosticsCallback(images, labels[:7], "relu", on_measure=lambda e, v: None)


# ------------------------------------------------------------------------------------- CSV log
def test_log_writes_one_row_per_epoch_and_layer_and_reads_back(tmp_path):
    images, labels = probe(16)
    model = tiny_model("tanh")
    log = DiagnosticsLog()
    for epoch in (1, 0, 2):
        log.add(epoch, measure(model, images, labels, "tanh"))
    log.add(2, measure(model, images, labels, "tanh"))  # re-measured epoch replaces, not repeats
    target = tmp_path / "reports" / "diagnostics.csv"
    log.write(target)

    assert [p.name for p in target.parent.iterdir()] == ["diagnostics.csv"]  # no temp file left
    with target.open(newline="") as handle:
        records = list(csv.DictReader(handle))
    assert tuple(records[0]) == CSV_COLUMNS
    assert [(r["epoch"], r["layer"]) for r in records] == [
        (str(e), f"hidden_{n}") for e in (0, 1, 2) for n in (1, 2)
    ]
    assert all(r["dead_fraction"] == "" for r in records)  # not applicable to tanh: empty
    assert all(float(r["kernel_norm"]) > 0 for r in records)

    resumed = DiagnosticsLog.read(target, through_epoch=1)
    assert resumed.epochs == [0, 1]
    assert resumed.to_csv().splitlines() == target.read_text().splitlines()[:5]


def test_log_rejects_keys_that_are_not_diagnostics():
    with pytest.raises(ValueError, match="'accuracy' is not diag/<layer>/<measure>"):
        DiagnosticsLog().add(0, {"accuracy": 0.9})
