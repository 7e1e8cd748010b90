"""Real `dvc repro` runs of the pipeline in a temporary git repo, on a synthetic mirror."""

from __future__ import annotations

import json
import re

import numpy as np
import processes
import pytest
import yaml
from project import BIN, TINY, dvc, make_project, run, shrink, shrunk_cell

from stages.lib.core.config import load_params
from stages.lib.core.grid import grid
from stages.lib.core.paths import MNIST_FILES

pytestmark = pytest.mark.slow


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def test_download_and_preprocess_reproduce_and_then_do_nothing(tmp_path):
    project, env = make_project(tmp_path)

    first = dvc(project, env, "repro", "preprocess")

    assert ran_stages(first) == {"download", "preprocess"}
    assert {p.name for p in (project / "data" / "raw").iterdir()} == set(MNIST_FILES)
    with np.load(project / "data" / "prepared" / "validation.npz") as validation:
        assert validation["images"].shape == (100, 28, 28)
        assert validation["images"].dtype == np.uint8
    stats = json.loads((project / "reports" / "preprocess" / "stats.json").read_text())
    assert stats
    assert (project / "reports" / "preprocess" / "samples.png").stat().st_size > 1000
    assert "up to date" in dvc(project, env, "status", "preprocess")

    second = dvc(project, env, "repro", "preprocess")

    assert ran_stages(second) == set()
    assert "didn't change, skipping" in second


def two_optimizers(params):
    shrink(params)
    params["train"]["optimizer"] = ["adam", "sgd"]


def trained(output: str) -> set[str]:
    """The cells a `dvc repro` trained: the stage prints `train [i/n] <key>: ...` for each."""
    return set(re.findall(r"^train \[\d+/\d+\] (\S+):", output, flags=re.M))


def planned(project, env) -> set[str]:
    """The cells `mlpstudy train --dry-run` says the next `dvc repro` will train."""
    output = run(project, env, str(BIN / "mlpstudy"), "train", "--dry-run", stdout_only=True)
    return set(re.findall(r"^  (\S+) \(", output, flags=re.M))


def model_times(project) -> dict[str, int]:
    return {
        file.parent.name: file.stat().st_mtime_ns
        for file in project.glob("data/models/*/model.keras")
    }


def test_the_grid_retrains_exactly_what_changed(tmp_path):
    # `dvc repro train` reproduces the train stage (and what it depends on): the claims are
    # about training, and evaluate/report would only double the run time.
    project, env = make_project(tmp_path, two_optimizers)
    first = dvc(project, env, "repro", "train")
    assert ran_stages(first) == {"download", "preprocess", "train"}
    both = {"relu-glorot_uniform-adam-tiny-64-0.0-0", "relu-glorot_uniform-sgd-tiny-64-0.0-0"}
    assert trained(first) == both
    # Each cell has its own outputs, and the progress names the cell, its epoch and the ETA.
    assert set(model_times(project)) == both
    assert re.search(r"^train relu-glorot_uniform-sgd-tiny-64-0.0-0 epoch 1/1: loss ", first, re.M)
    assert re.search(
        r"^train \[1/2\] \S+: 1 epoch, best val_accuracy [\d.]+ \(\d+ s\) \| ~", first, re.M
    )
    assert planned(project, env) == set()
    assert "Stage 'train' didn't change, skipping" in dvc(project, env, "repro", "train")

    # Adding a value to a list trains only the new cells, named before any of them trains.
    before = model_times(project)
    edit_params(project, lambda p: p["train"]["activation"].append("tanh"))
    new_cells = {"tanh-glorot_uniform-adam-tiny-64-0.0-0", "tanh-glorot_uniform-sgd-tiny-64-0.0-0"}
    assert planned(project, env) == new_cells
    assert trained(dvc(project, env, "repro", "train")) == new_cells
    assert {key: model_times(project)[key] for key in before} == before  # untouched

    # Changing one optimizer's hyperparameters re-trains only the cells that use it.
    edit_params(project, lambda p: p["train"]["optimizers"]["sgd"].update(learning_rate=0.02))
    sgd_cells = {"relu-glorot_uniform-sgd-tiny-64-0.0-0", "tanh-glorot_uniform-sgd-tiny-64-0.0-0"}
    assert planned(project, env) == sgd_cells
    assert trained(dvc(project, env, "repro", "train")) == sgd_cells

    # A speed-only setting re-runs the stage (DVC sees the section change) but trains nothing.
    edit_params(project, lambda p: p["train"].update(parallel_cells=1))
    assert planned(project, env) == set()
    assert trained(dvc(project, env, "repro", "train")) == set()

    # Changing a shared setting re-trains every cell.
    edit_params(project, lambda p: p["train"].update(early_stopping_patience=5))
    every_cell = new_cells | both
    assert planned(project, env) == every_cell
    assert trained(dvc(project, env, "repro", "train")) == every_cell
    assert planned(project, env) == set()


