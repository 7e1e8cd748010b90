"""What the four MNIST files must hash to: the pinned SHA-256 values, an override file, a hasher.

The digests are of the decompressed files, so a gzipped and a plain mirror verify the same way.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from stages.lib.core.config import ConfigError
from stages.lib.core.paths import MNIST_FILES

# SHA-256 of each decompressed file: the canonical values other MNIST loaders pin.
CANONICAL_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
SUMS_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](\S.*)")
SUMS_FORM = "'<64 hex digits>  <file name>'"


def read_sha256sums(path: Path, label: str) -> dict[str, str]:
    """Digests from a `<sha256>  <name>` file (as `sha256sum` writes); all four names required.

    `label` starts every error message (e.g. "MLPSTUDY_MNIST_SHA256SUMS=<path>"), so the user
    sees where the path came from; the caller owns that name.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "not UTF-8 text"
        raise ConfigError(f"{label}: cannot read the SHA256SUMS file ({reason})") from None
    digests = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        match = SUMS_LINE.fullmatch(line.strip())
        if not match:
            raise ConfigError(f"{label}: line {number} is {line!r}; allowed: {SUMS_FORM}")
        digests[match[2].strip()] = match[1].lower()
    missing = [name for name in MNIST_FILES if name not in digests]
    if missing:
        raise ConfigError(f"{label}: no digest for {', '.join(missing)}; all four are required")
    return {name: digests[name] for name in MNIST_FILES}


def sha256_of(path: Path) -> str:
    """The SHA-256 (hex) of a file already on disk, read in chunks so memory stays flat."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
