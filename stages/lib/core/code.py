"""Which code runs: a digest of the `stages` package, for what must not outlive an edit of it
(a warm training process, a checkpoint trained ahead)."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2]  # the `stages` package


@functools.cache
def code_digest() -> str:
    """A digest of every module of the `stages` package, names and contents: read once per
    process, so it names the code the process runs (imported at its start), however often asked."""
    code = hashlib.sha256()
    for file in sorted(PACKAGE.rglob("*.py")):
        code.update(file.relative_to(PACKAGE).as_posix().encode() + b"\0" + file.read_bytes())
    return code.hexdigest()
