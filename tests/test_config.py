"""params.yaml validation: a bad value stops with one line naming key, value and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from stages.cli import app
from stages.lib.core.config import AXES, FACTORS, ConfigError, load_params
from stages.lib.core.grid import Cell, grid
from stages.lib.core.keras_defaults import DEFAULTS
from stages.lib.core.variants import TYPES


def write(tmp_path: Path, params: dict[str, Any]) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_real_params_are_valid_and_the_default_grid_answers_the_question(real_params_dict):
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    cells = grid(params.train)
    assert {"relu", "tanh", "sigmoid"} <= set(params.train.activation)
    assert len(params.train.initializer) >= 2
    # Plain SGD, the classic tutorials' baseline, beside SGD with momentum and Adam (issue 20).
    assert params.train.optimizers["sgd_plain"].settings["momentum"] == 0.0
    assert {"sgd_plain", "sgd", "adam"} <= set(params.train.optimizer)
    assert len(params.train.seed) >= 3
    assert len(cells) == len({cell.key for cell in cells})
    assert cells[0].key == "-".join(str(real_params_dict["train"][axis][0]) for axis in AXES)
    assert cells[0].key == "relu-glorot_uniform-sgd_plain-base-256-0.0-0"


BAD = [
    # (edit to apply, words the message must contain)
    (
        lambda p: p["train"].update(activation=["relu", "rleu"]),
        ["train.activation", "'rleu'", "'relu'"],
    ),
    (lambda p: p["train"].update(initializer=["he_normall"]), ["'he_normall'", "'he_normal'"]),
    (lambda p: p["train"].update(optimizer=["adamm"]), ["'adamm'", "'adam'", "nadam"]),
    (lambda p: p.update(trian=p.pop("train")), ["unknown key 'trian'", "'train'"]),
    (lambda p: p["train"].update(epoch=3), ["unknown key 'train.epoch'", "'train.epochs'"]),
    (
        lambda p: p["train"]["optimizers"]["adam"].update(lerning_rate=0.1),
        [
            "train.optimizers.adam.lerning_rate: not a setting of adam",
            "(did you mean 'learning_rate'?)",
            "allowed: learning_rate, beta_1, beta_2",
        ],
    ),
    (
        lambda p: p["train"]["optimizers"].update(adam_slow={"type": "adam", "momentum": 0.9}),
        [
            "train.optimizers.adam_slow.momentum: not a setting of adam; "
            "allowed: learning_rate, beta_1, beta_2"
        ],
    ),
    (
        lambda p: p["train"]["optimizers"].update(fast={"type": "adamm"}),
        [
            "train.optimizers.fast.type: 'adamm' is not a supported type (did you mean 'adam'?)",
            "allowed types: sgd, rmsprop, adagrad, adam, adamw, nadam",
        ],
    ),
    (
        lambda p: p["train"]["optimizers"].update(fancy={"learning_rate": 0.1}),
        ["train.optimizers.fancy: 'fancy'", "without `type`, the name is the type", "adamw"],
    ),
    (
        lambda p: p["train"]["activations"]["relu"].update(alpha=1.0),
        ["train.activations.relu.alpha: not a setting of relu; allowed: none"],
    ),
    (
        lambda p: p["train"]["initializers"].update(tiny={"type": "random_normal", "stddev": -1}),
        ["train.initializers.tiny.stddev", "greater than 0", "-1"],
    ),
    (
        lambda p: p["train"]["optimizers"].update({"adam-slow": {"type": "adam"}}),
        ["train.optimizers.adam-slow", "not a valid name", "no - or ."],
    ),
    (
        lambda p: p["train"]["architectures"].update({"wide.2": [8]}),
        ["train.architectures.wide.2", "not a valid name"],
    ),
    (
        lambda p: p["train"].update(optimizer=["adam", "adam_fast"]),
        ["train.optimizer: 'adam_fast' is not defined in train.optimizers", "sgd_plain"],
    ),
    (
        lambda p: p["train"].update(architecture=["base", "huge"]),
        ["train.architecture: 'huge' is not defined in train.architectures", "defined: ", "wide"],
    ),
    (
        lambda p: p["train"]["architectures"].update(base=[256, 0]),
        ["train.architectures.base[1]", "greater than or equal to 1", "0"],
    ),
    (
        lambda p: p["train"]["architectures"].update(base=[]),
        ["train.architectures.base", "at least 1"],
    ),
    (lambda p: p["train"].update(batch_size=[0]), ["train.batch_size", "0"]),
    (lambda p: p["train"].update(batch_size=[64, 64]), ["train.batch_size", "unique", "64"]),
    (lambda p: p["train"].update(dropout=[0.0, 0.0]), ["train.dropout", "unique", "0.0"]),
    (lambda p: p["train"].update(dropout=[0]), ["train.dropout", "0 is an integer", "0.0"]),
    (lambda p: p["train"].update(dropout=[-0.1]), ["train.dropout", "-0.1"]),
    (lambda p: p["train"].update(hidden_units=[256]), ["unknown key 'train.hidden_units'"]),
    (lambda p: p["train"].update(epochs=0), ["train.epochs", "greater than or equal to 1", "0"]),
    (lambda p: p["train"].update(epochs=-3), ["train.epochs", "-3"]),
    (
        lambda p: p["train"]["optimizers"]["sgd"].update(learning_rate=0),
        ["learning_rate", "greater than 0"],
    ),
    (
        lambda p: p["train"]["optimizers"]["sgd"].update(learning_rate="0.1"),
        ["train.optimizers.sgd.learning_rate", "valid number", "'0.1'"],
    ),
    (lambda p: p["train"].update(seed=[0, 1, 1]), ["train.seed", "unique", "1"]),
    (lambda p: p["train"].update(activation=[]), ["train.activation", "at least 1"]),
    (lambda p: p["train"].update(dropout=[1.5]), ["train.dropout", "1.5"]),
    (lambda p: p["train"].update(device="tpu"), ["train.device", "'tpu'", "auto, cpu, gpu"]),
    (lambda p: p["download"].update(mirrors=["ftp://x/"]), ["download.mirrors", "ftp://x/"]),
    (
        lambda p: p["preprocess"].update(validation_size="10"),
        ["preprocess.validation_size", "'10'"],
    ),
    (
        lambda p: p["report"]["interactions"][0].update(rows="activaton"),
        ["report.interactions[0].rows", "'activaton'", "'activation'", "initializer", "optimizer"],
    ),
    (  # the seed is not a factor: a heatmap over seeds compares nothing
        lambda p: p["report"]["interactions"].append({"rows": "activation", "columns": "seed"}),
        ["report.interactions[1].columns", "'seed'", "allowed: activation"],
    ),
    (
        lambda p: p["report"]["interactions"][0].update(columns="activation"),
        ["report.interactions[0]", "different axes", "activation, activation"],
    ),
    (
        lambda p: p["report"].update(target_val_accuracy=1.5),
        ["report.target_val_accuracy", "less than or equal to 1", "1.5"],
    ),
    (  # at or below chance every cell "reaches" the target: no speed to compare
        lambda p: p["report"].update(target_val_accuracy=0.1),
        ["report.target_val_accuracy", "greater than 0.1", "0.1"],
    ),
    (lambda p: p["report"].update(failure_margin=-0.01), ["report.failure_margin", "-0.01"]),
    (
        lambda p: p["report"]["tolerance"].update(test_accuracy=0),
        ["report.tolerance.test_accuracy", "greater than 0", "0"],
    ),
    (
        lambda p: p["report"]["tolerance"].update(seconds_to_target="2s"),
        ["report.tolerance.seconds_to_target", "valid number", "'2s'"],
    ),
    (
        lambda p: p["report"]["tolerance"].update(epochs=1.0),
        ["unknown key 'report.tolerance.epochs'", "epochs_to_target"],
    ),
    (
        lambda p: p["report"]["interactions"][0].update(panel="optimizer"),
        ["unknown key 'report.interactions[0].panel'", "'report.interactions[0].panels'"],
    ),
]


@pytest.mark.parametrize(("edit", "words"), BAD)
def test_bad_params_give_one_line_messages(tmp_path, real_params_dict, edit, words):
    edit(real_params_dict)
    path = write(tmp_path, real_params_dict)
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_malformed_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: [1, 2\n")
    with pytest.raises(ConfigError, match=r"params.yaml: malformed YAML at line \d+"):
        load_params(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the parameters file"):
        load_params(tmp_path / "params.yaml")


def test_early_stopping_can_be_turned_off(tmp_path, real_params_dict):
    real_params_dict["train"]["early_stopping_patience"] = None
    assert load_params(write(tmp_path, real_params_dict)).train.early_stopping_patience is None


def test_interaction_panels_are_optional(tmp_path, real_params_dict):
    real_params_dict["report"]["interactions"] = [{"rows": "optimizer", "columns": "activation"}]
    (view,) = load_params(write(tmp_path, real_params_dict)).report.interactions
    assert view.panels is None and view.name == "interactions_optimizer_x_activation.png"
    # The axes are the grid's factors: the same names the report compares.
    assert tuple(name for name in Cell.model_fields if name != "seed") == FACTORS


def test_a_variant_keeps_only_its_given_settings_and_its_type(tmp_path, real_params_dict):
    real_params_dict["train"]["optimizers"]["adam_slow"] = {"type": "adam", "learning_rate": 1e-4}
    real_params_dict["train"]["optimizers"]["adam"] = {"beta_1": 0.8}  # no type: the name is it

    optimizers = load_params(write(tmp_path, real_params_dict)).train.optimizers

    assert (optimizers["adam_slow"].type, optimizers["adam_slow"].settings) == (
        "adam",
        {"learning_rate": 1e-4},
    )
    assert (optimizers["adam"].type, optimizers["adam"].settings) == ("adam", {"beta_1": 0.8})


def keras_default(field: str, kind: str, setting: str) -> Any:
    import keras

    if field == "optimizers":
        return keras.optimizers.get(kind).get_config()[setting]
    if field == "initializers":
        return keras.initializers.get(kind).get_config()[setting]
    layers = {"leaky_relu": keras.layers.LeakyReLU, "elu": keras.layers.ELU}
    return getattr(layers[kind](), setting)


def test_the_default_table_states_keras_own_default_of_every_setting():
    for field, types in TYPES.items():
        assert set(DEFAULTS[field]) == set(types), field
        for kind, schema in types.items():
            assert set(DEFAULTS[field][kind]) == set(schema.model_fields), (field, kind)
            for setting, value in DEFAULTS[field][kind].items():
                assert keras_default(field, kind, setting) == pytest.approx(value), (kind, setting)


@pytest.mark.parametrize("command", ["download", "preprocess", "train", "evaluate", "report"])
def test_every_stage_stops_with_exit_2_on_bad_params(tmp_path, real_params_dict, command):
    real_params_dict["train"]["epochs"] = 0
    write(tmp_path, real_params_dict)
    result = CliRunner().invoke(app, [command, "--root", str(tmp_path)])
    assert result.exit_code == 2
    assert "train.epochs" in result.output
    assert not (tmp_path / "data").exists()  # stopped before any work


def test_train_command_rejects_an_unknown_optimizer_before_training(tmp_path, real_params_dict):
    real_params_dict["train"]["optimizer"] = ["adamm"]
    write(tmp_path, real_params_dict)
    result = CliRunner().invoke(app, ["train", "--dry-run", "--root", str(tmp_path)])
    assert result.exit_code == 2
    assert "'adamm' is not defined in train.optimizers (did you mean 'adam'?)" in result.output
    assert not (tmp_path / "data").exists()  # stopped before any work
