"""Helpers (not tests) that run the real proxy and the real demo origin as
subprocesses, plus small HTTP helpers shared by the ``test_proxy_*`` modules.

``start_proxy(upstream_url, workdir, **settings)`` runs::

    python -m proxy --upstream URL --host 127.0.0.1 --port <free port>
                    --cache-dir <workdir>/cache --slice-size N [--set key=value ...]

and waits (15 s at most) until ``GET /healthz`` answers 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SLICE = 64 * 1024
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0


# --- require_tool: the shared one from tests/conftest.py when it exists ------------

def _load_root_conftest() -> Any:
    path = REPO_ROOT / "tests" / "conftest.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("_rangeproxy_tests_root_conftest", path)
    if spec is None or spec.loader is None:
        return None
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception:  # noqa: BLE001
        return None
    return mod


_root = _load_root_conftest()
if _root is None or not hasattr(_root, "require_tool"):
    raise ImportError("tests/conftest.py must define require_tool (skip, or fail under CI=true)")
require_tool = _root.require_tool


# --- processes -------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env() -> dict[str, str]:
    # Hermetic: settings come from the command line only, never from a
    # RANGEPROXY_* variable of the caller's environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANGEPROXY_")}
    pp = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + pp if pp else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _rss_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    return 0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                    out.extend(int(x) for x in f.read().split())
            except (FileNotFoundError, ProcessLookupError):
                pass
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def tree_pids(pid: int) -> list[int]:
    seen: list[int] = []
    todo = [pid]
    while todo and len(seen) < 1000:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo.extend(_children(p))
    return seen


class ServerProc:
    """A server subprocess with stdout/stderr captured to files."""

    name = "server"

    def __init__(self, args: list[str], workdir: Path, port: int, health_path: str = "/healthz") -> None:
        self.args = args
        self.workdir = workdir
        self.port = port
        self.health_path = health_path
        workdir.mkdir(parents=True, exist_ok=True)
        self._n = 0
        while (workdir / f"{self.name}-{self._n}.stderr").exists():
            self._n += 1
        self.stderr_path = workdir / f"{self.name}-{self._n}.stderr"
        self.stdout_path = workdir / f"{self.name}-{self._n}.stdout"
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(
            args,
            stdout=self._out,
            stderr=self._err,
            stdin=subprocess.DEVNULL,
            cwd=str(REPO_ROOT),
            env=subprocess_env(),
        )
        self.returncode: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_text(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return self.stderr_path.read_text(errors="replace")
        return ""

    def stdout_text(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return self.stdout_path.read_text(errors="replace")
        return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_healthy(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last_err: object = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self._close_files()
                raise RuntimeError(
                    f"{self.name} exited with {rc} before becoming healthy\n"
                    f"command: {' '.join(self.args)}\n--- stderr ---\n{self.stderr_text()[-8000:]}"
                    f"\n--- stdout ---\n{self.stdout_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(self.url + self.health_path, timeout=2) as r:
                    if r.status == 200:
                        return
                    last_err = f"status {r.status}"
            except urllib.error.HTTPError as e:
                last_err = f"status {e.code}"
            except (OSError, urllib.error.URLError) as e:
                last_err = e
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(
            f"{self.name} not healthy within {timeout} s (last: {last_err})\n"
            f"command: {' '.join(self.args)}\n--- stderr ---\n{self.stderr_text()[-8000:]}"
        )

    def rss_bytes(self) -> int:
        """VmRSS of the process itself."""
        return _rss_of(self.pid)

    def tree_rss_bytes(self) -> int:
        """VmRSS summed over the process and its descendants (worker processes)."""
        return sum(_rss_of(p) for p in tree_pids(self.pid))

    def stop(self, check: bool = True, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait; with ``check`` assert the exit code is 0."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                self._close_files()
                if check:
                    raise AssertionError(
                        f"{self.name} did not exit within {timeout} s of SIGTERM\n--- stderr ---\n"
                        f"{self.stderr_text()[-8000:]}"
                    )
        self.returncode = self.proc.returncode
        self._close_files()
        if check and self.returncode != 0:
            raise AssertionError(
                f"{self.name} exited with {self.returncode} after SIGTERM (expected 0)\n--- stderr ---\n"
                f"{self.stderr_text()[-8000:]}"
            )
        return self.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self._close_files()

    def _close_files(self) -> None:
        for f in (self._err, self._out):
            with contextlib.suppress(Exception):
                f.close()


class ProxyProc(ServerProc):
    name = "proxy"

    def __init__(self, args: list[str], workdir: Path, port: int, cache_dir: Path, slice_size: int,
                 upstream: str) -> None:
        self.cache_dir = cache_dir
        self.slice_size = slice_size
        self.upstream = upstream
        super().__init__(args, workdir, port)

    def url_for(self, path: str) -> str:
        return f"{self.url}/{path.lstrip('/')}"


def _fmt_setting(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def proxy_command(upstream_url: str, port: int, cache_dir: Path, slice_size: int | None,
                  cache_size: int | None = None, config: Path | None = None,
                  settings: Mapping[str, object] | None = None, extra_args: Iterable[str] = ()) -> list[str]:
    args = [sys.executable, "-m", "proxy", "--upstream", upstream_url, "--host", "127.0.0.1",
            "--port", str(port), "--cache-dir", str(cache_dir)]
    if slice_size is not None:
        args += ["--slice-size", str(slice_size)]
    if cache_size is not None:
        args += ["--cache-size", str(cache_size)]
    if config is not None:
        args += ["--config", str(config)]
    for k, v in (settings or {}).items():
        args += ["--set", f"{k}={_fmt_setting(v)}"]
    args += list(extra_args)
    return args


def start_proxy(upstream_url: str, tmp_path: Path, *, slice_size: int | None = DEFAULT_SLICE,
                cache_size: int | None = None, cache_dir: Path | None = None, config: Path | None = None,
                extra_args: Iterable[str] = (), timeout: float = STARTUP_TIMEOUT, **settings: object) -> ProxyProc:
    """Start ``python -m proxy`` on a free port; ``settings`` become ``--set key=value``.

    The cache lives in ``<tmp_path>/cache`` unless ``cache_dir`` is given.
    Retries on a different port if the chosen one was taken meanwhile.
    """
    tmp_path = Path(tmp_path)
    cache_dir = Path(cache_dir) if cache_dir is not None else tmp_path / "cache"
    last: Exception | None = None
    for _attempt in range(3):
        port = free_port()
        args = proxy_command(upstream_url, port, cache_dir, slice_size, cache_size, config, settings, extra_args)
        p = ProxyProc(args, tmp_path, port, cache_dir, slice_size or 2**20, upstream_url)
        try:
            p.wait_healthy(timeout)
            return p
        except RuntimeError as e:
            last = e
            if "address already in use" not in p.stderr_text().lower():
                raise
    assert last is not None
    raise last


class AppServerProc(ServerProc):
    name = "appserver"

    def __init__(self, args: list[str], workdir: Path, port: int, media_dir: Path) -> None:
        self.media_dir = media_dir
        super().__init__(args, workdir, port)

    def url_for(self, name: str) -> str:
        return f"{self.url}/{name}"

    def path(self, name: str) -> Path:
        return self.media_dir / name


def start_appserver(media_dir: Path, workdir: Path, server: str = "aiohttp",
                    timeout: float = STARTUP_TIMEOUT) -> AppServerProc:
    last: Exception | None = None
    for _attempt in range(3):
        port = free_port()
        args = [sys.executable, "-m", "appserver", "--server", server, "--media-dir", str(media_dir),
                "--host", "127.0.0.1", "--port", str(port)]
        p = AppServerProc(args, Path(workdir), port, Path(media_dir))
        try:
            p.wait_healthy(timeout)
            return p
        except RuntimeError as e:
            last = e
            if "address already in use" not in p.stderr_text().lower():
                raise
    assert last is not None
    raise last


def unused_url() -> str:
    """A URL on which nothing listens (a port just released)."""
    return f"http://127.0.0.1:{free_port()}"


# --- data ------------------------------------------------------------------------

def seeded_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def write_seeded_file(path: Path, size: int, seed: int, chunk: int = 2**20) -> Path:
    """Write ``size`` seeded pseudo-random bytes (streamed, constant memory)."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(chunk, left)
            f.write(rng.randbytes(n))
            left -= n
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(2**20)
            if not b:
                return h.hexdigest()
            h.update(b)


