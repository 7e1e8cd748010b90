"""Real `dvc repro` runs of the pipeline in a temporary git repo, on a synthetic mirror."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml
from project import dvc, dvc_json, make_project, shrink

from stages.lib.core.paths import MNIST_FILES, Paths

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
        "train@relu-glorot_uniform-adam-0",
        "train@relu-glorot_uniform-sgd-0",
    }
    # Both cells, each its own stage with its own outputs and run, trained in one warm process
    # (stages/lib/training/train_client.py) that reported each cell's progress through DVC.
    service_log = Paths.at(project).train_service_log.read_text()
    assert len(re.findall(r"training process \d+ ready", service_log)) == 1, service_log
    assert re.search(r"train@relu-glorot_uniform-sgd-0 \[cell 2/2\] epoch 1/1: ", first)

    # Adding a value to a list trains only the new cells, and `dvc status` names exactly those.
    edit_params(project, lambda p: p["train"]["activation"].append("tanh"))
    new_cells = {"train@tanh-glorot_uniform-adam-0", "train@tanh-glorot_uniform-sgd-0"}
    assert train_stages(status_stages(project, env)) == new_cells
    assert train_stages(ran_stages(dvc(project, env, "repro", "train"))) == new_cells

    # Changing one optimizer's hyperparameters re-trains only the cells that use it.
    edit_params(project, lambda p: p["train"]["optimizers"]["sgd"].update(learning_rate=0.02))
    sgd_cells = {"train@relu-glorot_uniform-sgd-0", "train@tanh-glorot_uniform-sgd-0"}
    assert train_stages(status_stages(project, env)) == sgd_cells
    assert train_stages(ran_stages(dvc(project, env, "repro", "train"))) == sgd_cells

    # Changing a shared setting re-trains every cell.
    edit_params(project, lambda p: p["train"].update(hidden_units=[12]))
    every_cell = new_cells | sgd_cells | {"train@relu-glorot_uniform-adam-0"}
    assert train_stages(status_stages(project, env)) == every_cell
    assert train_stages(ran_stages(dvc(project, env, "repro", "train"))) == every_cell
    assert train_stages(status_stages(project, env)) == set()


def edit_params(project, edit) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def status_stages(project, env) -> set[str]:
    """The stages `dvc status` says are changed (its JSON output lists them as keys)."""
    return set(dvc_json(project, env, "status"))
