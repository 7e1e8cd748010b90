"""The multilayer perceptron of one grid cell: factories from config names to Keras objects.

The model takes raw uint8 images and scales them itself, so every consumer (evaluate, predict,
an MLflow pyfunc) feeds the same arrays that `data/prepared` holds. Every random initializer (and
dropout) is seeded from the cell's seed and the layer's position, so the initial weights depend on
the configuration only, never on what ran before in the process.
"""

from __future__ import annotations

from typing import Any

import keras

from stages.lib.core.config import Cell, TrainParams
from stages.lib.data.idx import IMAGE_SHAPE, NUM_CLASSES

LOGITS = "logits"
# Seeds of layer `index` are `SEED_STRIDE * cell_seed + index`: distinct per layer and per seed.
SEED_STRIDE = 1000


def hidden_name(index: int) -> str:
    """Name of the `index`-th hidden Dense layer (1-based), e.g. `hidden_1`."""
    return f"hidden_{index}"


def make_activation(name: str, train: TrainParams, layer_name: str) -> str | keras.layers.Layer:
    """The activation `name` with its hyperparameters from `train.activations.<name>`.

    Parameterised activations are Keras layers used as the Dense layer's activation: they save
    and load with the model (no custom objects), and the Dense layer keeps its activation, which
    the diagnostics read from `layer.activation`.
    """
    if name == "leaky_relu":
        slope = train.activations.leaky_relu.negative_slope
        return keras.layers.LeakyReLU(negative_slope=slope, name=f"{layer_name}_leaky_relu")
    if name == "elu":
        return keras.layers.ELU(alpha=train.activations.elu.alpha, name=f"{layer_name}_elu")
    if name in ("relu", "tanh", "sigmoid", "selu", "gelu"):
        return name
    raise ValueError(f"activation: {name!r} is not supported")


def make_initializer(name: str, train: TrainParams, seed: int) -> keras.initializers.Initializer:
    """The kernel initializer `name` with `train.initializers.<name>`, seeded with `seed`."""
    settings = train.initializers
    initializers = keras.initializers
    factories: dict[str, Any] = {
        "glorot_uniform": lambda: initializers.GlorotUniform(seed=seed),
        "glorot_normal": lambda: initializers.GlorotNormal(seed=seed),
        "he_uniform": lambda: initializers.HeUniform(seed=seed),
        "he_normal": lambda: initializers.HeNormal(seed=seed),
        "lecun_normal": lambda: initializers.LecunNormal(seed=seed),
        "random_normal": lambda: initializers.RandomNormal(
            stddev=settings.random_normal.stddev, seed=seed
        ),
        "truncated_normal": lambda: initializers.TruncatedNormal(
            stddev=settings.truncated_normal.stddev, seed=seed
        ),
        "variance_scaling": lambda: initializers.VarianceScaling(
            scale=settings.variance_scaling.scale,
            mode=settings.variance_scaling.mode,
            distribution=settings.variance_scaling.distribution,
            seed=seed,
        ),
        "zeros": initializers.Zeros,
    }
    if name not in factories:
        raise ValueError(f"initializer: {name!r} is not supported")
    return factories[name]()


def make_optimizer(name: str, train: TrainParams) -> keras.optimizers.Optimizer:
    """The optimizer `name` with every hyperparameter from `train.optimizers.<name>`."""
    classes: dict[str, type[keras.optimizers.Optimizer]] = {
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
        "adagrad": keras.optimizers.Adagrad,
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "nadam": keras.optimizers.Nadam,
    }
    if name not in classes:
        raise ValueError(f"optimizer: {name!r} is not supported")
    hyperparameters = getattr(train.optimizers, name).model_dump()
    # An explicit name: Keras numbers unnamed optimizers per process (adam, adam_1, ...), which
    # would change the configuration that keys the cell's checkpoint.
    return classes[name](name=name, **hyperparameters)


def build_model(cell: Cell, train: TrainParams) -> keras.Model:
    """Input uint8 (28, 28) -> scale to [0, 1] -> flatten -> hidden Dense layers -> 10 logits.

    The cell's activation and initializer apply to the hidden layers; the logits layer always
    starts from Glorot-uniform, so the study varies only what it says it varies.
    """
    base_seed = SEED_STRIDE * cell.seed
    inputs = keras.Input(shape=IMAGE_SHAPE, dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, dtype="float32", name="scale")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    for index, units in enumerate(train.hidden_units, start=1):
        name = hidden_name(index)
        x = keras.layers.Dense(
            units,
            activation=make_activation(cell.activation, train, name),
            kernel_initializer=make_initializer(cell.initializer, train, base_seed + index),
            name=name,
        )(x)
        if train.dropout > 0:
            x = keras.layers.Dropout(
                train.dropout, seed=base_seed + index, name=f"dropout_{index}"
            )(x)
    logits_seed = base_seed + len(train.hidden_units) + 1
    outputs = keras.layers.Dense(
        NUM_CLASSES,
        kernel_initializer=keras.initializers.GlorotUniform(seed=logits_seed),
        name=LOGITS,
    )(x)
    return keras.Model(inputs, outputs, name=f"mlp-{cell.key}")


def compile_model(model: keras.Model, cell: Cell, train: TrainParams, steps_per_epoch: int) -> None:
    """Logit outputs: the loss applies the softmax itself, which is numerically stabler.

    Up to a whole epoch of steps runs per call into TensorFlow. XLA (`jit_compile`) stays off: on
    this MLP it saved at most ~10-30% of an epoch on this 2-core CPU, and not at all under load,
    while compiling cost 3-10 s per cell, more than a cell of 10-25 epochs gains.
    """
    model.compile(
        optimizer=make_optimizer(cell.optimizer, train),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        steps_per_execution=steps_per_execution(train.steps_per_execution, steps_per_epoch),
        jit_compile=False,
    )


def steps_per_execution(wanted: int, steps_per_epoch: int) -> int:
    """The largest divisor of `steps_per_epoch` up to `wanted`: an execution never straddles two
    epochs (Keras would read the next epoch's batches into this one)."""
    return max(d for d in range(1, min(wanted, steps_per_epoch) + 1) if steps_per_epoch % d == 0)
