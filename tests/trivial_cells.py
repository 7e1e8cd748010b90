"""Cells that take a moment and need no TensorFlow, for tests of the Dask engine alone
(tests/test_cluster.py): a worker that imports this module starts in a moment, so a test can
restart workers after every cell."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

SECONDS = 0.3


@dataclass(frozen=True)
class Cell:
    key: str


def sleep(cell: Cell, shared: Any, publish: Any) -> str:
    """The task: announce the start, wait a moment, return the key."""
    publish({"started": cell.key})
    time.sleep(SECONDS)
    return cell.key
