"""The download stage against real mirrors: an HTTP server on 127.0.0.1, directories, file:// URLs.

The server serves good, corrupted, truncated, missing and hanging files; every test checks what
lands in data/raw/ (only verified files, never a partial one) and what the stage reports.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from synthetic import write_mirror
from typer.testing import CliRunner

from stages import download
from stages.cli import app
from stages.lib.core.config import ConfigError, DownloadParams, load_params
from stages.lib.core.errors import StageError
from stages.lib.core.paths import MNIST_FILES, Paths
from stages.lib.data.digests import CANONICAL_SHA256, read_sha256sums

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "mnist"
TIMEOUT = 1.0  # seconds; the hanging handlers wait longer than this
HANG_BOUND = 5.0  # seconds; a hanging handler gives up by then (or at teardown)

Action = Callable[[BaseHTTPRequestHandler], None]


# ------------------------------------------------------------------------------ a real HTTP mirror
class MirrorServer:
    """An HTTP server on 127.0.0.1 serving `routes` (path -> action); anything else is a 404."""

    def __init__(self) -> None:
        self.routes: dict[str, Action] = {}
        self.requests: list[str] = []
        self.release = threading.Event()  # ends hanging handlers at teardown
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append(self.path)
                action = owner.routes.get(self.path)
                if action is None:
                    self.send_error(404)
                else:
                    action(self)

            def log_message(self, format: str, *args: object) -> None:  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True  # server_close() joins no handler thread
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, prefix: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{prefix}/"

    def publish(self, prefix: str, directory: Path, make: Callable[[bytes], Action]) -> None:
        """Serve the MNIST files of `directory` under /prefix/, each through `make(content)`."""
        for path in directory.glob("*-ubyte*"):
            self.routes[f"/{prefix}/{path.name}"] = make(path.read_bytes())

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def serve(data: bytes) -> Action:
    def action(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return action


def truncated(data: bytes) -> Action:
    """Announce the full length, send half, close the connection."""

    def action(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data[: len(data) // 2])
        handler.close_connection = True

    return action


def hanging_before_headers(release: threading.Event) -> Callable[[bytes], Action]:
    def make(data: bytes) -> Action:
        def action(handler: BaseHTTPRequestHandler) -> None:
            release.wait(HANG_BOUND)

        return action

    return make


def hanging_mid_body(release: threading.Event) -> Callable[[bytes], Action]:
    def make(data: bytes) -> Action:
        def action(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data[: len(data) // 2])
            handler.wfile.flush()
            release.wait(HANG_BOUND)

        return action

    return make


def failing_once(data: bytes) -> Action:
    """Truncated on the first request, good afterwards: a transient failure."""
    calls = []

    def action(handler: BaseHTTPRequestHandler) -> None:
        calls.append(1)
        (truncated if len(calls) == 1 else serve)(data)(handler)

    return action


def flip(data: bytes, position: int | None = None) -> bytes:
    changed = bytearray(data)
    changed[len(data) // 2 if position is None else position] ^= 0xFF
    return bytes(changed)


def content_flipped(data: bytes) -> Action:
    """A valid gzip of different content: only the digest check can catch it."""
    return serve(gzip.compress(flip(gzip.decompress(data)), mtime=0))


def gzip_flipped(data: bytes) -> Action:
    return serve(flip(data))


# ----------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def server() -> Iterator[MirrorServer]:
    mirror_server = MirrorServer()
    yield mirror_server
    mirror_server.close()


@pytest.fixture
def mirror(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A synthetic gzipped mirror directory and the digests of its decompressed files."""
    directory = tmp_path / "mirror"
    return directory, write_mirror(directory, n_train=60, n_test=20)


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths.at(tmp_path / "project")


def config(mirrors: list[str], retries: int = 0) -> DownloadParams:
    """The real params.yaml's download section with test mirrors and a short timeout."""
    real = load_params(ROOT / "params.yaml").download
    return real.model_copy(
        update={"mirrors": mirrors, "timeout_seconds": TIMEOUT, "retries": retries}
    )


def environ(mirror_dir: Path, mirror_spec: str | None = None) -> dict[str, str]:
    """Environment with the synthetic digests (and optionally an extra mirror)."""
    env = {download.SHA256SUMS_ENV: str(mirror_dir / "SHA256SUMS")}
    if mirror_spec is not None:
        env[download.MIRROR_ENV] = mirror_spec
    return env


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def said(console: Console) -> str:
    stream = console.file
    assert isinstance(stream, io.StringIO)
    return stream.getvalue()


def assert_verified(paths: Paths, digests: dict[str, str]) -> None:
    assert sorted(p.name for p in paths.raw.iterdir()) == sorted(MNIST_FILES)  # no temp files
    for name in MNIST_FILES:
        assert hashlib.sha256((paths.raw / name).read_bytes()).hexdigest() == digests[name]


