"""Keras's default for each setting of each type: what a named variant's omitted settings take.

The one table of defaults. It is a dep of train, so a changed default re-trains the cells that
use it; tests/test_config.py checks it against the Keras classes' own defaults. The effective
settings of a variant (`type` plus every setting) are what a cell records and builds from.
"""

from __future__ import annotations

from typing import Any

from stages.lib.core.variants import Variant

DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "activations": {
        "relu": {},
        "tanh": {},
        "sigmoid": {},
        "leaky_relu": {"negative_slope": 0.3},
        "elu": {"alpha": 1.0},
        "selu": {},
        "gelu": {},
    },
    "initializers": {
        "glorot_uniform": {},
        "glorot_normal": {},
        "he_uniform": {},
        "he_normal": {},
        "lecun_normal": {},
        "random_normal": {"stddev": 0.05},
        "truncated_normal": {"stddev": 0.05},
        "variance_scaling": {"scale": 1.0, "mode": "fan_in", "distribution": "truncated_normal"},
        "zeros": {},
    },
    "optimizers": {
        "sgd": {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False},
        "rmsprop": {"learning_rate": 0.001, "rho": 0.9, "momentum": 0.0},
        "adagrad": {"learning_rate": 0.001, "initial_accumulator_value": 0.1},
        "adam": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999},
        "adamw": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "weight_decay": 0.004},
        "nadam": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999},
    },
}


def effective(field: str, variant: Variant) -> dict[str, Any]:
    """`{"type": ..., **every setting}`: the type's defaults overridden by the given settings."""
    return {"type": variant.type, **DEFAULTS[field][variant.type], **variant.settings}