def many_values(params):
    """A grid whose keys hold every kind of value: variants, names, ints, floats (1e-05 too)."""
    shrink(params)
    train = params["train"]
    train["optimizers"]["adam_slow"] = {"type": "adam", "learning_rate": 1.0e-4}
    train["architectures"]["wide"] = [32]
    train.update(optimizer=["adam", "adam_slow"], architecture=["tiny", "wide"])
    train.update(batch_size=[64, 8], dropout=[0.0, 0.25, 1.0e-5], seed=[0, 10])


def test_cell_keys_hold_every_kind_of_value_and_the_plan_lists_them_in_grid_order(tmp_path):
    project, env = make_project(tmp_path, many_values)
    dvc(project, env, "repro", "preprocess")
    cells = grid(load_params(project / "params.yaml").train)

    output = run(project, env, str(BIN / "mlpstudy"), "train", "--dry-run", stdout_only=True)

    listed = re.findall(r"^  (\S+) \(new\)$", output, flags=re.M)
    assert listed == [cell.key for cell in cells]
    assert "relu-glorot_uniform-adam_slow-wide-8-1e-05-10" in listed
    assert len(cells) == 2 * 2 * 2 * 3 * 2
    assert f"train: {len(cells)} of {len(cells)} cells to train (0 up to date)" in output
    assert not (project / "data" / "models").exists()  # a dry run trains nothing


def tiny_key(**axes) -> str:
    return shrunk_cell("relu", "glorot_uniform", "adam", 0, **axes).key


def test_new_architectures_and_batch_sizes_train_only_their_new_cells(tmp_path):
    project, env = make_project(tmp_path)
    tiny = tiny_key()
    assert trained(dvc(project, env, "repro", "train")) == {tiny}

    # A new architecture: only its cells train.
    def add_small(params):
        params["train"]["architectures"]["small"] = [8]
        params["train"]["architecture"].append("small")

    edit_params(project, add_small)
    small = tiny_key(architecture="small")
    assert planned(project, env) == {small}
    assert trained(dvc(project, env, "repro", "train")) == {small}

    # A new batch size: only the cells with it train.
    edit_params(project, lambda p: p["train"]["batch_size"].append(32))
    batch = {tiny_key(batch_size=32), tiny_key(architecture="small", batch_size=32)}
    assert planned(project, env) == batch
    assert trained(dvc(project, env, "repro", "train")) == batch

    # A new dropout value: only its cells are new (not trained here: the claim is the same).
    edit_params(project, lambda p: p["train"]["dropout"].append(0.5))
    dropout = {
        tiny_key(architecture=architecture, batch_size=batch_size, dropout=0.5)
        for architecture in (TINY["architecture"], "small")
        for batch_size in (TINY["batch_size"], 32)
    }
    assert planned(project, env) == dropout
    edit_params(project, lambda p: p["train"]["dropout"].pop())

    # New units for one architecture re-train only that architecture's cells.
    edit_params(project, lambda p: p["train"]["architectures"].update(small=[12]))
    assert planned(project, env) == {small, tiny_key(architecture="small", batch_size=32)}
    # `dvc exp show` has a column per axis (the lists, as the experiment set them).
    header = dvc(project, env, "exp", "show", "--csv", stdout_only=True).splitlines()[0]
    for axis in ("architecture", "batch_size", "dropout", "architectures.small"):
        assert f"train.{axis}" in header.split(","), header

    # A misspelt section stops `dvc repro` with the project's one-line message, not DVC's.
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("\ntrain:", "\ntrian:"))
    result = processes.run([BIN / "dvc", "repro"], cwd=project, env=env)
    assert result.returncode != 0
    said = result.stdout + result.stderr
    assert "params.yaml: unknown key 'trian' (did you mean 'train'?)" in said, said[-3000:]
    assert "are missing" not in said


def edit_params(project, edit) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
