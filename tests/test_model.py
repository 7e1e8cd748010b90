"""The cell's model: structure, seeded initial weights, and config names mapped to Keras objects."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
from project import TINY, TINY_UNITS, shrunk_cell

from stages.lib.core.cell_config import hyperparameters
from stages.lib.core.config import Params
from stages.lib.core.variants import TYPES
from stages.lib.training.model import (
    build_model,
    compile_model,
    make_activation,
    make_initializer,
    make_optimizer,
    steps_per_execution,
)


def params_with(
    real_params_dict: dict[str, Any], hidden_units: list[int] = TINY_UNITS, **train: Any
) -> Params:
    """The real params.yaml with some train settings replaced (validated like the real file);
    the cells of shrunk_cell() build `hidden_units`."""
    real_params_dict["train"].update(train)
    real_params_dict["train"]["architectures"][TINY["architecture"]] = hidden_units
    return Params.model_validate(real_params_dict)


def kernels(model: keras.Model) -> list[np.ndarray]:
    return [np.array(weight) for weight in model.get_weights()]


def test_model_takes_uint8_images_and_gives_ten_logits_with_named_layers(real_params_dict):
    params = params_with(real_params_dict, hidden_units=[32, 16])
    model = build_model(shrunk_cell("relu", "he_normal", "adam", 0), params.train)

    assert model.inputs[0].dtype == "uint8"
    assert tuple(model.inputs[0].shape) == (None, 28, 28)
    assert tuple(model.outputs[0].shape) == (None, 10)
    names = [layer.name for layer in model.layers]
    assert names == ["image", "scale", "flatten", "hidden_1", "hidden_2", "logits"]
    assert [model.get_layer(n).units for n in ("hidden_1", "hidden_2", "logits")] == [32, 16, 10]
    assert model.get_layer("logits").activation is keras.activations.linear
    assert model.get_layer("hidden_1").activation is keras.activations.relu


def test_model_scales_pixels_itself(real_params_dict):
    params = params_with(real_params_dict, hidden_units=[8])
    model = build_model(shrunk_cell("relu", "he_normal", "adam", 0), params.train)
    scale = keras.Model(model.input, model.get_layer("scale").output)

    scaled = np.array(scale(np.full((1, 28, 28), 255, dtype=np.uint8)))

    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled, 1.0, rtol=1e-6)


def test_initial_weights_depend_only_on_the_cell(real_params_dict):
    params = params_with(real_params_dict, hidden_units=[16, 16])
    cell = shrunk_cell("tanh", "glorot_uniform", "sgd", 3)

    first = kernels(build_model(cell, params.train))
    keras.utils.set_random_seed(12345)  # global random state must not matter
    np.random.default_rng(0).random(100)
    second = kernels(build_model(cell, params.train))
    other_seed = kernels(build_model(shrunk_cell("tanh", "glorot_uniform", "sgd", 4), params.train))

    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not np.array_equal(first[0], other_seed[0])


def test_each_layer_draws_from_its_own_seed(real_params_dict):
    params = params_with(real_params_dict, hidden_units=[16, 16, 16])
    model = build_model(shrunk_cell("relu", "he_normal", "adam", 0), params.train)

    hidden_2, hidden_3 = (np.array(model.get_layer(n).kernel) for n in ("hidden_2", "hidden_3"))
    seeds = [model.get_layer(n).kernel_initializer.seed for n in ("hidden_1", "hidden_2", "logits")]

    assert not np.array_equal(hidden_2, hidden_3)
    assert len(set(seeds)) == 3


def test_parameterised_activations_take_params_and_survive_save_and_load(
    real_params_dict, tmp_path
):
    real_params_dict["train"]["activations"]["leaky_relu"]["negative_slope"] = 0.3
    real_params_dict["train"]["activations"]["elu"]["alpha"] = 0.7
    params = params_with(real_params_dict, hidden_units=[8])
    leaky = make_activation("leaky_relu", params.train, "hidden_1")
    elu = make_activation("elu", params.train, "hidden_1")
    model = build_model(shrunk_cell("leaky_relu", "he_normal", "adam", 0), params.train)
    images = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)

    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")

    assert leaky.negative_slope == pytest.approx(0.3)
    assert elu.alpha == pytest.approx(0.7)
    assert loaded.get_layer("hidden_1").activation.negative_slope == pytest.approx(0.3)
    np.testing.assert_array_equal(np.array(model(images)), np.array(loaded(images)))
    for name in ("relu", "tanh", "sigmoid", "selu", "gelu"):
        assert make_activation(name, params.train, "hidden_1") == name


def test_initializers_are_seeded_and_take_their_hyperparameters(real_params_dict):
    real_params_dict["train"]["initializers"]["random_normal"]["stddev"] = 0.2
    real_params_dict["train"]["initializers"]["variance_scaling"].update(
        scale=2.0, mode="fan_avg", distribution="uniform"
    )
    train = params_with(real_params_dict).train

    for name in TYPES["initializers"]:
        config = make_initializer(name, train, seed=7).get_config()
        assert name == "zeros" or config["seed"] == 7, name
    assert make_initializer("random_normal", train, 7).get_config()["stddev"] == 0.2
    scaling = make_initializer("variance_scaling", train, 7).get_config()
    assert scaling | {"scale": 2.0, "mode": "fan_avg", "distribution": "uniform"} == scaling
    drawn = np.array(make_initializer("random_normal", train, 7)((784, 128)))
    assert drawn.std() == pytest.approx(0.2, rel=0.05)
    assert not np.array(make_initializer("zeros", train, 7)((4, 4))).any()


def test_optimizers_take_every_hyperparameter_from_params(real_params_dict):
    real_params_dict["train"]["optimizers"]["sgd"].update(
        learning_rate=0.3, momentum=0.5, nesterov=True
    )
    real_params_dict["train"]["optimizers"]["adamw"]["weight_decay"] = 0.01
    train = params_with(real_params_dict).train

    for name in TYPES["optimizers"]:
        optimizer = make_optimizer(name, train)
        expected = hyperparameters(train, "optimizer", name)
        config = optimizer.get_config()
        for key, value in expected.items():
            if key != "type":
                assert config[key] == pytest.approx(value), (name, key)
    sgd = make_optimizer("sgd", train)
    assert (sgd.momentum, sgd.nesterov) == (pytest.approx(0.5), True)


def test_a_variant_builds_its_type_with_its_own_settings_and_keras_defaults(real_params_dict):
    real_params_dict["train"]["optimizers"].update(
        sgd_plain={"type": "sgd", "learning_rate": 0.2},
        sgd_heavy={"type": "sgd", "momentum": 0.95, "nesterov": True},
    )
    real_params_dict["train"]["initializers"]["normal_tiny"] = {"type": "random_normal"}
    real_params_dict["train"]["activations"]["leaky_steep"] = {"type": "leaky_relu"}
    train = params_with(real_params_dict).train

    plain, heavy = make_optimizer("sgd_plain", train), make_optimizer("sgd_heavy", train)

    assert isinstance(plain, keras.optimizers.SGD) and plain.name == "sgd_plain"
    assert float(plain.learning_rate) == pytest.approx(0.2)
    assert (plain.momentum, plain.nesterov) == (0.0, False)  # Keras's defaults
    assert (heavy.momentum, heavy.nesterov) == (pytest.approx(0.95), True)
    assert float(heavy.learning_rate) == pytest.approx(0.01)  # Keras's default, not sgd's 0.1
    normal = make_initializer("normal_tiny", train, 7).get_config()
    assert normal["stddev"] == pytest.approx(0.05) and normal["seed"] == 7
    leaky = make_activation("leaky_steep", train, "hidden_1")
    assert isinstance(leaky, keras.layers.LeakyReLU)
    assert leaky.negative_slope == pytest.approx(0.3)
    model = build_model(shrunk_cell("leaky_steep", "normal_tiny", "sgd_heavy", 0), train)
    compile_model(model, shrunk_cell("leaky_steep", "normal_tiny", "sgd_heavy", 0), train, 10)
    assert model.optimizer.name == "sgd_heavy"
    assert model.optimizer.momentum == pytest.approx(0.95)


def test_compile_uses_logit_loss_accuracy_and_steps_per_execution(real_params_dict):
    params = params_with(real_params_dict, hidden_units=[8], steps_per_execution=16)
    cell = shrunk_cell("relu", "he_normal", "adam", 0)
    model = build_model(cell, params.train)

    compile_model(model, cell, params.train, steps_per_epoch=96)

    assert model.loss.get_config()["from_logits"] is True
    assert model.steps_per_execution == 16
    assert isinstance(model.optimizer, keras.optimizers.Adam)


def test_steps_per_execution_is_capped_at_one_epoch_and_divides_it(real_params_dict):
    params = params_with(real_params_dict, hidden_units=[8], steps_per_execution=1000)
    cell = shrunk_cell("relu", "he_normal", "adam", 0)
    model = build_model(cell, params.train)

    compile_model(model, cell, params.train, steps_per_epoch=7)

    assert model.steps_per_execution == 7
    assert steps_per_execution(4, 10) == 2
    assert steps_per_execution(64, 196) == 49
    assert steps_per_execution(1, 10) == 1


def test_dropout_adds_seeded_dropout_layers(real_params_dict):
    params = params_with(real_params_dict, hidden_units=[8, 8])
    model = build_model(shrunk_cell("relu", "he_normal", "adam", 2, dropout=0.25), params.train)

    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]

    assert [layer.name for layer in dropouts] == ["dropout_1", "dropout_2"]
    assert all(layer.rate == 0.25 for layer in dropouts)
    assert len({layer.seed for layer in dropouts}) == 2


def test_unknown_names_are_rejected(real_params_dict):
    train = params_with(real_params_dict).train

    with pytest.raises(ValueError, match="activation"):
        make_activation("swish", train, "hidden_1")
    with pytest.raises(ValueError, match="initializer"):
        make_initializer("orthogonal", train, 0)
    with pytest.raises(ValueError, match="optimizer"):
        make_optimizer("lion", train)


def test_the_cells_architecture_gives_the_hidden_layers(real_params_dict):
    architectures = real_params_dict["train"]["architectures"]
    train = params_with(real_params_dict).train

    for name, units in architectures.items():
        model = build_model(shrunk_cell("relu", "he_normal", "adam", 0, architecture=name), train)
        hidden = [layer.units for layer in model.layers if layer.name.startswith("hidden_")]
        assert hidden == units, name
        assert not any(isinstance(layer, keras.layers.Dropout) for layer in model.layers)
