"""The multilayer perceptron of one grid cell: factories from config names to Keras objects.

The model takes raw uint8 images and scales them itself, so every consumer (evaluate, predict,
an MLflow pyfunc) feeds the same arrays that `data/prepared` holds. Every random initializer (and
dropout) is seeded from the cell's seed and the layer's position, so the initial weights depend on
the configuration only, never on what ran before in the process.
"""

from __future__ import annotations

import keras

from stages.lib.core.cell_config import hyperparameters
from stages.lib.core.config import TrainParams
from stages.lib.core.grid import Cell
from stages.lib.data.idx import IMAGE_SHAPE, NUM_CLASSES

LOGITS = "logits"
# Seeds of layer `index` are `SEED_STRIDE * cell_seed + index`: distinct per layer and per seed.
SEED_STRIDE = 1000


def hidden_name(index: int) -> str:
    """Name of the `index`-th hidden Dense layer (1-based), e.g. `hidden_1`."""
    return f"hidden_{index}"


def make_activation(name: str, train: TrainParams, layer_name: str) -> str | keras.layers.Layer:
    """The activation variant `name` of `train.activations`, with its effective settings.

    Parameterised activations are Keras layers used as the Dense layer's activation: they save
    and load with the model (no custom objects), and the Dense layer keeps its activation, which
    the diagnostics read from `layer.activation`.
    """
    settings = hyperparameters(train, "activation", name)
    kind = settings["type"]
    if kind == "leaky_relu":
        slope = settings["negative_slope"]
        return keras.layers.LeakyReLU(negative_slope=slope, name=f"{layer_name}_leaky_relu")
    if kind == "elu":
        return keras.layers.ELU(alpha=settings["alpha"], name=f"{layer_name}_elu")
    if kind in ("relu", "tanh", "sigmoid", "selu", "gelu"):
        return kind
    raise ValueError(f"activation: type {kind!r} is not supported")


def make_initializer(name: str, train: TrainParams, seed: int) -> keras.initializers.Initializer:
    """The kernel initializer variant `name` of `train.initializers`, seeded with `seed`."""
    settings = hyperparameters(train, "initializer", name)
    initializers = keras.initializers
    classes: dict[str, type[keras.initializers.Initializer]] = {
        "glorot_uniform": initializers.GlorotUniform,
        "glorot_normal": initializers.GlorotNormal,
        "he_uniform": initializers.HeUniform,
        "he_normal": initializers.HeNormal,
        "lecun_normal": initializers.LecunNormal,
        "random_normal": initializers.RandomNormal,
        "truncated_normal": initializers.TruncatedNormal,
        "variance_scaling": initializers.VarianceScaling,
    }
    kind, options = settings["type"], {k: v for k, v in settings.items() if k != "type"}
    if kind == "zeros":
        return initializers.Zeros()
    if kind not in classes:
        raise ValueError(f"initializer: type {kind!r} is not supported")
    return classes[kind](seed=seed, **options)


def make_optimizer(name: str, train: TrainParams) -> keras.optimizers.Optimizer:
    """The optimizer variant `name` of `train.optimizers`: its type, every setting, its name."""
    settings = hyperparameters(train, "optimizer", name)
    classes: dict[str, type[keras.optimizers.Optimizer]] = {
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
        "adagrad": keras.optimizers.Adagrad,
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "nadam": keras.optimizers.Nadam,
    }
    kind, options = settings["type"], {k: v for k, v in settings.items() if k != "type"}
    if kind not in classes:
        raise ValueError(f"optimizer: type {kind!r} is not supported")
    # An explicit name: Keras numbers unnamed optimizers per process (adam, adam_1, ...), which
    # would change the configuration that keys the cell's checkpoint.
    return classes[kind](name=name, **options)


def build_model(cell: Cell, train: TrainParams) -> keras.Model:
    """Input uint8 (28, 28) -> scale to [0, 1] -> flatten -> hidden Dense layers -> 10 logits.

    The cell's architecture gives the hidden layers; its activation and initializer apply to them,
    its dropout follows each; the logits layer always starts from Glorot-uniform, so the study
    varies only what it says it varies.
    """
    base_seed = SEED_STRIDE * cell.seed
    hidden_units = train.architectures[cell.architecture]
    inputs = keras.Input(shape=IMAGE_SHAPE, dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, dtype="float32", name="scale")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    for index, units in enumerate(hidden_units, start=1):
        name = hidden_name(index)
        x = keras.layers.Dense(
            units,
            activation=make_activation(cell.activation, train, name),
            kernel_initializer=make_initializer(cell.initializer, train, base_seed + index),
            name=name,
        )(x)
        if cell.dropout > 0:
            x = keras.layers.Dropout(cell.dropout, seed=base_seed + index, name=f"dropout_{index}")(
                x
            )
    logits_seed = base_seed + len(hidden_units) + 1
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
