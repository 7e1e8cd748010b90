"""params.yaml validation: a bad value stops with one line naming key, value and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from stages.cli import app
from stages.lib.core.config import ConfigError, grid, grid_axes, load_params, make_cell
from stages.lib.reporting.cell_results import FACTORS


def write(tmp_path: Path, params: dict[str, Any]) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_real_params_are_valid_and_the_default_grid_answers_the_question(real_params_dict):
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    cells = grid(params.train)
    assert {"relu", "tanh", "sigmoid"} <= set(params.train.activation)
    assert len(params.train.initializer) >= 3
    assert len(params.train.optimizer) >= 2
    assert len(params.train.seed) >= 3
    assert len(cells) == len({cell.key for cell in cells})
    assert cells[0].key == "-".join(
        str(real_params_dict["train"][factor][0])
        for factor in ("activation", "initializer", "optimizer", "seed")
    )


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
        ["'train.optimizers.adam.lerning_rate'", "'train.optimizers.adam.learning_rate'"],
    ),
    (lambda p: p["train"].update(epochs=0), ["train.epochs", "greater than or equal to 1", "0"]),
    (lambda p: p["train"].update(epochs=-3), ["train.epochs", "-3"]),
    (lambda p: p["train"].update(batch_size=0), ["train.batch_size", "0"]),
    (lambda p: p["train"].update(hidden_units=[]), ["train.hidden_units", "at least 1"]),
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
    (lambda p: p["train"].update(dropout=1.5), ["train.dropout", "1.5"]),
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
    assert grid_axes() == FACTORS


def test_command_line_cells_are_checked_like_params():
    with pytest.raises(ConfigError, match=r"'sigmod' is not supported .*'sigmoid'"):
        make_cell("sigmod", "he_normal", "adam", 0)
    with pytest.raises(ConfigError, match="seed: -1"):
        make_cell("relu", "he_normal", "adam", -1)
    assert make_cell("relu", "he_normal", "adam", 3).key == "relu-he_normal-adam-3"


@pytest.mark.parametrize("command", ["download", "preprocess", "evaluate", "report"])
def test_every_stage_stops_with_exit_2_on_bad_params(tmp_path, real_params_dict, command):
    real_params_dict["train"]["epochs"] = 0
    write(tmp_path, real_params_dict)
    result = CliRunner().invoke(app, [command, "--root", str(tmp_path)])
    assert result.exit_code == 2
    assert "train.epochs" in result.output
    assert not (tmp_path / "data").exists()  # stopped before any work


def test_train_command_rejects_an_unknown_optimizer_before_training(tmp_path, real_params_dict):
    write(tmp_path, real_params_dict)
    args = ["train", "--activation", "relu", "--initializer", "he_normal", "--optimizer", "adamm"]
    result = CliRunner().invoke(app, [*args, "--seed", "0", "--root", str(tmp_path)])
    assert result.exit_code == 2
    assert "'adamm' is not supported (did you mean 'adam'?)" in result.output
