"""The warm training process (stages/lib/training/train_client.py, train_service.py).

A cell trained by a process that trained another cell first must be bitwise the cell that a
fresh process trains; a client that goes away takes the process's training with it; a change of
code, root or device settings gets a process of its own.
"""

from __future__ import annotations

import json
import re
import time

import keras
import numpy as np
import processes
import pytest
from project import shrunk_cell, training_processes
from test_train import CELL, DROPOUT, clean_environment, make_project, read_history, train_command

from stages.lib.core.config import Params
from stages.lib.core.paths import Paths
from stages.lib.training import service_protocol, train_client

OTHER = shrunk_cell("tanh", "glorot_uniform", "sgd", 1, dropout=DROPOUT.dropout)


def weights(root, cell=CELL) -> list[np.ndarray]:
    model = keras.models.load_model(Paths.at(root).model_dir(cell.key) / "model.keras")
    return model.get_weights()


def without_times(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in rows]


def train_until_a_checkpoint(root, cell, log) -> processes.Child:
    """`mlpstudy train` of `cell` in `root`, returned once an epoch of it is checkpointed."""
    client = processes.spawn(train_command(root, cell), log=log, env=clean_environment())
    checkpoints = Paths.at(root).checkpoints
    deadline = time.monotonic() + 300
    try:
        while not list(checkpoints.glob("*/training_metadata.json")):
            assert client.process.poll() is None, client.output()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
    except BaseException:
        client.kill()
        raise
    return client


@pytest.mark.slow
def test_a_warm_process_trains_a_cell_bitwise_as_a_fresh_process(tmp_path, real_params_dict):
    warm, fresh = tmp_path / "warm", tmp_path / "fresh"
    for root in (warm, fresh):
        make_project(root, json.loads(json.dumps(real_params_dict)), n_train=1000, cell=DROPOUT)
    env = clean_environment()
    old_log = Paths.at(warm).train_service_log
    old_log.parent.mkdir()
    old_log.write_bytes(b"an earlier grid\n" * (train_client.LOG_KEEP_BYTES // 16 + 1))

    for cell in (OTHER, DROPOUT):  # DROPOUT trains second, in a process that trained OTHER
        result = processes.run(train_command(warm, cell), env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert re.search(rf"train@{cell.key} \[cell \d+/\d+\] epoch 3/3: loss ", result.stdout)
    alone = {**env, train_client.SERVICE_ENV: "off"}
    processes.run(train_command(fresh, DROPOUT), check=True, env=alone, timeout=300)

    log = Paths.at(warm).train_service_log.read_text()
    assert len(re.findall(r"training process \d+ ready", log)) == 1, log[-3000:]
    assert "an earlier grid" not in log  # past its limit, moved aside when the process started
    assert old_log.with_name(old_log.name + ".1").read_text().startswith("an earlier grid")
    for a, b in zip(weights(warm, DROPOUT), weights(fresh, DROPOUT), strict=True):
        np.testing.assert_array_equal(a, b)
    assert without_times(read_history(Paths.at(warm), DROPOUT.key)) == without_times(
        read_history(Paths.at(fresh), DROPOUT.key)
    )


@pytest.mark.slow
def test_the_training_process_ends_with_its_client_and_the_cell_resumes(tmp_path, real_params_dict):
    root = tmp_path / "project"
    cell = CELL.model_copy(update={"batch_size": 16})
    make_project(root, real_params_dict, n_train=6000, epochs=8, cell=cell)
    paths = Paths.at(root)
    client = train_until_a_checkpoint(root, cell, tmp_path / "client.log")
    try:
        assert training_processes(root)
    finally:
        client.kill()
    deadline = time.monotonic() + 30
    while training_processes(root):
        assert time.monotonic() < deadline, "the training process outlived its client"
        time.sleep(0.1)

    again = processes.run(train_command(root, cell), env=clean_environment(), timeout=300)

    assert again.returncode == 0, again.stderr[-3000:]
    first_epoch = int(re.findall(r"epoch (\d+)/8", again.stdout)[0])
    assert first_epoch > 1
    assert [int(row["epoch"]) for row in read_history(paths, cell.key)] == list(range(1, 9))


def test_each_root_code_and_device_setting_gets_its_own_process(tmp_path, real_params_dict):
    params = Params.model_validate(real_params_dict)
    here, there = Paths.at(tmp_path / "a"), Paths.at(tmp_path / "b")
    on_cpu = params.model_copy(update={"train": params.train.model_copy(update={"device": "cpu"})})

    address = service_protocol.service_address(params, here)

    assert address == service_protocol.service_address(params, here)
    assert address != service_protocol.service_address(params, there)
    assert address != service_protocol.service_address(on_cpu, here)
    assert len(service_protocol.abstract(address)) < 108  # a unix socket name's limit


def test_bad_input_fails_before_a_training_process_starts(tmp_path, real_params_dict):
    root = tmp_path / "project"
    make_project(root, real_params_dict)
    (root / "data" / "prepared" / "validation.npz").unlink()

    result = processes.run(train_command(root), env=clean_environment(), timeout=60)

    assert result.returncode == 2
    assert result.stderr == (
        "error: data/prepared/validation.npz: missing; "
        "run `dvc repro preprocess` (or `mlpstudy preprocess`) first\n"
    )
    assert not training_processes(root)
    assert not (root / ".mlpstudy").exists()
