"""Fetch one file from one mirror: stream it, decompress it, hash it, check the digest.

Opening the file (HTTP or a directory) is `stages.lib.data.mirrors`; this module turns the opened
stream into a file on disk. Every way the transfer can go wrong becomes a :class:`FetchError`
with one short reason ("truncated gzip", "digest mismatch", ...), and `timeout` bounds every read.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from stages.lib.data.mirrors import (
    FetchError,
    Mirror,
    Source,
    describe_network_error,
    is_timeout,
    open_source,
)

CHUNK_BYTES = 1 << 16


class _Counted:
    """A read-only stream that reports how many (compressed) bytes arrive, for the progress bar."""

    def __init__(self, stream: BinaryIO, on_bytes: Callable[[int], object]) -> None:
        self._stream = stream
        self._on_bytes = on_bytes
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.count += len(data)
        self._on_bytes(len(data))
        return data


def fetch_once(
    mirror: Mirror,
    name: str,
    target: Path,
    expected: str,
    timeout: float,
    on_bytes: Callable[[int, int | None], object],
) -> str:
    """One attempt: stream `name` into `target` and verify it; return where it came from.

    `on_bytes(count, size)` is called as (compressed) bytes arrive; `size` is None if unknown.
    """
    with open_source(mirror, name, timeout) as source:
        got = stream_to(source, target, timeout, lambda count: on_bytes(count, source.size))
    if got != expected:
        reason = f"digest mismatch (got {got[:12]}…, expected {expected[:12]}…)"
        raise FetchError(reason, retry=False)  # the mirror holds other content: do not retry
    return source.location


def stream_to(
    source: Source, target: Path, timeout: float, on_bytes: Callable[[int], object]
) -> str:
    """Write the decompressed content to `target`; return its SHA-256 (hex)."""
    counted = _Counted(source.stream, on_bytes)
    reader = gzip.GzipFile(fileobj=counted, mode="rb") if source.compressed else counted
    digest = hashlib.sha256()
    with target.open("wb") as out:
        while chunk := _read(reader, timeout):
            digest.update(chunk)
            out.write(chunk)
    if source.size is not None and counted.count < source.size:
        raise FetchError(f"truncated response ({counted.count} of {source.size} bytes)")
    return digest.hexdigest()


def _read(reader: _Counted | gzip.GzipFile, timeout: float) -> bytes:
    try:
        return reader.read(CHUNK_BYTES)
    except EOFError:
        raise FetchError("truncated gzip (the data ends before the end-of-stream marker)") from None
    except gzip.BadGzipFile as error:  # also a CRC or length mismatch of the gzip member
        raise FetchError(f"corrupt gzip ({error})") from None
    except zlib.error as error:
        raise FetchError(f"corrupt gzip ({error})") from None
    except (OSError, http.client.HTTPException) as error:
        # A server that stops sending mid-file counts as unreachable (it will stall the next
        # file too); a dropped or cut-short connection is worth retrying but says less.
        reason = describe_network_error(error, timeout)
        raise FetchError(reason, unreachable=is_timeout(error)) from None
