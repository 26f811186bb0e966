"""The real demo origin and the real proxy as subprocesses on loopback: free
ports, start-up until ``/healthz`` answers, stop, and the RSS of a process tree.

``start_proxy(upstream_url, workdir, **settings)`` runs::

    python -m proxy --upstream URL --host 127.0.0.1 --port <free port>
                    --cache-dir <workdir>/cache --slice-size N [--set key=value ...]

and waits (15 s at most) until ``GET /healthz`` answers 200; ``start_appserver``
does the same for ``python -m appserver``. Ports, process trees and RSS come from
the benchmark harness (``benchmarks.harness``), as does the repository's root
(``REPO_ROOT``), so there is one copy of each.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Mapping, TypeVar

from benchmarks.harness import REPO_ROOT, RssSampler, free_port, process_tree, rss, tree_rss

__all__ = [
    "DEFAULT_SLICE", "REPO_ROOT", "AppServerProc", "H3AppServerProc", "ProxyProc", "RssSampler", "ServerProc",
    "free_port",
    "proxy_command", "start_appserver", "start_on_free_port", "start_proxy", "subprocess_env", "unused_url",
]

DEFAULT_SLICE = 64 * 1024
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0


def subprocess_env() -> dict[str, str]:
    # Hermetic: settings come from the command line only, never from a
    # RANGEPROXY_* variable of the caller's environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANGEPROXY_")}
    pp = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + pp if pp else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class ServerProc:
    """A server subprocess with stdout/stderr captured to files."""

    name = "server"

    def __init__(self, args: list[str], workdir: Path, port: int, health_path: str = "/healthz",
                 env: Mapping[str, str] | None = None, client_ssl: ssl.SSLContext | None = None) -> None:
        self.args = args
        self.client_ssl = client_ssl  # a TLS-only server: https, checked with this context
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
            env={**subprocess_env(), **(env or {})},
        )
        self.returncode: int | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.client_ssl is not None else 'http'}://127.0.0.1:{self.port}"

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
            last_err = self.probe()
            if last_err is None:
                return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(
            f"{self.name} not healthy within {timeout} s (last: {last_err})\n"
            f"command: {' '.join(self.args)}\n--- stderr ---\n{self.stderr_text()[-8000:]}"
        )

    def probe(self) -> object:
        """One health check: None when ``GET <health_path>`` (HTTP/1.1 over TCP, over TLS with
        ``client_ssl``) answers 200, else what failed."""
        try:
            with urllib.request.urlopen(self.url + self.health_path, timeout=2, context=self.client_ssl) as r:
                return None if r.status == 200 else f"status {r.status}"
        except urllib.error.HTTPError as e:
            return f"status {e.code}"
        except (OSError, urllib.error.URLError) as e:
            return e

    def rss_bytes(self) -> int:
        """VmRSS of the process itself."""
        return rss(self.pid)

    def inotify_instances(self) -> int:
        """Open inotify instances over the process and its descendants (Linux): a file watcher's footprint."""
        count = 0
        for pid in process_tree(self.pid):
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        count += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify"
        return count

    def tree_rss_bytes(self) -> int:
        """VmRSS summed over the process and its descendants (worker processes)."""
        return tree_rss(self.pid)

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


P = TypeVar("P", bound=ServerProc)


def start_on_free_port(make: Callable[[int], P], timeout: float) -> P:
    """``make(port)`` starts a server on a free port; wait until it is healthy.
    Retries on a different port if the chosen one was taken meanwhile."""
    last: Exception | None = None
    for _attempt in range(3):
        p = make(free_port())
        try:
            p.wait_healthy(timeout)
            return p
        except RuntimeError as e:
            last = e
            if "address already in use" not in p.stderr_text().lower():
                raise
    assert last is not None
    raise last


