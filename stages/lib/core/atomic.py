"""Write files so that nothing half-written is ever left behind: temp file in place, then rename.

A stage that writes its outputs only at the end checks first, with :func:`check_writable`, that it
will be able to: a read-only `data/` should stop it before the work, not after.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stages.lib.core.config import ConfigError
from stages.lib.core.paths import display_path


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temp path beside `target`; it replaces `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as error:
        if error.filename is None:  # a failed write (e.g. a full disk) names no file: name it
            error.filename = str(target)
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target: Path, data: Any) -> None:
    write_text(target, json.dumps(data, indent=2, sort_keys=True) + "\n")


def check_writable(folder: Path, root: Path, then: str) -> None:
    """Raise ConfigError unless files can be created in `folder` (or where it will be created).

    Tries it: a temp file is created and removed in `folder`'s nearest existing ancestor. That
    holds for root too, whom permission bits do not stop but a read-only mount or a file in the
    way does. Nothing is left behind. `then` ends the message (e.g. "run `dvc repro ...` again").
    """
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    where = display_path(existing, root)
    so = "" if existing == Path(folder) else f", so {display_path(folder, root)} cannot be written"
    if not existing.is_dir():
        raise ConfigError(f"{where}: not a directory{so}; move it away, then {then}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", suffix=".tmp", dir=existing)
    except OSError as error:
        raise ConfigError(
            f"{where}: not writable ({error.strerror}){so}; make it writable, then {then}"
        ) from None
    os.close(fd)
    os.unlink(probe)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
