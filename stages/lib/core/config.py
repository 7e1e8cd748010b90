"""`params.yaml`, read and validated in one place into typed config objects.

Every stage calls :func:`load_params` first, so a typo, a wrong type or an out-of-range value stops
the stage before any work, with a one-line message naming the key, the value and what is allowed.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

# The supported names. The typed maps below list the hyperparameters of each.
Activation = Literal["relu", "tanh", "sigmoid", "leaky_relu", "elu", "selu", "gelu"]
Initializer = Literal[
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_normal",
    "random_normal",
    "truncated_normal",
    "variance_scaling",
    "zeros",
]
Optimizer = Literal["sgd", "rmsprop", "adagrad", "adam", "adamw", "nadam"]
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
INITIALIZERS: tuple[str, ...] = get_args(Initializer)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class ConfigError(ValueError):
    """Invalid configuration or input; the message is one line meant for the user."""


class Strict(BaseModel):
    """Unknown keys are errors, and no value is coerced from another type ("0.1" is not 0.1)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# ---------------------------------------------------------------------------------------- sections
class StudyParams(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


class DownloadParams(Strict):
    mirrors: Annotated[list[str], Field(min_length=1)]
    timeout_seconds: PositiveFloat
    retries: NonNegativeInt

    @field_validator("mirrors")
    @classmethod
    def _mirror_urls(cls, mirrors: list[str]) -> list[str]:
        for mirror in mirrors:
            if not re.match(r"^(https?|file)://", mirror):
                raise ValueError(f"{mirror!r} is not an http://, https:// or file:// URL")
        return mirrors


class PreprocessParams(Strict):
    validation_size: PositiveInt
    split_seed: NonNegativeInt
    sample_grid: Annotated[int, Field(ge=1, le=20)]


class NoHyperparameters(Strict):
    pass


class LeakyReluParams(Strict):
    negative_slope: Annotated[float, Field(gt=0, lt=1)]


class EluParams(Strict):
    alpha: PositiveFloat


class ActivationParams(Strict):
    relu: NoHyperparameters
    tanh: NoHyperparameters
    sigmoid: NoHyperparameters
    leaky_relu: LeakyReluParams
    elu: EluParams
    selu: NoHyperparameters
    gelu: NoHyperparameters


class StddevParams(Strict):
    stddev: PositiveFloat


class VarianceScalingParams(Strict):
    scale: PositiveFloat
    mode: Literal["fan_in", "fan_out", "fan_avg"]
    distribution: Literal["truncated_normal", "untruncated_normal", "uniform"]


class InitializerParams(Strict):
    glorot_uniform: NoHyperparameters
    glorot_normal: NoHyperparameters
    he_uniform: NoHyperparameters
    he_normal: NoHyperparameters
    lecun_normal: NoHyperparameters
    random_normal: StddevParams
    truncated_normal: StddevParams
    variance_scaling: VarianceScalingParams
    zeros: NoHyperparameters


class SgdParams(Strict):
    learning_rate: PositiveFloat
    momentum: Annotated[float, Field(ge=0, lt=1)]
    nesterov: bool


class RmspropParams(Strict):
    learning_rate: PositiveFloat
    rho: Annotated[float, Field(gt=0, lt=1)]
    momentum: Annotated[float, Field(ge=0, lt=1)]


class AdagradParams(Strict):
    learning_rate: PositiveFloat
    initial_accumulator_value: PositiveFloat


class AdamParams(Strict):
    learning_rate: PositiveFloat
    beta_1: Annotated[float, Field(gt=0, lt=1)]
    beta_2: Annotated[float, Field(gt=0, lt=1)]


class AdamwParams(AdamParams):
    weight_decay: NonNegativeFloat


class OptimizerParams(Strict):
    sgd: SgdParams
    rmsprop: RmspropParams
    adagrad: AdagradParams
    adam: AdamParams
    adamw: AdamwParams
    nadam: AdamParams


class DiagnosticsParams(Strict):
    enabled: bool
    probe_size: Annotated[int, Field(ge=1, le=4096)]


def _unique(values: list[Any]) -> list[Any]:
    duplicates = sorted({str(v) for v in values if values.count(v) > 1})
    if duplicates:
        raise ValueError(f"values must be unique, but {', '.join(duplicates)} appears twice")
    return values


class TrainParams(Strict):
    # The study grid: one `train@<cell>` DVC stage per combination.
    activation: Annotated[list[Activation], Field(min_length=1)]
    initializer: Annotated[list[Initializer], Field(min_length=1)]
    optimizer: Annotated[list[Optimizer], Field(min_length=1)]
    seed: Annotated[list[NonNegativeInt], Field(min_length=1)]
    # Shared by every cell.
    hidden_units: Annotated[list[PositiveInt], Field(min_length=1)]
    dropout: Fraction
    epochs: PositiveInt
    batch_size: PositiveInt
    early_stopping_patience: PositiveInt | None
    steps_per_execution: PositiveInt
    cpu_threads: NonNegativeInt
    device: Literal["auto", "cpu", "gpu"]
    distribute: Literal["none", "mirrored"]
    diagnostics: DiagnosticsParams
    # Hyperparameters of each name; a cell reads the entries of its own names.
    activations: ActivationParams
    initializers: InitializerParams
    optimizers: OptimizerParams

    @field_validator("activation", "initializer", "optimizer", "seed")
    @classmethod
    def _unique_factors(cls, values: list[Any]) -> list[Any]:
        return _unique(values)


class EvaluateParams(Strict):
    batch_size: PositiveInt
    misclassified_shown: Annotated[int, Field(ge=1, le=100)]


def grid_axes() -> tuple[str, ...]:
    """The grid's factors (every field of a cell but its seed), in the order of cell keys."""
    return tuple(name for name in Cell.model_fields if name != "seed")


class Interaction(Strict):
    """One heatmap of mean test accuracy: `rows` x `columns`, one panel per level of `panels`."""

    rows: str
    columns: str
    panels: str | None = None  # None: one panel, every other factor averaged

    @field_validator("rows", "columns", "panels")
    @classmethod
    def _an_axis(cls, value: str | None) -> str | None:
        axes = grid_axes()
        if value is not None and value not in axes:
            expected = ", ".join(repr(axis) for axis in axes)
            raise PydanticCustomError(
                "literal_error", "Input should be {expected}", {"expected": expected}
            )
        return value

    @model_validator(mode="after")
    def _distinct(self) -> Interaction:
        named = [axis for axis in (self.rows, self.columns, self.panels) if axis is not None]
        if len(set(named)) < len(named):
            raise ValueError(
                f"rows, columns and panels must be different axes (got {', '.join(named)})"
            )
        return self

    @property
    def name(self) -> str:
        """The figure's file name: interactions_<rows>_x_<columns>[_by_<panels>].png."""
        by = f"_by_{self.panels}" if self.panels else ""
        return f"interactions_{self.rows}_x_{self.columns}{by}.png"


class ReportParams(Strict):
    confidence: Annotated[float, Field(gt=0, lt=1)]
    # Heatmaps of mean test accuracy (an empty list draws none).
    interactions: list[Interaction]


class Params(Strict):
    """The whole of `params.yaml`; one section per stage plus the study's name."""

    study: StudyParams
    download: DownloadParams
    preprocess: PreprocessParams
    train: TrainParams
    evaluate: EvaluateParams
    report: ReportParams


# ------------------------------------------------------------------------------------ one grid cell
class Cell(BaseModel):
    """One combination of the study grid; `key` matches DVC's `train@<key>` matrix stage name."""

    model_config = ConfigDict(frozen=True)

    activation: Activation
    initializer: Initializer
    optimizer: Optimizer
    seed: NonNegativeInt

    @property
    def key(self) -> str:
        return f"{self.activation}-{self.initializer}-{self.optimizer}-{self.seed}"


def grid(train: TrainParams) -> list[Cell]:
    """Every cell of the study grid, in the order DVC expands the matrix."""
    return [
        Cell(activation=a, initializer=i, optimizer=o, seed=s)
        for a in train.activation
        for i in train.initializer
        for o in train.optimizer
        for s in train.seed
    ]


def make_cell(activation: str, initializer: str, optimizer: str, seed: int) -> Cell:
    """A cell from command-line values, with the same one-line errors as `params.yaml`."""
    for key, value, allowed in (
        ("activation", activation, ACTIVATIONS),
        ("initializer", initializer, INITIALIZERS),
        ("optimizer", optimizer, OPTIMIZERS),
    ):
        if value not in allowed:
            raise ConfigError(
                f"{key}: {value!r} is not supported{_suggest(value, allowed)}; "
                f"allowed: {', '.join(allowed)}"
            )
    if seed < 0:
        raise ConfigError(f"seed: {seed} is not allowed; a seed is an integer >= 0")
    return Cell(activation=activation, initializer=initializer, optimizer=optimizer, seed=seed)


# ------------------------------------------------------------------------------------------ loading
def load_params(path: Path) -> Params:
    """Read and validate `params.yaml`; raise :class:`ConfigError` with a one-line message."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the parameters file ({error.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top, got {raw!r}")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{path}: {_describe(error)}") from None


def _describe(error: ValidationError) -> str:
    """One validation error as one line: key, value, what is allowed.

    Unknown keys come first: a misspelt key also shows up as the missing key it was meant to be.
    """
    errors = error.errors(include_url=False)
    first = min(errors, key=lambda e: e["type"] != "extra_forbidden")
    loc = first["loc"]
    key = _key(loc)
    value = first.get("input")
    if first["type"] == "extra_forbidden":
        valid = _fields_at(Params, loc[:-1])
        prefix = _key(loc[:-1]) + "." if len(loc) > 1 else ""
        return (
            f"unknown key {key!r}{_suggest(str(loc[-1]), valid, prefix)}; "
            f"allowed here: {', '.join(valid)}"
        )
    if first["type"] == "missing":
        return f"missing key {key!r}; params.yaml states every setting (no hidden defaults)"
    if first["type"] == "literal_error":
        allowed = _literal_choices(first)
        return (
            f"{key}: {value!r} is not supported{_suggest(str(value), allowed)}; "
            f"allowed: {', '.join(allowed)}"
        )
    message = first["msg"].removeprefix("Value error, ")
    if isinstance(value, dict):  # a rule across keys of a section: the message names them
        return f"{key}.{message}"
    return f"{key}: {message} (got {value!r})"


def _key(loc: tuple[Any, ...]) -> str:
    """`report.interactions[0].rows`: list positions in brackets."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)[1:]


def _suggest(name: str, valid: tuple[str, ...] | list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {prefix + close[0]!r}?)" if close else ""


def _literal_choices(error: Any) -> tuple[str, ...]:
    expected = error.get("ctx", {}).get("expected", "")
    return tuple(re.findall(r"'([^']*)'", expected))


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The valid keys of the (nested) model at `loc`."""
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[str(part)].annotation
        if get_origin(annotation) is list:  # list[Model]: the keys of one item
            annotation = get_args(annotation)[0]
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
