"""Stage `download`: the four MNIST IDX files into data/raw/, decompressed and verified by SHA-256.

Mirrors are tried in order: $MLPSTUDY_MNIST_MIRROR first (a URL or a directory, e.g. an offline
copy), then `download.mirrors` from params.yaml. A file lands in data/raw/ only after its
decompressed content matches the pinned digest, so every faithful mirror, gzipped or not, gives
the same bytes, and a failed or interrupted download leaves nothing behind in data/raw/.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from stages.lib.core.atomic import atomic_path
from stages.lib.core.config import ConfigError, DownloadParams
from stages.lib.core.errors import StageError
from stages.lib.core.paths import MNIST_FILES, Paths
from stages.lib.data.digests import CANONICAL_SHA256, read_sha256sums, sha256_of
from stages.lib.data.fetch import fetch_once
from stages.lib.data.mirrors import MIRROR_FORMS, FetchError, Mirror, parse_mirror

MIRROR_ENV = "MLPSTUDY_MNIST_MIRROR"
SHA256SUMS_ENV = "MLPSTUDY_MNIST_SHA256SUMS"


@dataclass(frozen=True)
class Plan:
    """What to try and what to expect: the mirrors in order and each file's digest."""

    mirrors: tuple[Mirror, ...]
    digests: dict[str, str]


def plan(cfg: DownloadParams, environ: Mapping[str, str] | None = None) -> Plan:
    """Read the environment variables (os.environ unless `environ` is given) and params."""
    environ = os.environ if environ is None else environ
    mirrors = []
    spec = environ.get(MIRROR_ENV, "").strip()
    if spec:
        mirrors.append(_environment_mirror(spec))
    for configured in cfg.mirrors:
        try:
            mirrors.append(parse_mirror(configured))
        except ValueError as error:
            raise ConfigError(f"download.mirrors: {configured!r}: {error}") from None
    sums = environ.get(SHA256SUMS_ENV, "").strip()
    if sums:
        digests = read_sha256sums(Path(sums), f"{SHA256SUMS_ENV}={Path(sums)}")
    else:
        digests = dict(CANONICAL_SHA256)
    return Plan(tuple(mirrors), digests)


def _environment_mirror(spec: str) -> Mirror:
    try:
        mirror = parse_mirror(spec)
    except ValueError as error:
        raise ConfigError(f"{MIRROR_ENV}={spec!r}: {error}") from None
    if mirror.directory is not None and not mirror.directory.is_dir():
        raise ConfigError(
            f"{MIRROR_ENV}={spec!r}: no such directory {mirror.directory}; allowed: {MIRROR_FORMS}"
        )
    return mirror


def run(
    cfg: DownloadParams,
    paths: Paths,
    environ: Mapping[str, str] | None = None,
    console: Console | None = None,
) -> dict[str, Path]:
    """Make data/raw/ hold the four verified files, fetching only those missing or damaged."""
    fetch_plan = plan(cfg, environ)
    console = console or Console(stderr=True)
    for stale in paths.raw.glob(".*.tmp"):  # left by a killed run; DVC would track them
        stale.unlink(missing_ok=True)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn())
    progress = Progress(  # CI and DVC logs (no terminal) get one line per file and no bar
        *columns,
        TransferSpeedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    landed = {}
    unreachable: dict[str, str] = {}  # mirror spec -> why it is skipped for the files that follow
    with progress:
        for name in MNIST_FILES:
            target, expected = paths.raw / name, fetch_plan.digests[name]
            if target.is_file():
                if sha256_of(target) == expected:
                    _say(console, f"{name}: already present and verified")
                    landed[name] = target
                    continue
                _say(console, f"{name}: present but its digest differs; fetching it again")
                target.unlink()
            _fetch(name, target, expected, fetch_plan.mirrors, cfg, progress, unreachable)
            landed[name] = target
    return landed


def _fetch(
    name: str,
    target: Path,
    expected: str,
    mirrors: Sequence[Mirror],
    cfg: DownloadParams,
    progress: Progress,
    unreachable: dict[str, str],
) -> None:
    """Try each mirror, retrying what may be transient, until one gives the expected content.

    A mirror that never answered (refused, unresolvable, timed out) goes into `unreachable` and
    is skipped for the next files: asking a dead host again per file would cost minutes of
    timeouts. A mirror that lacks this file or serves other content stays in play.
    """
    failures = []
    for mirror in mirrors:
        if mirror.spec in unreachable:
            skipped = f"skipped ({unreachable[mirror.spec]})"
            _say(progress.console, f"{name}: {mirror.spec} {skipped}")
            failures.append(f"{mirror.spec}: {skipped}")
            continue
        attempts = 0
        while attempts <= cfg.retries:
            attempts += 1
            try:
                with _bar(progress, name) as on_bytes, atomic_path(target) as temporary:
                    location = fetch_once(
                        mirror, name, temporary, expected, cfg.timeout_seconds, on_bytes
                    )
                _say(progress.console, f"{name}: fetched from {location} and verified")
                return
            except FetchError as caught:
                error = caught
                _say(progress.console, f"{name}: {mirror.spec} failed: {error}")
            if not error.retry:
                break
        failure = f"{error} ({attempts} attempts)" if attempts > 1 else str(error)
        if error.unreachable:
            unreachable[mirror.spec] = f"unreachable for {name} earlier in this run: {failure}"
        failures.append(f"{mirror.spec}: {failure}")
    raise StageError(f"could not fetch {name}; every mirror failed: {'; '.join(failures)}")


@contextmanager
def _bar(progress: Progress, name: str) -> Iterator[Callable[[int, int | None], None]]:
    """A progress bar for one attempt; it goes away when the attempt ends."""
    task = progress.add_task(name, total=None)
    try:
        yield lambda count, size: progress.update(task, total=size, advance=count)
    finally:
        progress.remove_task(task)


def _say(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)
