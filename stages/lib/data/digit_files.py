"""Digit images from the user's files, for `mlpstudy predict`: PNG/JPEG pictures or IDX files.

Every file is read and checked before any model is loaded, so a wrong file costs no TensorFlow
import; each fault is one line naming the file, what was found and what is allowed.
"""

from __future__ import annotations

import gzip
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.lib.core.config import ConfigError
from stages.lib.data.idx import IMAGE_SHAPE, read_images

ALLOWED = (
    f"allowed: PNG or JPEG images of {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} pixels, or IDX image "
    "files of 28x28 uint8 images (like t10k-images-idx3-ubyte, optionally .gz)"
)
GZIP_MAGIC = b"\x1f\x8b"
IDX_PREFIX = b"\x00\x00"  # every IDX magic number starts with two zero bytes


@dataclass(frozen=True)
class Digits:
    """Images uint8 (N, 28, 28) and, per image, its file and its index in an IDX file (or None)."""

    images: np.ndarray
    sources: list[tuple[str, int | None]]


def read_digits(files: Sequence[Path], invert: bool = False) -> Digits:
    """Every image of `files`, in order; `invert` turns black-on-white scans into MNIST's look."""
    images: list[np.ndarray] = []
    sources: list[tuple[str, int | None]] = []
    for path in files:
        batch, is_idx = read_file(Path(path))
        images.append(batch)
        sources.extend((str(path), index if is_idx else None) for index in range(len(batch)))
    stacked = np.concatenate(images) if images else np.zeros((0, *IMAGE_SHAPE), np.uint8)
    return Digits(255 - stacked if invert else stacked, sources)


def read_file(path: Path) -> tuple[np.ndarray, bool]:
    """The images of one file (N, 28, 28) uint8, and whether it is an IDX file."""
    name = str(path)
    if not path.exists():
        raise ConfigError(f"{name}: no such file; {ALLOWED}")
    if not path.is_file():
        raise ConfigError(f"{name}: is a directory, not an image file; {ALLOWED}")
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as error:
        raise ConfigError(f"{name}: cannot be read ({error.strerror})") from None
    if head.startswith(GZIP_MAGIC):
        return _read_gzipped_idx(path), True
    if head.startswith(IDX_PREFIX):
        return _read_idx(path, name), True
    return _read_picture(path, name)[np.newaxis], False


def _read_idx(path: Path, name: str) -> np.ndarray:
    """An IDX images file through the strict reader of stages/lib/data/idx.py."""
    try:
        return read_images(path)
    except ConfigError as error:
        message = str(error).removeprefix(f"{path}: ")  # the reader names the file itself
        raise ConfigError(f"{name}: {message}; {ALLOWED}") from None


def _read_gzipped_idx(path: Path) -> np.ndarray:
    name = str(path)
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as error:
        raise ConfigError(f"{name}: not a readable gzip file ({error}); {ALLOWED}") from None
    if not data.startswith(IDX_PREFIX):
        raise ConfigError(f"{name}: the gzip file does not hold IDX data; {ALLOWED}")
    with tempfile.TemporaryDirectory() as folder:
        unpacked = Path(folder) / path.name.removesuffix(".gz")
        unpacked.write_bytes(data)
        return _read_idx(unpacked, name).copy()  # the array must outlive the temp file


def _read_picture(path: Path, name: str) -> np.ndarray:
    """A picture Pillow can read, checked to be 28x28 before it is decoded, as 8-bit grey."""
    from PIL import Image, UnidentifiedImageError

    try:
        picture = Image.open(path)
    except UnidentifiedImageError:
        raise ConfigError(f"{name}: not an image file Pillow can read; {ALLOWED}") from None
    with picture:
        width, height = picture.size
        if (height, width) != IMAGE_SHAPE:
            raise ConfigError(
                f"{name}: the {picture.format} image is {width}x{height} pixels "
                f"(width x height), not {IMAGE_SHAPE[1]}x{IMAGE_SHAPE[0]}; {ALLOWED}"
            )
        try:
            return np.asarray(picture.convert("L"), dtype=np.uint8)
        except (OSError, ValueError, SyntaxError) as error:  # truncated or corrupt data
            raise ConfigError(f"{name}: the image cannot be decoded ({error}); {ALLOWED}") from None