class ProxyProc(ServerProc):
    name = "proxy"

    def __init__(self, args: list[str], workdir: Path, port: int, cache_dir: Path, slice_size: int,
                 upstream: str, env: Mapping[str, str] | None = None) -> None:
        self.cache_dir = cache_dir
        self.slice_size = slice_size
        self.upstream = upstream
        super().__init__(args, workdir, port, env=env)

    def url_for(self, path: str) -> str:
        return f"{self.url}/{path.lstrip('/')}"

    def reload(self, processes: int = 1, timeout: float = 15.0) -> str:
        """SIGHUP, then wait until ``processes`` processes (the workers) have logged the outcome:
        "reloaded" when all applied it, else "refused" (the log says why)."""
        marks = ("reloaded the configuration", "reload refused", "reload failed")

        def counts() -> list[int]:
            text = self.stderr_text()
            return [text.count(m) for m in marks]

        before = counts()
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = counts()
            done = [a - b for a, b in zip(now, before)]
            if sum(done) >= processes:
                return "reloaded" if done[0] >= processes else "refused"
            if not self.alive():
                raise AssertionError(f"proxy died on SIGHUP:\n{self.stderr_text()[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"no reload outcome logged within {timeout} s:\n{self.stderr_text()[-3000:]}")


def _fmt_setting(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def proxy_command(upstream_url: str, port: int, cache_dir: Path, slice_size: int | None,
                  cache_size: int | None = None, config: Path | None = None,
                  settings: Mapping[str, object] | None = None, extra_args: Iterable[str] = ()) -> list[str]:
    # An empty upstream_url: the origins come from the config file's [[origin]] tables only.
    args = [sys.executable, "-m", "proxy", *(["--upstream", upstream_url] if upstream_url else []),
            "--host", "127.0.0.1", "--port", str(port), "--cache-dir", str(cache_dir)]
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
                extra_args: Iterable[str] = (), timeout: float = STARTUP_TIMEOUT, env: Mapping[str, str] | None = None,
                **settings: object) -> ProxyProc:
    """Start ``python -m proxy`` on a free port; ``settings`` become ``--set key=value``; ``env``
    adds to (or overrides) the variables it inherits (:func:`subprocess_env`).

    The cache lives in ``<tmp_path>/cache`` unless ``cache_dir`` is given.
    Retries on a different port if the chosen one was taken meanwhile.
    """
    tmp_path = Path(tmp_path)
    cache = Path(cache_dir) if cache_dir is not None else tmp_path / "cache"

    def make(port: int) -> ProxyProc:
        args = proxy_command(upstream_url, port, cache, slice_size, cache_size, config, settings, extra_args)
        return ProxyProc(args, tmp_path, port, cache, slice_size or 2**20, upstream_url, env)

    return start_on_free_port(make, timeout)


class AppServerProc(ServerProc):
    name = "appserver"

    def __init__(self, args: list[str], workdir: Path, port: int, media_dir: Path,
                 client_ssl: ssl.SSLContext | None = None) -> None:
        self.media_dir = media_dir
        super().__init__(args, workdir, port, client_ssl=client_ssl)

    def url_for(self, name: str) -> str:
        return f"{self.url}/{name}"

    def path(self, name: str) -> Path:
        return self.media_dir / name


class H3AppServerProc(AppServerProc):
    """``--server h3``: UDP only, so it is healthy when ``GET /healthz`` over HTTP/3 (aioquic's
    client, trusting the test's certificate) answers 200 -- the protocol the tests then use,
    rather than a TCP side listener that would prove nothing about the QUIC one."""

    def __init__(self, args: list[str], workdir: Path, port: int, media_dir: Path, certfile: Path) -> None:
        self.certfile = certfile
        super().__init__(args, workdir, port, media_dir)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def probe(self) -> object:
        import asyncio
        import concurrent.futures

        from tests.support.h3client import h3_client

        async def check() -> object:
            async with h3_client(self.port, self.certfile) as client:
                r = await client.request("GET", f"127.0.0.1:{self.port}", self.health_path)
                return None if r.status == 200 else f"status {r.status}"

        def in_thread() -> object:  # its own loop: the caller may be inside one
            try:
                return asyncio.run(asyncio.wait_for(check(), 2))
            except (OSError, ConnectionError, asyncio.TimeoutError) as e:
                return e

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(in_thread).result()


def start_appserver(media_dir: Path, workdir: Path, server: str = "aiohttp",
                    timeout: float = STARTUP_TIMEOUT, cors_origin: str | None = None,
                    events_token: str | None = None, certfile: Path | None = None, keyfile: Path | None = None,
                    client_ssl: ssl.SSLContext | None = None) -> AppServerProc:
    """Start ``python -m appserver --server <server>`` serving ``media_dir`` on a free port
    (with ``--cors-origin`` / ``--events-token`` when ``cors_origin`` / ``events_token`` is given).

    With ``certfile``/``keyfile`` a TCP server is TLS only: ``client_ssl`` (a context trusting its
    CA) is then what the health check, and ``.url``'s ``https``, go through. ``server="h3"`` needs
    ``certfile``/``keyfile`` and is checked over HTTP/3 instead (:class:`H3AppServerProc`)."""
    if server != "h3" and (certfile is None) != (client_ssl is None):
        raise ValueError("certfile needs client_ssl (the health check's TLS context), and only it")

    def make(port: int) -> AppServerProc:
        args = [sys.executable, "-m", "appserver", "--server", server, "--media-dir", str(media_dir),
                "--host", "127.0.0.1", "--port", str(port)]
        if cors_origin is not None:
            args += ["--cors-origin", cors_origin]
        if events_token is not None:
            args += ["--events-token", events_token]
        if certfile is not None:
            args += ["--certfile", str(certfile)]
        if keyfile is not None:
            args += ["--keyfile", str(keyfile)]
        if server == "h3":
            assert certfile is not None, "server h3 needs certfile and keyfile"
            return H3AppServerProc(args, Path(workdir), port, Path(media_dir), Path(certfile))
        return AppServerProc(args, Path(workdir), port, Path(media_dir), client_ssl)

    return start_on_free_port(make, timeout)


def unused_url() -> str:
    """A URL on which nothing listens (a port just released)."""
    return f"http://127.0.0.1:{free_port()}"
