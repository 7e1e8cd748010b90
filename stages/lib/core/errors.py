"""Failures the user can act on: the CLI prints their one-line message instead of a traceback.

`StageError` (exit code 1) is raised by the stages; bad input is `config.ConfigError` (exit 2).
A failure of the machine rather than of the input can happen anywhere, mid-run included: the
MLflow store locked, damaged, read-only, full or gone, or a disk full or read-only. `describe`
turns such an error into one line naming what failed and what to do; anything else it does not
know stays a traceback (a bug to report, not a situation to explain). This module imports no
MLflow, so the CLI stays light.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterator

AGAIN = "then run the same command (or `dvc repro`) again"

# What a store's driver says (lower case) -> what it means and what to do.
STORE_PROBLEMS = (
    (
        ("database is locked", "database table is locked"),
        "is locked by another process (a `sqlite3` shell with an open transaction, a stuck "
        f"stage or `mlflow` command); let it finish or stop it, {AGAIN}",
    ),
    (
        ("readonly database", "read-only file system"),
        "is read-only; make the file and its folder writable, or set MLFLOW_TRACKING_URI to a "
        f"writable store, {AGAIN}",
    ),
    (
        ("disk is full", "no space left"),
        f"is on a full disk; free space there (`df -h`), {AGAIN}",
    ),
    (
        ("malformed", "not a database", "file is encrypted", "no such table", "no such column"),
        "is damaged; move the file away (a new store starts empty) or restore it from a backup, "
        f"{AGAIN}",
    ),
    (
        ("unable to open database file",),
        f"cannot be opened; make sure its path is a file in a writable folder, {AGAIN}",
    ),
    (
        ("max retries exceeded", "connection refused", "failed to establish", "timed out"),
        f"did not answer; start the server, or unset MLFLOW_TRACKING_URI, {AGAIN}",
    ),
)
STORE_MODULES = ("mlflow", "sqlalchemy", "sqlite3", "requests", "urllib3")
DISK_PROBLEMS = {
    errno.ENOSPC: "the disk is full; free space there (`df -h`)",
    errno.EDQUOT: "the disk quota is used up; free space there",
    errno.EROFS: "the file system is read-only; make it writable or move the project",
    errno.EACCES: "permission denied; make it writable",
    errno.EPERM: "permission denied; make it writable",
    errno.EIO: "the disk reported an I/O error; check it",
}


class StageError(RuntimeError):
    """The stage could not do its work (e.g. every mirror failed); exit code 1."""


def describe(error: BaseException) -> str | None:
    """One line for a failure of the store or the disk (None: not one of those)."""
    if _is_store_error(error):
        return str(store_failure(error, _current_uri()))
    for link in _chain(error):
        if isinstance(link, OSError) and link.errno in DISK_PROBLEMS:
            where = f"{link.filename}: " if link.filename else ""
            return f"{where}{link.strerror}: {DISK_PROBLEMS[link.errno]}, {AGAIN}"
    return None


def store_failure(error: BaseException, uri: str) -> StageError:
    """The error a store's driver raised, as a StageError naming the store and what to do."""
    reason = _first_line(list(_chain(error))[-1])  # the driver's own words, e.g. "disk I/O error"
    lowered = " ".join(_first_line(link) for link in _chain(error)).lower()
    for needles, meaning in STORE_PROBLEMS:
        if any(needle in lowered for needle in needles):
            return StageError(f"the MLflow store {_store_name(uri)} {meaning} ({reason})")
    return StageError(f"the MLflow store {_store_name(uri)} failed ({reason}); check it, {AGAIN}")


def _is_store_error(error: BaseException) -> bool:
    return any(type(link).__module__.split(".")[0] in STORE_MODULES for link in _chain(error))


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    line = lines[0].strip() if lines else type(error).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _current_uri() -> str:
    mlflow = sys.modules.get("mlflow")
    return mlflow.get_tracking_uri() if mlflow is not None else "(unknown)"


def _store_name(uri: str) -> str:
    return uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else uri