# --- HTTP helpers -------------------------------------------------------------------

@dataclass
class Outcome:
    """What a client saw: status, headers, body bytes received, and whether the
    body ended cleanly with as many bytes as announced."""

    status: int
    headers: Any
    body: bytes
    complete: bool
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cut(self) -> bool:
        return not self.complete

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


async def fetch(session: aiohttp.ClientSession, url: str, method: str = "GET",
                headers: Mapping[str, str] | None = None, timeout: float = 30.0, **kw: Any) -> Outcome:
    """Request and read the whole body; a body cut short is reported, not raised."""
    to = aiohttp.ClientTimeout(total=timeout)
    async with session.request(method, url, headers=dict(headers or {}), timeout=to,
                               allow_redirects=False, **kw) as r:
        chunks: list[bytes] = []
        complete, error = True, None
        try:
            async for chunk in r.content.iter_any():
                chunks.append(chunk)
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError,
                ConnectionError) as e:
            complete, error = False, f"{type(e).__name__}: {e}"
        body = b"".join(chunks)
        cl = r.headers.get("Content-Length")
        if complete and cl is not None and method != "HEAD" and r.status not in (204, 304):
            if len(body) != int(cl):
                complete, error = False, f"received {len(body)} of Content-Length {cl}"
        return Outcome(r.status, r.headers, body, complete, error)