def refused_url() -> str:
    """A URL on a port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


# ----------------------------------------------------------------------------------------- fallback
def test_corrupt_first_mirror_then_good_one(server, mirror, paths):
    directory, digests = mirror
    server.publish("corrupt", directory, content_flipped)
    server.publish("good", directory, serve)
    console = quiet()

    landed = download.run(
        config([server.url("corrupt"), server.url("good")]), paths, environ(directory), console
    )

    assert landed == {name: paths.raw / name for name in MNIST_FILES}
    assert_verified(paths, digests)
    assert all(f"/corrupt/{name}.gz" in server.requests for name in MNIST_FILES)
    assert said(console).count("digest mismatch") == len(MNIST_FILES)


BAD_FILE = "t10k-images-idx3-ubyte"


@pytest.mark.parametrize(
    ("route", "make", "reason"),
    [
        (f"{BAD_FILE}.gz", lambda release: content_flipped, "digest mismatch"),
        (f"{BAD_FILE}.gz", lambda release: gzip_flipped, "corrupt gzip"),
        (f"{BAD_FILE}.gz", lambda release: truncated, "truncated gzip"),
        (BAD_FILE, lambda release: truncated, "truncated response"),
        (f"{BAD_FILE}.gz", hanging_before_headers, "timed out"),
        (f"{BAD_FILE}.gz", hanging_mid_body, "timed out"),
    ],
    ids=["content", "gzip-byte", "truncated-gz", "truncated-raw", "hang-headers", "hang-body"],
)
def test_bad_file_is_abandoned_for_the_next_mirror(server, mirror, paths, route, make, reason):
    directory, digests = mirror
    raw_dir = directory.parent / "raw-mirror"
    write_mirror(raw_dir, n_train=60, n_test=20, gz=False)  # same content, not compressed
    source = directory if route.endswith(".gz") else raw_dir
    server.routes[f"/bad/{route}"] = make(server.release)((source / route).read_bytes())
    server.publish("good", directory, serve)
    console = quiet()

    download.run(
        config([server.url("bad"), server.url("good")]), paths, environ(directory), console
    )

    assert_verified(paths, digests)
    assert f"/bad/{route}" in server.requests
    assert f"{BAD_FILE}: {server.url('bad')} failed: {reason}" in said(console)


def test_every_mirror_failing_names_each_and_leaves_nothing(server, mirror, paths):
    directory, digests = mirror
    server.publish("corrupt", directory, content_flipped)
    server.publish("truncated", directory, truncated)
    server.publish("hanging", directory, hanging_before_headers(server.release))
    refused = refused_url()
    mirrors = [
        server.url("missing"),
        server.url("corrupt"),
        server.url("truncated"),
        server.url("hanging"),
        refused,
    ]

    with pytest.raises(StageError) as caught:
        download.run(config(mirrors), paths, environ(directory), quiet())

    first, expected = MNIST_FILES[0], digests[MNIST_FILES[0]]
    message = str(caught.value)
    assert f"could not fetch {first}" in message
    for url, reason in [
        (server.url("missing"), f"not found (HTTP 404 for {first}.gz, HTTP 404 for {first})"),
        (server.url("corrupt"), "digest mismatch (got "),
        (server.url("truncated"), "truncated gzip"),
        (server.url("hanging"), f"timed out (no data for {TIMEOUT:g} s)"),
        (refused, "connection refused"),
    ]:
        assert f"{url}: {reason}" in message
    assert f"expected {expected[:12]}" in message
    assert "\n" not in message
    assert not paths.raw.exists() or list(paths.raw.iterdir()) == []


@pytest.mark.parametrize("retries", [0, 1])
def test_retries_ride_out_a_transient_failure(server, mirror, paths, retries):
    directory, digests = mirror
    server.publish("flaky", directory, failing_once)
    cfg = config([server.url("flaky")], retries=retries)

    if retries == 0:
        with pytest.raises(StageError, match="truncated gzip"):
            download.run(cfg, paths, environ(directory), quiet())
    else:
        download.run(cfg, paths, environ(directory), quiet())
        assert_verified(paths, digests)


def test_missing_file_is_not_retried(server, mirror, paths):
    directory, _ = mirror

    with pytest.raises(StageError, match="not found"):
        download.run(config([server.url("empty")], retries=3), paths, environ(directory), quiet())

    assert server.requests == [f"/empty/{MNIST_FILES[0]}.gz", f"/empty/{MNIST_FILES[0]}"]


# ------------------------------------------------------------------------------ unreachable mirrors
def unreachable_mirror(server: MirrorServer, directory: Path, kind: str) -> str:
    """A mirror that never delivers: it hangs (before headers or mid-body) or refuses."""
    if kind == "refused":
        return refused_url()
    hang = hanging_before_headers if kind == "hang-headers" else hanging_mid_body
    server.publish(kind, directory, hang(server.release))
    return server.url(kind)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("hang-headers", f"timed out (no data for {TIMEOUT:g} s)"),
        ("hang-body", f"timed out (no data for {TIMEOUT:g} s)"),
        ("refused", "connection refused"),
    ],
)
def test_unreachable_mirror_is_skipped_for_the_following_files(server, mirror, paths, kind, reason):
    directory, digests = mirror
    dead = unreachable_mirror(server, directory, kind)
    server.publish("sparse", directory, serve)  # everything but the first file: a 404 for it
    first, *later = MNIST_FILES
    del server.routes[f"/sparse/{first}.gz"]
    server.publish("good", directory, serve)
    console = quiet()

    download.run(
        config([dead, server.url("sparse"), server.url("good")], retries=1),
        paths,
        environ(directory),
        console,
    )

    assert_verified(paths, digests)
    log = said(console)
    assert log.count(f"{dead} failed: {reason}") == 2  # both attempts, for the first file only
    if kind != "refused":
        assert [r for r in server.requests if r.startswith(f"/{kind}/")] == [
            f"/{kind}/{first}.gz"
        ] * 2
    for name in later:
        skipped = f"unreachable for {first} earlier in this run: {reason} (2 attempts)"
        assert f"{name}: {dead} skipped ({skipped})" in log
    # the mirror that lacked the first file (a 404) was still asked for every later one
    assert [r for r in server.requests if r.startswith("/sparse/")] == [
        f"/sparse/{first}.gz",
        f"/sparse/{first}",
        *(f"/sparse/{name}.gz" for name in later),
    ]
    assert [r for r in server.requests if r.startswith("/good/")] == [f"/good/{first}.gz"]


def test_skipped_mirror_is_named_when_every_mirror_fails(server, mirror, paths):
    directory, _ = mirror
    dead = unreachable_mirror(server, directory, "hang-headers")
    first, second = MNIST_FILES[:2]
    server.publish("partial", directory, serve)
    del server.routes[f"/partial/{second}.gz"]

    with pytest.raises(StageError) as caught:
        download.run(config([dead, server.url("partial")]), paths, environ(directory), quiet())

    message = str(caught.value)
    assert message.startswith(f"could not fetch {second}; every mirror failed: ")
    timed_out = f"timed out (no data for {TIMEOUT:g} s)"
    assert f"{dead}: skipped (unreachable for {first} earlier in this run: {timed_out})" in message
    assert f"{server.url('partial')}: not found (HTTP 404 for {second}.gz" in message
    assert server.requests.count(f"/hang-headers/{first}.gz") == 1
    assert not any(r.startswith(f"/hang-headers/{second}") for r in server.requests)
    assert sorted(p.name for p in paths.raw.iterdir()) == [first]


# ---------------------------------------------------------------------------- directories and files
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("form", ["file-url", "absolute-dir", "relative-dir"])
def test_environment_mirror_is_tried_first(server, tmp_path, paths, monkeypatch, gz, form):
    directory = tmp_path / "local"
    digests = write_mirror(directory, n_train=60, n_test=20, gz=gz)
    server.publish("remote", directory, serve)
    monkeypatch.chdir(tmp_path)
    spec = {"file-url": directory.as_uri(), "absolute-dir": str(directory), "relative-dir": "local"}

    download.run(config([server.url("remote")]), paths, environ(directory, spec[form]), quiet())

    assert_verified(paths, digests)
    assert server.requests == []


def test_file_url_in_params(mirror, paths):
    directory, digests = mirror

    download.run(config([directory.as_uri()]), paths, environ(directory), quiet())

    assert_verified(paths, digests)


def test_verified_files_are_kept_and_damaged_ones_fetched_again(server, mirror, paths):
    directory, digests = mirror
    server.publish("good", directory, serve)
    cfg = config([server.url("good")])
    download.run(cfg, paths, environ(directory), quiet())
    server.requests.clear()

    download.run(cfg, paths, environ(directory), quiet())
    assert server.requests == []

    damaged = paths.raw / MNIST_FILES[2]
    damaged.write_bytes(flip(damaged.read_bytes()))
    download.run(cfg, paths, environ(directory), quiet())
    assert server.requests == [f"/good/{MNIST_FILES[2]}.gz"]
    assert_verified(paths, digests)


def test_damaged_file_is_removed_when_no_mirror_has_it(server, mirror, paths):
    directory, _ = mirror
    paths.raw.mkdir(parents=True)
    (paths.raw / MNIST_FILES[0]).write_bytes(b"not mnist")
    (paths.raw / f".{MNIST_FILES[0]}.abc123.tmp").write_bytes(b"left by a killed run")

    with pytest.raises(StageError):
        download.run(config([server.url("missing")]), paths, environ(directory), quiet())

    assert list(paths.raw.iterdir()) == []


# ------------------------------------------------------------------------------------------ output
def test_plain_output_without_a_terminal(mirror, paths):
    directory, _ = mirror
    console = quiet()

    download.run(config([str(directory)]), paths, environ(directory), console)

    lines = said(console).splitlines()
    assert lines == [
        f"{name}: fetched from {directory / name}.gz and verified" for name in MNIST_FILES
    ]


def test_progress_bar_in_a_terminal(server, mirror, paths):
    directory, digests = mirror
    server.publish("good", directory, serve)
    console = Console(file=io.StringIO(), force_terminal=True, width=100)

    download.run(config([server.url("good")]), paths, environ(directory), console)

    assert_verified(paths, digests)
    assert "\x1b[" in said(console)  # the live display drew something


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("ftp://x", "unsupported scheme ftp://; allowed: an http:// or https:// URL"),
        ("does-not-exist", "no such directory"),
        ("file:///does/not/exist", "no such directory /does/not/exist"),
        ("file://host/share", "not a local absolute path"),
        ("https://", "the URL has no host"),
    ],
)
def test_bad_mirror_variable_stops_before_any_work(server, mirror, paths, spec, problem):
    directory, _ = mirror
    server.publish("good", directory, serve)

    with pytest.raises(ConfigError) as caught:
        download.run(config([server.url("good")]), paths, environ(directory, spec), quiet())

    assert str(caught.value).startswith(f"MLPSTUDY_MNIST_MIRROR={spec!r}: ")
    assert problem in str(caught.value)
    assert server.requests == []
    assert not paths.raw.exists()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read the SHA256SUMS file (No such file or directory)"),
        ("not a digest  train-images-idx3-ubyte\n", "line 1 is 'not a digest"),
        (f"{'0' * 64}  train-images-idx3-ubyte\n", "no digest for train-labels-idx1-ubyte, t10k"),
    ],
    ids=["missing", "malformed", "incomplete"],
)
def test_bad_digest_override_names_the_file(tmp_path, mirror, paths, content, problem):
    directory, _ = mirror
    sums = tmp_path / "SUMS"
    if content is not None:
        sums.write_text(content)

    with pytest.raises(ConfigError) as caught:
        download.run(config([str(directory)]), paths, {download.SHA256SUMS_ENV: str(sums)})

    assert str(caught.value).startswith(f"MLPSTUDY_MNIST_SHA256SUMS={sums}: ")
    assert problem in str(caught.value)


def test_override_accepts_sha256sum_output(tmp_path):
    sums = tmp_path / "SUMS"
    lines = [f"{'AB' * 32} *{name}" for name in reversed(MNIST_FILES)]
    sums.write_text("# made by sha256sum -b\n\n" + "\n".join(lines) + "\n")

    assert read_sha256sums(sums, "SUMS") == {name: "ab" * 32 for name in MNIST_FILES}


# --------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def project(tmp_path: Path, server: MirrorServer) -> Path:
    """A project root whose params.yaml is the real one, pointed at a mirror with nothing."""
    root = tmp_path / "cli-project"
    root.mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["download"].update(mirrors=[server.url("missing")], timeout_seconds=TIMEOUT, retries=0)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def test_cli_exit_codes(project, mirror, server):
    directory, digests = mirror
    runner = CliRunner()
    sums = {download.SHA256SUMS_ENV: str(directory / "SHA256SUMS")}

    failed = runner.invoke(
        app, ["download", "--root", str(project)], env={download.MIRROR_ENV: None, **sums}
    )
    assert failed.exit_code == 1
    assert f"error: could not fetch {MNIST_FILES[0]}" in failed.stderr
    assert f"{server.url('missing')}: not found" in failed.stderr

    bad = runner.invoke(
        app, ["download", "--root", str(project)], env={download.MIRROR_ENV: "ftp://x"}
    )
    assert bad.exit_code == 2
    assert "error: MLPSTUDY_MNIST_MIRROR='ftp://x': unsupported scheme" in bad.stderr

    good = runner.invoke(
        app, ["download", "--root", str(project)], env={download.MIRROR_ENV: str(directory), **sums}
    )
    assert good.exit_code == 0, good.output
    assert_verified(Paths.at(project), digests)


# --------------------------------------------------------------------------------------- real data
@pytest.mark.real_data
@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"no real MNIST at {SHARED_MNIST}")
def test_real_mnist_from_the_shared_directory(paths):
    cfg = config([refused_url()])

    download.run(cfg, paths, {download.MIRROR_ENV: str(SHARED_MNIST)}, quiet())

    assert read_sha256sums(SHARED_MNIST / "SHA256SUMS", "shared") == CANONICAL_SHA256
    assert_verified(paths, CANONICAL_SHA256)
