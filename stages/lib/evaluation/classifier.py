"""Keras model files of the study: checking, loading and exporting the inference classifier.

evaluate loads each cell's trained model (logits) and exports `classifier.keras` (probabilities);
`mlpstudy predict` loads that export. Both reject a wrong file with one line naming it, and the
cheap checks here run before TensorFlow is imported (~4 s), so a wrong path fails at once.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from stages.lib.core.atomic import atomic_path
from stages.lib.core.config import ConfigError
from stages.lib.data.idx import IMAGE_SHAPE, NUM_CLASSES

EXPORT_FILE = "classifier.keras"
KERAS_ENTRIES = {"config.json", "metadata.json"}  # present in every Keras 3 `.keras` archive
METADATA_ENTRY = "metadata.json"
FIXED_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry
FIXED_DATE_SAVED = "1980-01-01@00:00:00"  # Keras's own format for `date_saved`


def check_keras_file(path: Path, name: str, remedy: str) -> None:
    """Raise ConfigError unless `path` looks like a Keras 3 model file (a zip with its config).

    `name` is the path as the user knows it; `remedy` ends the message (what to do instead).
    """
    if not path.exists():
        raise ConfigError(f"{name}: no such file; {remedy}")
    if not path.is_file():
        raise ConfigError(f"{name}: is a directory, not a Keras model file; {remedy}")
    try:
        with zipfile.ZipFile(path) as archive:
            entries = set(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        entries = set()
    if not entries >= KERAS_ENTRIES:
        raise ConfigError(f"{name}: not a Keras model (a `.keras` file saved by Keras 3); {remedy}")


def load_classifier(path: Path, name: str, remedy: str) -> Any:
    """The Keras model at `path`, checked to map uint8 (N, 28, 28) images to 10 outputs.

    Loaded without compiling: inference needs no optimizer state, and loading is faster.
    """
    check_keras_file(path, name, remedy)
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a damaged archive
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise ConfigError(f"{name}: cannot load the Keras model ({first_line}); {remedy}") from None
    inputs, outputs = tuple(model.input_shape), tuple(model.output_shape)
    if inputs[1:] != IMAGE_SHAPE or outputs[1:] != (NUM_CLASSES,):
        raise ConfigError(
            f"{name}: the model maps {inputs} to {outputs}; an MNIST classifier maps "
            f"(None, {IMAGE_SHAPE[0]}, {IMAGE_SHAPE[1]}) images to (None, {NUM_CLASSES}); {remedy}"
        )
    return model


def predict_logits(model: Any, images: np.ndarray, batch_size: int) -> np.ndarray:
    """The model's outputs for `images`, `batch_size` at a time: what `model.predict` returns.

    `predict_on_batch` runs the same traced function, so the numbers are the same to the bit
    (tested; calling the model eagerly is not: unfused tanh or sigmoid differ in the last bits),
    without the `tf.data` pipeline and callbacks that `predict` builds on every call, which cost
    several times what a small model computes (issue 21).
    """
    starts = range(0, max(len(images), 1), batch_size)
    return np.concatenate([model.predict_on_batch(images[i : i + batch_size]) for i in starts])


def export_classifier(model: Any, target: Path) -> Any:
    """Save `model` (uint8 images -> logits) followed by a softmax, so it returns probabilities.

    The softmax joins the model's own graph (no nested model), and the export is not compiled, so
    the file holds the weights once and no optimizer state. Written beside `target` and renamed,
    byte-reproducible (see `repack`): the same model gives the same file, and DVC one cache object.
    """
    import keras

    probabilities = keras.layers.Softmax(name="probabilities")(model.outputs[0])
    classifier = keras.Model(model.inputs[0], probabilities, name="classifier")  # one tensor in
    target.parent.mkdir(parents=True, exist_ok=True)
    # Keras insists on a `.keras` name, so the temporary file carries one too.
    handle, saved = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".keras", dir=target.parent)
    os.close(handle)
    try:
        classifier.save(saved)
        with atomic_path(target) as temporary:
            repack(Path(saved), temporary)
    finally:
        Path(saved).unlink(missing_ok=True)
    return classifier


def repack(source: Path, target: Path) -> None:
    """Copy the `.keras` archive `source` to `target` without what changes from save to save.

    Keras stamps the save time into metadata.json (`date_saved`) and into the zip entries'
    dates; the config and the weights file are already the same for the same model. Here every
    entry gets the zip format's earliest date (1980-01-01) and `date_saved` that date too, in
    Keras's own entry order and compression. Loading never reads `date_saved`.
    """
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for entry in original.infolist():
            data = original.read(entry)
            if entry.filename == METADATA_ENTRY:
                metadata = json.loads(data)
                metadata["date_saved"] = FIXED_DATE_SAVED
                data = json.dumps(metadata).encode()
            fixed = zipfile.ZipInfo(entry.filename, date_time=FIXED_ZIP_DATE)
            fixed.compress_type = entry.compress_type
            fixed.external_attr = entry.external_attr
            copy.writestr(fixed, data)
