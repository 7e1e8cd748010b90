"""Is the MLflow store usable? Checked before a stage creates anything in it, and its driver's
errors turned into one line naming the store and what to do (stages/lib/core/errors.py).

A tracking server must answer its health check within seconds; a sqlite store must be absent (a
new store) or a sqlite file: MLflow itself retries a file it cannot open for ~100 s, and shows a
damaged one as a traceback.
"""

from __future__ import annotations

import logging
import sqlite3
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

from stages.lib.core.errors import AGAIN, StageError, store_failure

HEALTH_TIMEOUT_SECONDS = 5.0
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every sqlite database file

# MLflow logs each database error it re-raises as a whole traceback on stderr, before the error
# reaches `store_errors` or the CLI, which say it in one line: its database logger stays quiet.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def check_server(uri: str, key: str, remedy: str = "") -> None:
    """Raise StageError naming `key` (where the URI came from) unless the server answers."""
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=HEALTH_TIMEOUT_SECONDS) as response:
            response.read()
    except (OSError, ValueError) as error:
        raise StageError(
            f"{key}: the MLflow server {uri} is not reachable ({error}){remedy}"
        ) from None


def check_sqlite_file(database: Path) -> None:
    """Raise StageError unless `database` is absent (a new store) or a sqlite file.

    Checked before MLflow opens it (see the module's docstring).
    """
    remedy = f"move it away (a new store starts empty) or restore it from a backup, {AGAIN}"
    if database.exists() and not database.is_file():
        raise StageError(f"{database}: the MLflow store is not a file (a folder?); {remedy}")
    if not database.parent.is_dir() and database.parent.exists():
        raise StageError(f"{database.parent}: not a folder, so the MLflow store cannot be there")
    if not database.is_file():
        return
    try:
        with database.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as error:
        message = f"{database}: the MLflow store cannot be read ({error.strerror})"
        raise StageError(message) from None
    if header and header != SQLITE_HEADER:
        raise StageError(f"{database}: the MLflow store is not a sqlite database; {remedy}")


@contextmanager
def store_errors(uri: str) -> Iterator[None]:
    """Errors of the store's driver (sqlite, SQLAlchemy, HTTP) as one-line StageErrors."""
    try:
        yield
    except (MlflowException, SQLAlchemyError, sqlite3.Error) as error:
        raise store_failure(error, uri) from None
