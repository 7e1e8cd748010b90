"""Where the MNIST files are: parse a mirror (URL or directory) and open one file on it.

Every way opening can go wrong becomes a :class:`FetchError` with one short reason ("HTTP 404",
"timed out", "connection refused", ...), so the download stage can report what each mirror did.
Only the standard library speaks HTTP here; `timeout` bounds the connection and every read, so
a server that stops sending is abandoned instead of hanging the pipeline.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlsplit
from urllib.request import Request, url2pathname, urlopen

USER_AGENT = "mlpstudy-download/1 (urllib)"
MIRROR_FORMS = "an http:// or https:// URL, a file:// URL or a directory path"


class FetchError(Exception):
    """One attempt failed; `retry` is False when trying the same mirror again cannot help.

    `unreachable` is True when the mirror itself did not answer (refused, unresolvable, timed
    out): unlike a missing or corrupt file, that will not go better for the next file.
    """

    def __init__(self, reason: str, *, retry: bool = True, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.retry = retry
        self.unreachable = unreachable


@dataclass(frozen=True)
class Mirror:
    """Where the files may be: a base URL or a directory. `spec` is what the user wrote."""

    spec: str
    base_url: str | None = None
    directory: Path | None = None


def parse_mirror(spec: str) -> Mirror:
    """A mirror from a URL or a directory path; a ValueError says what is wrong and allowed."""
    if "://" not in spec:
        return Mirror(spec, directory=Path(spec).absolute())
    parts = urlsplit(spec)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not parts.netloc:
            raise ValueError(f"the URL has no host; allowed: {MIRROR_FORMS}")
        return Mirror(spec, base_url=spec if spec.endswith("/") else spec + "/")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError("not a local absolute path; allowed: file:///absolute/path")
        return Mirror(spec, directory=Path(url2pathname(parts.path)))
    raise ValueError(f"unsupported scheme {scheme}://; allowed: {MIRROR_FORMS}")


@dataclass
class Source:
    """One file, opened on a mirror: a byte stream, gzipped or not, of known size or not."""

    stream: BinaryIO
    location: str
    compressed: bool
    size: int | None


@contextmanager
def open_source(mirror: Mirror, name: str, timeout: float) -> Iterator[Source]:
    """Open `<name>.gz`, else `<name>`, on the mirror."""
    opener = _open_in_directory if mirror.directory is not None else _open_by_http
    with opener(mirror, name, timeout) as source:
        yield source


@contextmanager
def _open_in_directory(mirror: Mirror, name: str, timeout: float) -> Iterator[Source]:
    directory = Path(mirror.directory or ".")
    if not directory.is_dir():
        raise FetchError(f"no such directory {directory}", retry=False)
    for candidate, compressed in ((f"{name}.gz", True), (name, False)):
        path = directory / candidate
        if path.is_file():
            with path.open("rb") as stream:
                yield Source(stream, str(path), compressed, path.stat().st_size)
            return
    raise FetchError(f"neither {name}.gz nor {name} in {directory}", retry=False)


@contextmanager
def _open_by_http(mirror: Mirror, name: str, timeout: float) -> Iterator[Source]:
    missing = []
    for candidate, compressed in ((f"{name}.gz", True), (name, False)):
        url = f"{mirror.base_url}{quote(candidate)}"
        try:
            response = urlopen(Request(url, headers={"User-Agent": USER_AGENT}), timeout=timeout)
        except HTTPError as error:
            error.close()
            if error.code not in (403, 404, 410):  # S3 answers 403 for a missing key
                raise FetchError(f"HTTP {error.code} {error.reason} for {candidate}") from None
            missing.append(f"HTTP {error.code} for {candidate}")
            continue
        except (OSError, http.client.HTTPException) as error:  # no HTTP answer: refused, timed out
            reason = describe_network_error(error, timeout)
            raise FetchError(reason, unreachable=True) from None
        except ValueError as error:  # http.client.InvalidURL, e.g. a bad port number
            raise FetchError(f"invalid URL {url!r} ({error})", retry=False) from None
        with response:
            length = response.headers.get("Content-Length")
            size = int(length) if length and length.isdigit() else None
            yield Source(response, url, compressed, size)
        return
    raise FetchError(f"not found ({', '.join(missing)})", retry=False)


def is_timeout(error: BaseException) -> bool:
    """Whether a failed connection or read ran out of time (the server stopped answering)."""
    return isinstance(error.reason if isinstance(error, URLError) else error, TimeoutError)


def describe_network_error(error: BaseException, timeout: float) -> str:
    """A short reason for a failed connection or read."""
    reason = error.reason if isinstance(error, URLError) else error
    if isinstance(reason, TimeoutError):
        return f"timed out (no data for {timeout:g} s)"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host ({reason.strerror})"
    if isinstance(reason, ssl.SSLError):
        return f"TLS error ({reason.reason or reason})"
    if isinstance(reason, http.client.IncompleteRead):
        return f"truncated response ({len(reason.partial)} bytes, then the connection closed)"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
    return str(reason)
