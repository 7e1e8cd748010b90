"""Named variants in params.yaml: the settings of each activation, initializer and optimizer type.

An entry of `train.activations`, `train.initializers` or `train.optimizers` is a named variant:
`adam_slow: {type: adam, learning_rate: 1.0e-4}`. Without `type`, the name is the type
(`adam: {beta_1: 0.8}`). A setting left out takes Keras's default for its type, which
stages/lib/core/keras_defaults.py states (a dep of train: a changed default re-trains). This module
only validates (it is plumbing, not a dep): which settings each type has and their ranges.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
OpenFraction = Annotated[float, Field(gt=0, lt=1)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]

# A name is part of DVC's stage name, of file paths and of DVC param paths (`train.optimizers.
# <name>`): no `-` (it joins the key's values) and no `.` (it separates a param path's keys).
NAME_PATTERN = r"^[a-z0-9][a-z0-9_]*$"
NAME_RULE = "lowercase letters, digits and _ (no - or .)"


class Settings(BaseModel):
    """A type's settings. Each may be left out (`None` here, never valid when given): it then
    takes Keras's default (stages/lib/core/keras_defaults.py)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NoSettings(Settings):
    pass


class LeakyRelu(Settings):
    negative_slope: OpenFraction = None


class Elu(Settings):
    alpha: PositiveFloat = None


class Stddev(Settings):
    stddev: PositiveFloat = None


class VarianceScaling(Settings):
    scale: PositiveFloat = None
    mode: Literal["fan_in", "fan_out", "fan_avg"] = None
    distribution: Literal["truncated_normal", "untruncated_normal", "uniform"] = None


class Sgd(Settings):
    learning_rate: PositiveFloat = None
    momentum: Fraction = None
    nesterov: bool = None


class Rmsprop(Settings):
    learning_rate: PositiveFloat = None
    rho: OpenFraction = None
    momentum: Fraction = None


class Adagrad(Settings):
    learning_rate: PositiveFloat = None
    initial_accumulator_value: PositiveFloat = None


class Adam(Settings):
    learning_rate: PositiveFloat = None
    beta_1: OpenFraction = None
    beta_2: OpenFraction = None


class Adamw(Adam):
    weight_decay: NonNegativeFloat = None


# The types of each map of params.yaml, and the settings of each type.
TYPES: dict[str, dict[str, type[Settings]]] = {
    "activations": {
        "relu": NoSettings,
        "tanh": NoSettings,
        "sigmoid": NoSettings,
        "leaky_relu": LeakyRelu,
        "elu": Elu,
        "selu": NoSettings,
        "gelu": NoSettings,
    },
    "initializers": {
        "glorot_uniform": NoSettings,
        "glorot_normal": NoSettings,
        "he_uniform": NoSettings,
        "he_normal": NoSettings,
        "lecun_normal": NoSettings,
        "random_normal": Stddev,
        "truncated_normal": Stddev,
        "variance_scaling": VarianceScaling,
        "zeros": NoSettings,
    },
    "optimizers": {
        "sgd": Sgd,
        "rmsprop": Rmsprop,
        "adagrad": Adagrad,
        "adam": Adam,
        "adamw": Adamw,
        "nadam": Adam,
    },
}


class Variant(BaseModel):
    """A named variant: its type and the settings params.yaml gives (the rest take defaults)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    type: str
    settings: dict[str, Any]

    @model_serializer
    def _as_written(self) -> dict[str, Any]:
        """Dumped as params.yaml writes it (`{type: adam, learning_rate: 0.1}`), so a dumped
        Params validates again."""
        return {"type": self.type, **self.settings}


def suggest(name: str, valid: tuple[str, ...] | list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {prefix + close[0]!r}?)" if close else ""


def check_names(names: Any) -> None:
    """Every key of a map is a valid name (ValueError `<name>: ...` otherwise)."""
    for name in names:
        if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
            raise ValueError(f"{name}: {name!r} is not a valid name; a name has {NAME_RULE}")


def parse_variants(field: str, raw: Any) -> Any:
    """`train.<field>` (e.g. "optimizers") as {name: Variant}; ValueError `<name>...: <problem>`.

    Anything but a mapping of mappings is returned as it is, for pydantic to reject.
    """
    types = TYPES[field]
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        return raw
    check_names(raw)
    variants = {}
    for name, entry in raw.items():
        given = dict(entry)
        kind = given.pop("type", name)
        if kind not in types:
            where = f"{name}.type" if "type" in entry else name
            what = "type" if "type" in entry else "type (without `type`, the name is the type)"
            raise ValueError(
                f"{where}: {kind!r} is not a supported {what}{suggest(str(kind), tuple(types))}; "
                f"allowed types: {', '.join(types)}"
            )
        schema = types[kind]
        for setting in given:
            if setting not in schema.model_fields:
                allowed = ", ".join(schema.model_fields) or "none (it has no settings)"
                hint = suggest(str(setting), tuple(schema.model_fields))
                raise ValueError(
                    f"{name}.{setting}: not a setting of {kind}{hint}; allowed: {allowed}"
                )
        try:
            settings = schema.model_validate(given).model_dump(exclude_unset=True)
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            setting = ".".join(str(part) for part in first["loc"])
            raise ValueError(
                f"{name}.{setting}: {first['msg']} (got {first.get('input')!r})"
            ) from None
        variants[name] = Variant(type=kind, settings=settings)
    return variants