def parse_multipart_byteranges(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Split a ``multipart/byteranges`` body into ``[(part headers, part body)]``;
    strict about the framing (RFC 9110 section 14.6 / RFC 2046)."""
    assert content_type.lower().startswith("multipart/byteranges"), content_type
    boundary = None
    for param in content_type.split(";")[1:]:
        k, _, v = param.strip().partition("=")
        if k.strip().lower() == "boundary":
            boundary = v.strip().strip('"')
    assert boundary, f"no boundary in {content_type!r}"
    delim = b"--" + boundary.encode()
    # body: [preamble] --B CRLF headers CRLF CRLF data CRLF --B ... CRLF --B-- [CRLF]
    first = body.find(delim)
    assert first >= 0, "no first boundary"
    pos = first + len(delim)
    parts: list[tuple[dict[str, str], bytes]] = []
    while True:
        if body[pos:pos + 2] == b"--":
            rest = body[pos + 2:]
            assert rest in (b"", b"\r\n"), f"junk after the closing boundary: {rest[:40]!r}"
            return parts
        assert body[pos:pos + 2] == b"\r\n", f"no CRLF after boundary at {pos}: {body[pos:pos + 10]!r}"
        pos += 2
        hend = body.index(b"\r\n\r\n", pos)
        headers: dict[str, str] = {}
        for line in body[pos:hend].split(b"\r\n"):
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        pos = hend + 4
        nxt = body.find(b"\r\n" + delim, pos)
        assert nxt >= 0, "part not terminated by a boundary"
        parts.append((headers, body[pos:nxt]))
        pos = nxt + 2 + len(delim)


def content_range(value: str | None) -> tuple[int, int, int]:
    """``bytes a-b/len`` -> (a, b, len)."""
    assert value is not None, "no Content-Range"
    unit, _, rest = value.strip().partition(" ")
    assert unit == "bytes", value
    span, _, total = rest.partition("/")
    a, _, b = span.partition("-")
    return int(a), int(b), int(total)


async def raw_request(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes, return everything the server sends until it closes (or
    until ``timeout``, or until one response with Content-Length is complete)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(request)
        await writer.drain()
        data = b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), max(0.01, deadline - loop.time()))
            except asyncio.TimeoutError:
                break
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length" and len(body) >= int(v.strip()):
                        return data
        return data
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


# --- /metrics ----------------------------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: aiohttp.ClientSession, base: str, headers: dict[str, str] | None = None) -> Samples:
    out = await fetch(http, base + "/metrics", headers=headers)
    assert out.status == 200, out.body[:300]
    assert out.header("Content-Type").startswith("text/plain"), out.header("Content-Type")
    samples: Samples = {}
    for fam in text_string_to_metric_families(out.body.decode()):
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def val(samples: Samples, name: str, **labels: str) -> float:
    """One series' value; 0 when it does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over the series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)
