"""`mlpstudy predict`: classify digit files with a cell's exported classifier.

The order keeps mistakes cheap: the arguments, the model file and every input file are checked
first, and TensorFlow (~4 s) is imported only when all of them are fine.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stages.lib.core.config import ConfigError
from stages.lib.core.paths import Paths, display_path
from stages.lib.data.digit_files import Digits, read_digits
from stages.lib.evaluation.classifier import EXPORT_FILE, check_keras_file, load_classifier

BATCH_SIZE = 1024
MODEL_REMEDY = (
    "allowed: a classifier exported by evaluate (data/exported/<cell>/classifier.keras) "
    "or a trained model (data/models/<cell>/model.keras)"
)


def exported_cells(paths: Paths) -> list[str]:
    """Cells whose classifier evaluate has exported, sorted."""
    folder = paths.exported
    if not folder.is_dir():
        return []
    return sorted(cell.name for cell in folder.iterdir() if (cell / EXPORT_FILE).is_file())


def resolve_model(paths: Paths, cell: str | None, model: Path | None) -> tuple[Path, str]:
    """The model file to use and its name for messages; exactly one of `cell`, `model`."""
    if cell is not None and model is not None:
        raise ConfigError("--cell and --model: give one of them, not both")
    if model is not None:
        check_keras_file(model, str(model), MODEL_REMEDY)
        return model, str(model)
    cells = exported_cells(paths)
    listing = ", ".join(cells) if cells else "none yet (run `dvc repro` to evaluate the grid)"
    if cell is None:
        raise ConfigError(
            f"give --cell CELL or --model FILE; cells with an exported model: {listing}"
        )
    if cell not in cells:
        close = difflib.get_close_matches(cell, cells, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"--cell: {cell!r} has no exported model under "
            f"{display_path(paths.export_dir(cell).parent, paths.root)}{hint}; "
            f"cells with one: {listing}"
        )
    path = paths.export_dir(cell) / EXPORT_FILE
    return path, display_path(path, paths.root)


def classify(model_file: Path, name: str, images: np.ndarray) -> np.ndarray:
    """Class probabilities (N, 10). A model that outputs logits (train's model.keras) gets a
    softmax here, so either file works."""
    model = load_classifier(model_file, name, MODEL_REMEDY)
    outputs = np.asarray(model.predict(images, batch_size=BATCH_SIZE, verbose=0), np.float64)
    if not _are_probabilities(outputs):
        shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        outputs = shifted / shifted.sum(axis=1, keepdims=True)
    return outputs


def _are_probabilities(outputs: np.ndarray) -> bool:
    return bool(np.all(outputs >= 0) and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-4))


def table(digits: Digits, probabilities: np.ndarray) -> str:
    """One line per image: file, index in an IDX file ("-" for a picture), digit, probability."""
    predicted = probabilities.argmax(axis=1)
    rows = [
        (
            source,
            "-" if index is None else str(index),
            str(digit),
            f"{probabilities[row, digit]:.4f}",
        )
        for row, ((source, index), digit) in enumerate(zip(digits.sources, predicted, strict=True))
    ]
    header = ("file", "index", "digit", "probability")
    width = max([len(header[0]), *(len(row[0]) for row in rows)])
    lines = [f"{header[0]:<{width}}  {header[1]:>5}  {header[2]:>5}  {header[3]:>11}"]
    lines += [f"{f:<{width}}  {i:>5}  {d:>5}  {p:>11}" for f, i, d, p in rows]
    return "\n".join(lines)


def run(
    files: Sequence[Path],
    paths: Paths,
    cell: str | None = None,
    model: Path | None = None,
    invert: bool = False,
) -> str:
    """Check everything, classify every image of `files`, return the table to print."""
    model_file, name = resolve_model(paths, cell, model)
    digits = read_digits(files, invert)
    return table(digits, classify(model_file, name, digits.images))
