"""Shared fixtures. Test configs start from the real params.yaml, shrunk, so they cannot drift."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from stages.lib.paths import MNIST_FILES

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REAL_MNIST = Path(os.environ.get("MLPSTUDY_REAL_MNIST", PROJECT_ROOT.parent / "shared" / "mnist"))


@pytest.fixture
def real_params_dict() -> dict[str, Any]:
    """The real params.yaml as a plain dict (a fresh copy per test, edit freely)."""
    return copy.deepcopy(yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text()))


@pytest.fixture
def real_mnist() -> Path:
    """The directory holding the four real MNIST .gz files; skips the test where it is absent."""
    if not all((REAL_MNIST / f"{name}.gz").is_file() for name in MNIST_FILES):
        pytest.skip(f"the real MNIST files are not at {REAL_MNIST} (set MLPSTUDY_REAL_MNIST)")
    return REAL_MNIST
