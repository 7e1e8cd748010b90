"""`params.yaml`, read and validated in one place into typed config objects.

Every stage calls :func:`load_params` first, so a typo, a wrong type or an out-of-range value stops
the stage before any work, with a one-line message naming the key, the value and what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from stages.lib.core.config_messages import describe
from stages.lib.core.variants import (
    Fraction,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Variant,
    check_names,
    parse_variants,
    suggest,
)

# The study's factors, in the order of a cell's key, seed last.
# Every consumer (cells, MLflow params and tags, compare, the report) iterates these.
FACTORS: tuple[str, ...] = (
    "activation",
    "initializer",
    "optimizer",
    "architecture",
    "batch_size",
    "dropout",
)
AXES: tuple[str, ...] = (*FACTORS, "seed")
# The factors whose values are names defined in a map of `train` (`optimizer` -> `optimizers`).
NAMED: dict[str, str] = {
    "activation": "activations",
    "initializer": "initializers",
    "optimizer": "optimizers",
    "architecture": "architectures",
}
# Settings of train and evaluate that say how fast the grid runs, never what a cell computes: no
# cell's configuration or evaluation record holds them, so changing one re-runs no cell.
SPEED_ONLY: tuple[str, ...] = ("parallel_cells",)


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


class DiagnosticsParams(Strict):
    enabled: bool
    probe_size: Annotated[int, Field(ge=1, le=4096)]


def _unique(values: list[Any]) -> list[Any]:
    duplicates = sorted({str(v) for v in values if values.count(v) > 1})
    if duplicates:
        raise ValueError(f"values must be unique, but {', '.join(duplicates)} appears twice")
    return values


Names = Annotated[list[str], Field(min_length=1)]
Architecture = Annotated[list[PositiveInt], Field(min_length=1)]


class TrainParams(Strict):
    # The study grid, in AXES order: one cell per combination.
    activation: Names
    initializer: Names
    optimizer: Names
    architecture: Names
    batch_size: Annotated[list[PositiveInt], Field(min_length=1)]
    dropout: Annotated[list[Fraction], Field(min_length=1)]
    seed: Annotated[list[NonNegativeInt], Field(min_length=1)]
    # Shared by every cell.
    epochs: PositiveInt
    early_stopping_patience: PositiveInt | None
    steps_per_execution: PositiveInt
    cpu_threads: NonNegativeInt
    parallel_cells: PositiveInt  # speed only: not a setting of any cell
    device: Literal["auto", "cpu", "gpu"]
    distribute: Literal["none", "mirrored"]
    diagnostics: DiagnosticsParams
    # What each name means; a cell reads the entries of its own names.
    architectures: dict[str, Architecture]
    activations: dict[str, Variant]
    initializers: dict[str, Variant]
    optimizers: dict[str, Variant]

    @field_validator(*AXES)
    @classmethod
    def _unique_values(cls, values: list[Any]) -> list[Any]:
        return _unique(values)

    @field_validator("dropout", mode="before")
    @classmethod
    def _written_as_floats(cls, values: Any) -> Any:
        for value in values if isinstance(values, list) else ():
            if isinstance(value, int) and not isinstance(value, bool):
                raise ValueError(
                    f"{value} is an integer; write it as {float(value)} (DVC names a cell by the "
                    "value as written, and train reads it as a float)"
                )
        return values

    @field_validator("architectures", mode="before")
    @classmethod
    def _architecture_names(cls, architectures: Any) -> Any:
        if isinstance(architectures, dict):
            check_names(architectures)
        return architectures

    @field_validator("activations", "initializers", "optimizers", mode="before")
    @classmethod
    def _variants(cls, variants: Any, info: ValidationInfo) -> Any:
        return parse_variants(str(info.field_name), variants)

    @model_validator(mode="after")
    def _names_defined(self) -> TrainParams:
        for factor in NAMED:
            for name in getattr(self, factor):
                undefined(self, factor, name)
        return self


def undefined(train: TrainParams, factor: str, name: str) -> None:
    """ValueError `<factor>: <name> is not defined in train.<map>; defined: ...` unless it is."""
    defined = tuple(getattr(train, NAMED[factor]))
    if name not in defined:
        raise ValueError(
            f"{factor}: {name!r} is not defined in train.{NAMED[factor]}{suggest(name, defined)}; "
            f"defined: {', '.join(defined)}"
        )


class EvaluateParams(Strict):
    batch_size: PositiveInt
    misclassified_shown: Annotated[int, Field(ge=1, le=100)]
    parallel_cells: PositiveInt  # speed only: the same files with any number of workers


class Interaction(Strict):
    """One heatmap of mean test accuracy: `rows` x `columns`, one panel per level of `panels`."""

    rows: str
    columns: str
    panels: str | None = None  # None: one panel, every other factor averaged

    @field_validator("rows", "columns", "panels")
    @classmethod
    def _an_axis(cls, value: str | None) -> str | None:
        axes = FACTORS
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


# Accuracy of guessing among MNIST's ten digits: the floor every failure rule is measured from.
CHANCE_ACCURACY = 0.10


class Tolerance(Strict):
    """Differences within +- these count as practically the same (equivalence), per outcome."""

    test_accuracy: Annotated[float, Field(gt=0, le=100)]  # points
    best_val_loss: Annotated[float, Field(gt=0)]
    generalization_gap: Annotated[float, Field(gt=0, le=100)]  # points
    epochs_to_target: Annotated[float, Field(gt=0)]  # epochs
    seconds_to_target: Annotated[float, Field(gt=0)]  # seconds


class ReportParams(Strict):
    confidence: Annotated[float, Field(gt=0, lt=1)]
    # Speed: epochs and seconds until validation accuracy first reaches this (else censored).
    target_val_accuracy: Annotated[float, Field(gt=CHANCE_ACCURACY, le=1)]
    # Failed to train: best validation accuracy below CHANCE_ACCURACY + this margin.
    failure_margin: Annotated[float, Field(ge=0, lt=1 - CHANCE_ACCURACY)]
    tolerance: Tolerance
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
        raise ConfigError(f"{path}: {describe(error, Params)}") from None
