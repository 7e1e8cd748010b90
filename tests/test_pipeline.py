"""Real `dvc repro` runs of the pipeline in a temporary git repo, on a synthetic mirror."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml
from project import TINY, dvc, dvc_json, make_project, shrink, shrunk_cell

from stages.lib.core.config import load_params
from stages.lib.core.grid import grid
from stages.lib.core.paths import MNIST_FILES, Paths
from stages.lib.training.lock_status import LockStatus

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


def train_stages(stages: set[str]) -> set[str]:
    return {stage for stage in stages if stage.startswith("train@")}


def test_the_grid_retrains_exactly_what_changed(tmp_path):
    # `dvc repro train` reproduces every train@ cell (and what they depend on): the claims are
    # about training, and evaluate/report would only double the run time.
    project, env = make_project(tmp_path, two_optimizers)
    first = dvc(project, env, "repro", "train")
    assert train_stages(ran_stages(first)) == {
        "train@relu-glorot_uniform-adam-tiny-64-0.0-0",
        "train@relu-glorot_uniform-sgd-tiny-64-0.0-0",
    }
    # Both cells, each its own stage with its own outputs and run, trained in one warm process
    # (stages/lib/training/train_client.py) that reported each cell's progress through DVC.
    service_log = Paths.at(project).train_service_log.read_text()
    assert len(re.findall(r"training process \d+ ready", service_log)) == 1, service_log
    assert re.search(r"train@relu-glorot_uniform-sgd-tiny-64-0.0-0 \[cell 2/2\] epoch 1/1: ", first)

    # Adding a value to a list trains only the new cells, and `dvc status` names exactly those.
    edit_params(project, lambda p: p["train"]["activation"].append("tanh"))
    new_cells = {
        "train@tanh-glorot_uniform-adam-tiny-64-0.0-0",
        "train@tanh-glorot_uniform-sgd-tiny-64-0.0-0",
    }
    assert train_stages(status_stages(project, env)) == new_cells
    assert train_stages(ran_stages(dvc(project, env, "repro", "train"))) == new_cells

    # Changing one optimizer's hyperparameters re-trains only the cells that use it.
    edit_params(project, lambda p: p["train"]["optimizers"]["sgd"].update(learning_rate=0.02))
    sgd_cells = {
        "train@relu-glorot_uniform-sgd-tiny-64-0.0-0",
        "train@tanh-glorot_uniform-sgd-tiny-64-0.0-0",
    }
    assert train_stages(status_stages(project, env)) == sgd_cells
    assert train_stages(ran_stages(dvc(project, env, "repro", "train"))) == sgd_cells

    # Changing a shared setting re-trains every cell.
    edit_params(project, lambda p: p["train"].update(early_stopping_patience=5))
    every_cell = new_cells | sgd_cells | {"train@relu-glorot_uniform-adam-tiny-64-0.0-0"}
    assert train_stages(status_stages(project, env)) == every_cell
    assert train_stages(ran_stages(dvc(project, env, "repro", "train"))) == every_cell
    assert train_stages(status_stages(project, env)) == set()


def many_values(params):
    """A grid whose keys hold every kind of value: variants, names, ints, floats (1e-05 too)."""
    shrink(params)
    train = params["train"]
    train["optimizers"]["adam_slow"] = {"type": "adam", "learning_rate": 1.0e-4}
    train["architectures"]["wide"] = [32]
    train.update(optimizer=["adam", "adam_slow"], architecture=["tiny", "wide"])
    train.update(batch_size=[64, 8], dropout=[0.0, 0.25, 1.0e-5], seed=[0, 10])


def test_cell_keys_are_the_stage_names_dvc_generates(tmp_path):
    project, env = make_project(tmp_path, many_values)
    cells = grid(load_params(project / "params.yaml").train)

    names = dvc(project, env, "stage", "list", "--name-only", stdout_only=True).split()

    assert [name for name in names if name.startswith("train@")] == [
        f"train@{cell.key}" for cell in cells
    ]
    assert "train@relu-glorot_uniform-adam_slow-wide-8-1e-05-10" in names
    assert len(cells) == 2 * 2 * 2 * 3 * 2


def tiny_key(**axes) -> str:
    return f"train@{shrunk_cell('relu', 'glorot_uniform', 'adam', 0, **axes).key}"


def test_new_architectures_and_batch_sizes_train_only_their_new_cells(tmp_path):
    project, env = make_project(tmp_path)
    tiny = tiny_key()
    assert train_stages(ran_stages(dvc(project, env, "repro", "train"))) == {tiny}

    # A new architecture: only its cells train; the other cells' stages did not change.
    def add_small(params):
        params["train"]["architectures"]["small"] = [8]
        params["train"]["architecture"].append("small")

    edit_params(project, add_small)
    small = tiny_key(architecture="small")
    assert train_stages(status_stages(project, env)) == {small}
    assert train_stages(ran_stages(dvc(project, env, "repro", "train"))) == {small}

    # A new batch size: only the cells with it train.
    edit_params(project, lambda p: p["train"]["batch_size"].append(32))
    batch = {tiny_key(batch_size=32), tiny_key(architecture="small", batch_size=32)}
    assert train_stages(status_stages(project, env)) == batch
    assert train_stages(ran_stages(dvc(project, env, "repro", "train"))) == batch

    # A new dropout value: only its cells are new (not trained here: the claim is the same).
    edit_params(project, lambda p: p["train"]["dropout"].append(0.5))
    dropout = {
        tiny_key(architecture=architecture, batch_size=batch_size, dropout=0.5)
        for architecture in (TINY["architecture"], "small")
        for batch_size in (TINY["batch_size"], 32)
    }
    assert train_stages(status_stages(project, env)) == dropout
    edit_params(project, lambda p: p["train"]["dropout"].pop())

    # New units for one architecture re-train only that architecture's cells.
    edit_params(project, lambda p: p["train"]["architectures"].update(small=[12]))
    assert train_stages(status_stages(project, env)) == {
        small,
        tiny_key(architecture="small", batch_size=32),
    }
    # `dvc exp show` has a column per axis (the lists, as the experiment set them).
    header = dvc(project, env, "exp", "show", "--csv", stdout_only=True).splitlines()[0]
    for axis in ("architecture", "batch_size", "dropout", "architectures.small"):
        assert f"train.{axis}" in header.split(","), header


def edit_params(project, edit) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def status_stages(project, env) -> set[str]:
    """The stages `dvc status` says are changed (its JSON output lists them as keys); the
    train cells among them are checked against what the warm process predicts from dvc.lock
    (stages/lib/training/lock_status.py) to choose the cells it trains ahead."""
    changed = set(dvc_json(project, env, "status"))
    paths = Paths.at(project)
    status = LockStatus.read(paths)
    predicted = {
        f"train@{c.key}" for c in grid(load_params(paths.params).train) if status.changed(c)
    }
    assert predicted == train_stages(changed)
    return changed
