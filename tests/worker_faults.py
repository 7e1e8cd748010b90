"""Faults injected into real Dask workers by the tests (tests/test_cluster.py), through Dask's
own `dask worker --preload tests/worker_faults.py`; $MLPSTUDY_TEST_FAULT says which:

- `crash:<cell key>`: the worker process dies (os._exit) whenever it starts training that cell;
- `<package>:<version>`: the worker reports that version of the package (version skew).
"""

from __future__ import annotations

import os

from stages.lib.cluster import engine
from stages.lib.training import cell_training


def dask_setup(worker: object) -> None:
    kind, _, value = os.environ.get("MLPSTUDY_TEST_FAULT", "").partition(":")
    if kind == "crash":
        train_cell = cell_training.train_cell

        def crash(job, splits, observers=()):
            if job.key == value:
                os._exit(3)
            return train_cell(job, splits, observers)

        cell_training.train_cell = crash
    elif kind:
        environment = engine.environment
        engine.environment = lambda stage: {**environment(stage), kind: value}
