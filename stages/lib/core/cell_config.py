"""The effective configuration of one grid cell: what its result depends on, and nothing else.

One nested dict feeds three consumers, so they cannot disagree: the MLflow run's params (flattened),
the config digest that says whether a cell's result is up to date and names its checkpoint folder
(a resumed worker must continue only the very same training), and `run.json`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from stages.lib.core.config import AXES, NAMED, Params, TrainParams, undefined
from stages.lib.core.grid import Cell
from stages.lib.core.keras_defaults import effective

# Shared train settings every cell reads (the grid lists and other names' entries are not read).
SHARED_SETTINGS: tuple[str, ...] = (
    "epochs",
    "early_stopping_patience",
    "steps_per_execution",
    "cpu_threads",
    "device",
    "distribute",
    "diagnostics",
)
# The factors named by a variant (`optimizer` -> its `type` and every setting).
VARIANTS: tuple[str, ...] = ("activation", "initializer", "optimizer")


def hyperparameters(train: TrainParams, factor: str, name: str) -> dict[str, Any]:
    """The effective settings of variant `name` of `factor`: its type and every setting."""
    undefined(train, factor, name)
    field = NAMED[factor]
    return effective(field, getattr(train, field)[name])


def effective_config(params: Params, cell: Cell) -> dict[str, Any]:
    """Axes, hidden units, shared settings and the cell's own hyperparameters, as JSON values."""
    train = params.train
    shared = train.model_dump(include=set(SHARED_SETTINGS))
    return {
        "study": params.study.name,
        **{axis: getattr(cell, axis) for axis in AXES},
        "hidden_units": list(train.architectures[cell.architecture]),
        **shared,
        "hyperparameters": {
            factor: hyperparameters(train, factor, getattr(cell, factor)) for factor in VARIANTS
        },
    }


def flat_params(config: dict[str, Any]) -> dict[str, str]:
    """MLflow params: `optimizer.learning_rate`, `diagnostics.enabled`, `hidden_units`, ...

    Hyperparameters are prefixed with their factor (`initializer.stddev`, `optimizer.type`:
    the variant `adam_slow` has type `adam`); lists stay one value
    (`hidden_units` = `[128, 64]`) because they are one setting.
    """
    flat: dict[str, str] = {}
    for key, value in config.items():
        if key == "study":
            continue
        if key == "hyperparameters":
            for factor, settings in value.items():
                for name, setting in settings.items():
                    flat[f"{factor}.{name}"] = _text(setting)
        elif isinstance(value, dict):
            for name, setting in value.items():
                flat[f"{key}.{name}"] = _text(setting)
        else:
            flat[key] = _text(value)
    return flat


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)


def array_digest(*arrays: np.ndarray) -> str:
    """SHA-256 over the arrays' dtypes, shapes and bytes: equal digests mean equal data."""
    digest = hashlib.sha256()
    for array in arrays:
        contiguous = np.ascontiguousarray(array)
        digest.update(f"{contiguous.dtype.str}{contiguous.shape}".encode())
        digest.update(memoryview(contiguous).cast("B"))
    return digest.hexdigest()


def config_digest(config: dict[str, Any], data_digests: dict[str, str]) -> str:
    """SHA-256 of the effective configuration plus the digests of the data it trains on."""
    canonical = json.dumps(
        {"config": config, "data": data_digests}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
