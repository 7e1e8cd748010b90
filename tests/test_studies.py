"""studies/: ready params files a user copies over params.yaml. Each is complete and its grid is
the size its header says.

The files use the train format with named variants and architectures (grid axes activation,
initializer, optimizer, architecture, batch_size, dropout, seed). Their structure is checked here
with any code; `load_params` accepts them once the code reads that format, and until then the
loading test is an expected failure that turns into a failure of the suite (strict) if they load
while the code still reads the old format.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT_ROOT

from stages.lib.core.config import (
    DownloadParams,
    EvaluateParams,
    PreprocessParams,
    ReportParams,
    StudyParams,
    TrainParams,
    load_params,
)
from stages.lib.core.grid import grid

STUDIES = sorted((PROJECT_ROOT / "studies").glob("*.yaml"))
AXES = ("activation", "initializer", "optimizer", "architecture", "batch_size", "dropout", "seed")
# Per-name entries each grid axis draws from.
NAMED = {
    "activation": "activations",
    "initializer": "initializers",
    "optimizer": "optimizers",
    "architecture": "architectures",
}
OLD_FORMAT = "architecture" not in TrainParams.model_fields


def header_size(path: Path) -> int:
    found = re.search(r"^# grid: (\d+) cells", path.read_text(), flags=re.MULTILINE)
    assert found, f"{path.name}: no '# grid: <n> cells' line in its header"
    return int(found.group(1))


def test_the_example_studies_are_there() -> None:
    assert {path.stem for path in STUDIES} >= {"default", "learning_rate", "depth_width"}


@pytest.mark.parametrize("path", STUDIES, ids=lambda path: path.stem)
def test_each_study_is_complete_and_its_grid_has_the_size_its_header_says(path: Path) -> None:
    raw = yaml.safe_load(path.read_text())
    real = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    assert list(raw) == list(real), "the same sections as params.yaml, in its order"
    for section, model in (
        ("study", StudyParams),
        ("download", DownloadParams),
        ("preprocess", PreprocessParams),
        ("evaluate", EvaluateParams),
        ("report", ReportParams),
    ):
        model.model_validate(raw[section])
    train = raw["train"]
    for axis in AXES:
        assert isinstance(train[axis], list) and train[axis], f"{path.name}: train.{axis}"
        assert len(set(map(str, train[axis]))) == len(train[axis]), f"{path.name}: train.{axis}"
    for axis, names in NAMED.items():
        absent = set(train[axis]) - set(train[names])
        assert not absent, f"{path.name}: train.{axis} names {absent} absent from train.{names}"
    assert math.prod(len(train[axis]) for axis in AXES) == header_size(path)
    assert raw["report"].keys() == real["report"].keys(), "every report key, as in params.yaml"


@pytest.mark.xfail(
    OLD_FORMAT, reason="studies/ use the train format of named variants and axes", strict=True
)
@pytest.mark.parametrize("path", STUDIES, ids=lambda path: path.stem)
def test_each_study_loads_with_load_params(path: Path) -> None:
    params = load_params(path)
    assert len(grid(params.train)) == header_size(path)
    if path.stem == "default":  # the default question: the grid of params.yaml
        real = load_params(PROJECT_ROOT / "params.yaml")
        assert [cell.key for cell in grid(params.train)] == [cell.key for cell in grid(real.train)]
        assert params.study == real.study
