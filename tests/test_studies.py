"""studies/: ready params files a user copies over params.yaml. Each is complete (the sections of
params.yaml, in its order), loads with load_params, and its grid is the size its header says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT_ROOT

from stages.lib.core.config import load_params
from stages.lib.core.grid import grid

STUDIES = sorted((PROJECT_ROOT / "studies").glob("*.yaml"))


def header_size(path: Path) -> int:
    found = re.search(r"^# grid: (\d+) cells", path.read_text(), flags=re.MULTILINE)
    assert found, f"{path.name}: no '# grid: <n> cells' line in its header"
    return int(found.group(1))


def test_the_example_studies_are_there() -> None:
    assert {path.stem for path in STUDIES} >= {"default", "learning_rate", "depth_width"}


@pytest.mark.parametrize("path", STUDIES, ids=lambda path: path.stem)
def test_each_study_loads_and_its_grid_has_the_size_its_header_says(path: Path) -> None:
    raw = yaml.safe_load(path.read_text())
    real = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    assert list(raw) == list(real), "the same sections as params.yaml, in its order"
    assert raw["report"].keys() == real["report"].keys(), "every report key, as in params.yaml"
    params = load_params(path)
    assert len(grid(params.train)) == header_size(path)
    if path.stem == "default":  # the default question: the grid of params.yaml
        real = load_params(PROJECT_ROOT / "params.yaml")
        assert [cell.key for cell in grid(params.train)] == [cell.key for cell in grid(real.train)]
        assert params.study == real.study
