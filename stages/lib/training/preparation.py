"""A cell made ready to fit: input checked, data loaded, model built and compiled, seeded.

What the stage (`stages.train.run`) and a process training the cell ahead of its stage
(`stages.train.train_ahead`) both do first, so both train exactly the same model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from stages.lib.core.cell_config import array_digest, config_digest, effective_config
from stages.lib.core.config import Params
from stages.lib.core.grid import Cell
from stages.lib.core.paths import Paths
from stages.lib.core.stopwatch import Stopwatch
from stages.lib.data.prepared import load_split
from stages.lib.training import cell_run, preflight
from stages.lib.training.batches import steps_per_epoch
from stages.lib.training.device import Placement, make_deterministic, select_device
from stages.lib.training.model import build_model, compile_model


@dataclass(frozen=True)
class Prepared:
    """A cell ready to fit: its device, data, compiled model and checkpoint folder."""

    placement: Placement
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    digests: dict[str, str]
    model: keras.Model
    config: dict[str, Any]  # the effective configuration: every setting the cell trains with
    digest: str
    folder: Path  # the checkpoint, keyed by the configuration


def prepare(params: Params, cell: Cell, paths: Paths, watch: Stopwatch) -> Prepared:
    """Check the input, load the data, build and compile the model (seeded); no MLflow yet."""
    train = params.train
    with watch("data"):
        placement = select_device(train)
        preflight.check(cell, paths)
        splits = {name: load_split(paths, name) for name in preflight.SPLITS}
        digests = {name: array_digest(*arrays) for name, arrays in splits.items()}
    with watch("model"):
        make_deterministic(cell.seed)
        with placement.scope():
            model = build_model(cell, train)
            steps = steps_per_epoch(len(splits["train"][1]), cell.batch_size)
            compile_model(model, cell, train, steps)
        config = effective_config(params, cell)
        # The checkpoint key also covers the Keras configuration the code builds from the
        # params, so a checkpoint never meets a model it does not fit (e.g. after an edit).
        digest = config_digest({**config, "keras": cell_run.keras_configuration(model)}, digests)
    folder = paths.checkpoints / digest
    return Prepared(placement, splits, digests, model, config, digest, folder)
