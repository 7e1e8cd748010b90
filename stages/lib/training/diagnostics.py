"""Training diagnostics over a run: a Keras callback that measures every epoch, the CSV log, and
how a cell's training wires them up.

The measures themselves live in :mod:`stages.lib.training.probe_measures`; docs/diagnostics.md
defines them and says how to read them. The in-progress CSV lives in the cell's checkpoint
folder, so a killed worker resumes with the epochs it measured up to its last checkpoint; the
finished CSV is copied to reports/train/<key>/diagnostics.csv. With
`train.diagnostics.enabled: false` that file holds only its header, so the output exists either
way.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from stages.lib.core.atomic import write_text
from stages.lib.core.cell_config import hyperparameters
from stages.lib.training.fitting import TrainingContext
from stages.lib.training.probe_measures import MEASURES, measure, probe_indices

__all__ = [
    "CSV_COLUMNS",
    "MEASURES",
    "DiagnosticsCallback",
    "DiagnosticsLog",
    "defined",
    "measure",
    "probe_indices",
]

CSV_COLUMNS: tuple[str, ...] = ("epoch", "layer", *MEASURES)


class DiagnosticsCallback(keras.callbacks.Callback):
    """Measures the model on the probe batch at epoch 0 (fresh start only) and after each epoch.

    `on_measure(epoch, values)` receives the 1-based epoch number (0 = before any training step)
    and the `diag/<layer>/<measure>` values. A run resumed at `initial_epoch=k` already reported
    epochs 0..k before it stopped, so it reports only k+1 onwards.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        activation: str,
        on_measure: Callable[[int, dict[str, float]], None],
        initial_epoch: int = 0,
    ) -> None:
        super().__init__()
        if len(images) != len(labels) or len(images) == 0:
            raise ValueError(
                f"probe batch: {len(images)} images and {len(labels)} labels; "
                "need the same non-zero number of each"
            )
        if initial_epoch < 0:
            raise ValueError(f"initial_epoch: {initial_epoch} is not allowed; it must be >= 0")
        self.images = images
        self.labels = labels
        self.activation = activation
        self.on_measure = on_measure
        self.initial_epoch = initial_epoch

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.initial_epoch == 0:
            self._emit(0)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        # Keras numbers epochs from 0 (and from `initial_epoch` when resuming): epoch e ends e+1.
        if epoch + 1 > self.initial_epoch:
            self._emit(epoch + 1)

    def _emit(self, epoch: int) -> None:
        self.on_measure(epoch, measure(self.model, self.images, self.labels, self.activation))


def defined(values: dict[str, float]) -> dict[str, float]:
    """`values` without NaN entries, for loggers (e.g. MLflow charts) that should skip them."""
    return {key: value for key, value in values.items() if not math.isnan(value)}


class DiagnosticsLog:
    """Accumulates measured epochs and writes the tidy CSV (one row per epoch x hidden layer).

    Re-adding an epoch replaces it, so a resumed run that measures an epoch again stays tidy.
    Undefined values (NaN) are written as empty fields.
    """

    def __init__(self) -> None:
        self._epochs: dict[int, dict[str, dict[str, float]]] = {}

    def add(self, epoch: int, values: dict[str, float]) -> None:
        layers: dict[str, dict[str, float]] = {}
        for key, value in values.items():
            prefix, layer, name = _split_key(key)
            if prefix != "diag" or name not in MEASURES:
                raise ValueError(f"diagnostics key: {key!r} is not diag/<layer>/<measure>")
            layers.setdefault(layer, {})[name] = float(value)
        self._epochs[epoch] = layers

    @property
    def epochs(self) -> list[int]:
        return sorted(self._epochs)

    def values(self, epoch: int) -> dict[str, float]:
        """Epoch `epoch`'s values under the keys :meth:`add` takes (diag/<layer>/<measure>)."""
        layers = self._epochs[epoch].items()
        return {f"diag/{layer}/{name}": v for layer, row in layers for name, v in row.items()}

    def rows(self) -> list[dict[str, float | int | str]]:
        """Rows in epoch order, layers in the order they were measured (forward order)."""
        return [
            {"epoch": epoch, "layer": layer, **{name: row.get(name, math.nan) for name in MEASURES}}
            for epoch in self.epochs
            for layer, row in self._epochs[epoch].items()
        ]

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in self.rows():
            writer.writerow([_format(row[column]) for column in CSV_COLUMNS])
        return buffer.getvalue()

    def write(self, path: Path) -> None:
        """Write the CSV atomically: readers see the previous complete file or the new one."""
        write_text(path, self.to_csv())

    @classmethod
    def read(cls, path: Path, through_epoch: int | None = None) -> DiagnosticsLog:
        """A log holding the epochs of a CSV written by :meth:`write` (up to `through_epoch`).

        A resumed run reloads what it measured before it stopped, without any epoch measured
        after its last checkpoint.
        """
        log = cls()
        with Path(path).open(newline="") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
                raise ValueError(
                    f"{path}: columns {reader.fieldnames} are not {', '.join(CSV_COLUMNS)}"
                )
            for record in reader:
                epoch = int(record["epoch"])
                if through_epoch is not None and epoch > through_epoch:
                    continue
                row = {name: float(record[name]) if record[name] else math.nan for name in MEASURES}
                log._epochs.setdefault(epoch, {})[record["layer"]] = row
        return log


def _split_key(key: str) -> tuple[str, str, str]:
    parts = key.split("/")
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else ("", "", "")


def _format(value: float | int | str) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


DIAGNOSTICS_FILE = "diagnostics.csv"


def diagnostics_callbacks(context: TrainingContext) -> list[keras.callbacks.Callback]:
    """A `DiagnosticsCallback` on the cell's probe batch, or nothing when diagnostics are off."""
    setup = context.setup
    settings = setup.params.train.diagnostics
    if not settings.enabled:
        return []
    images, labels = setup.splits["train"]
    # A named variant (`lrelu_02: {type: leaky_relu, ...}`) is measured as its Keras type.
    activation_type = hyperparameters(setup.params.train, "activation", setup.cell.activation)[
        "type"
    ]
    probe = probe_indices(len(images), settings.probe_size, setup.cell.seed)
    progress = setup.checkpoint_folder / DIAGNOSTICS_FILE
    resumed = context.initial_epoch > 0 and progress.is_file()
    log = DiagnosticsLog.read(progress, context.initial_epoch) if resumed else DiagnosticsLog()

    def on_measure(epoch: int, values: dict[str, float]) -> None:
        log.add(epoch, values)
        log.write(progress)
        context.logger.add(epoch, defined(values))

    return [
        DiagnosticsCallback(
            images[probe],
            labels[probe],
            activation_type,
            on_measure,
            initial_epoch=context.initial_epoch,
        )
    ]


def publish(checkpoint_folder: Path, report_folder: Path) -> None:
    """Copy the measured diagnostics (or an empty log) to the cell's report folder."""
    progress = checkpoint_folder / DIAGNOSTICS_FILE
    log = DiagnosticsLog.read(progress) if progress.is_file() else DiagnosticsLog()
    write_text(report_folder / DIAGNOSTICS_FILE, log.to_csv())
