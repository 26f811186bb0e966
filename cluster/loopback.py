"""HAProxy (``balance uri``, ``hash-type consistent``, bounded load, ``/healthz`` checks) in front of N
``python -m proxy`` nodes on loopback, each with its own cache dir and ``node_name`` (node1..N).

One implementation for ``python -m cluster`` and the tests (``tests/support/cluster.py``): the nodes and
HAProxy are subprocesses; HAProxy runs in master-worker mode in the foreground (``-W -db``) so that a
new configuration (a node added) is a reload (SIGUSR2) that keeps the front port and the other nodes'
places on the hash ring. Its admin socket (``stats socket``) tells when HAProxy sees a node up or down.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from benchmarks.harness import REPO_ROOT, find_tool, free_port

__all__ = ["ClusterError", "ClusterOptions", "LoopbackCluster", "Node", "haproxy_config"]

BACKEND = "rangeproxy"  # as in the README and config/haproxy-cluster.cfg
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


class ClusterError(RuntimeError):
    """A part of the cluster did not start, stop or reach the state asked for (the message says which)."""


def haproxy_config(front_port: int, nodes: list[tuple[str, int]], stats_socket: Path,
                   check_inter: str = "1s", fall: int = 2, tls_pem: Path | None = None,
                   stats_port: int | None = None) -> str:
    """The haproxy.cfg of the loopback cluster: the README's backend, on loopback ports. ``fall``
    failed checks (``check_inter`` apart) take a node out, so a node's ``drain_period`` must exceed
    their product. With ``tls_pem`` (chain and key in one file) the front terminates TLS and offers
    HTTP/2 by ALPN; the nodes still speak HTTP/1.1 (aiohttp has no HTTP/2). ``stats_port``: HAProxy's
    stats page there (each node's state; ``;csv`` for ``python -m cluster.fleetcheck``)."""
    tls = f" ssl crt {tls_pem} alpn h2,http/1.1" if tls_pem is not None else ""
    stats = (f"\nfrontend stats\n    bind 127.0.0.1:{stats_port}\n    stats enable\n    stats uri /\n"
             if stats_port is not None else "")
    servers = "\n".join(f"    server {name} 127.0.0.1:{port} check inter {check_inter}" for name, port in nodes)
    return f"""\
# Written by python -m cluster (cluster/loopback.py); rewritten when a node is added.
global
    stats socket {stats_socket} mode 600 level admin
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-request 30s

frontend front
    bind 127.0.0.1:{front_port}{tls}
    default_backend {BACKEND}

backend {BACKEND}
    balance uri                      # hash the path only: every range of an object goes to one node
    hash-type consistent             # a node leaving or joining moves only its share of the URLs
    hash-balance-factor 150          # no node takes more than 1.5x the average of requests in flight
    option httpchk GET /healthz
    http-check expect status 200     # 503 "draining" or "starting" takes the node out
    option forwardfor
    default-server fall {fall} rise 1
{servers}
{stats}"""


@dataclass
class ClusterOptions:
    """How the nodes run: ``slice_size`` (None: the proxy's default), ``drain_period`` in seconds
    (above the checks' 1 s x fall), more ``settings`` as ``--set key=value``, and the front port
    (0: a free one). ``tls_cert``/``tls_key`` (PEM chain and key): the front speaks TLS with
    HTTP/2 and HTTP/1.1 (ALPN) instead of plain HTTP."""

    slice_size: int | None = None
    drain_period: float = 5.0
    settings: dict[str, str] = field(default_factory=dict)
    front_port: int = 0
    fall: int = 2
    tls_cert: Path | None = None
    tls_key: Path | None = None


class _Proc:
    """A subprocess with its output in ``<workdir>/<name>.log``."""

    def __init__(self, name: str, args: list[str], workdir: Path) -> None:
        self.name = name
        self.args = args
        self.log_path = workdir / f"{name}.log"
        self._log: IO[bytes] = open(self.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RANGEPROXY_")}
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=str(REPO_ROOT), env=env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return self.log_path.read_text(errors="replace")
        return ""

    def send(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None when still running after ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def end(self, sig: int = signal.SIGINT, timeout: float = STOP_TIMEOUT) -> int:
        """``sig``, then SIGKILL if it has not exited within ``timeout``; its exit code."""
        self.send(sig)
        rc = self.wait(timeout)
        if rc is None:
            self.proc.kill()
            rc = self.proc.wait(10)
        self._log.close()
        return rc


class Node(_Proc):
    """One ``python -m proxy`` node: its name (also its ``node_name``), port and cache dir."""

    def __init__(self, name: str, port: int, cache_dir: Path, args: list[str], workdir: Path) -> None:
        self.port = port
        self.cache_dir = cache_dir
        super().__init__(name, args, workdir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False


def _until(pred: object, what: str, timeout: float, proc: _Proc | None = None) -> None:
    """Poll ``pred()`` every 50 ms until true, for ``timeout`` seconds at most; fail early when ``proc`` exits."""
    assert callable(pred)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if proc is not None and not proc.alive():
            raise ClusterError(f"{proc.name} exited ({proc.proc.returncode}) before {what}:\n{proc.log_text()[-4000:]}")
        time.sleep(0.05)
    tail = f":\n{proc.log_text()[-4000:]}" if proc is not None else ""
    raise ClusterError(f"not {what} within {timeout} s{tail}")


class LoopbackCluster:
    """HAProxy and its nodes on loopback. ``start()`` brings up ``nodes`` proxies then HAProxy and
    returns once HAProxy has checked each one up; ``add_node``, ``stop_node`` and ``kill_node`` change
    the fleet; ``close()`` stops everything (also as a context manager)."""

    def __init__(self, origin: str, workdir: Path, nodes: int = 3, options: ClusterOptions | None = None) -> None:
        if nodes < 1:
            raise ValueError(f"a cluster needs at least one node (got {nodes})")
        self.origin = origin
        self.workdir = Path(workdir)
        self.initial = nodes
        self.options = options or ClusterOptions()
        self.nodes: dict[str, Node] = {}
        self.haproxy: _Proc | None = None
        self.front_port = 0
        self.stats_port = 0
        self.config_path = self.workdir / "haproxy.cfg"
        self.socket_path = self.workdir / "haproxy.sock"
        if len(str(self.socket_path)) > 100:  # sun_path holds 108 bytes
            raise ClusterError(f"work dir path too long for HAProxy's admin socket: {self.socket_path}")

    # --- the fleet ----------------------------------------------------------------------------

    @property
    def front_url(self) -> str:
        scheme = "https" if self.options.tls_cert is not None else "http"
        return f"{scheme}://127.0.0.1:{self.front_port}"

    @property
    def stats_url(self) -> str:
        """HAProxy's stats page (plain HTTP on loopback)."""
        return f"http://127.0.0.1:{self.stats_port}"

    def __enter__(self) -> LoopbackCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self.nodes or self.haproxy is not None:
            raise ClusterError("this cluster was started already")
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            for i in range(1, self.initial + 1):
                self._start_node(f"node{i}")
            self._start_haproxy()
        except BaseException:
            self.close()
            raise

    def add_node(self) -> Node:
        """One more node, in HAProxy's configuration by a reload; returns once HAProxy checked it up."""
        node = self._start_node(f"node{len(self.nodes) + 1}")
        self._write_config()
        haproxy = self.haproxy
        assert haproxy is not None
        old = self._workers()
        haproxy.send(signal.SIGUSR2)  # the master re-reads the file; the new worker takes the port over
        # Until the old worker is gone, a new connection may still reach it (and its old ring).
        _until(lambda: len(new := self._workers()) == 1 and not new & old, "HAProxy's old worker replaced",
               STARTUP_TIMEOUT, haproxy)
        self.wait_states({node.name: "UP"})
        return node

    def stop_node(self, name: str) -> Node:
        """SIGTERM: the node drains (``/healthz`` 503) and HAProxy takes it out; returns once HAProxy
        marks it DOWN (the node may still be draining)."""
        node = self.nodes[name]
        node.send(signal.SIGTERM)
        self.wait_states({name: "DOWN"})
        return node

    def kill_node(self, name: str) -> Node:
        """SIGKILL: the node's connections are cut at once; returns when it is gone (HAProxy's
        checks notice later: :meth:`wait_states`)."""
        node = self.nodes[name]
        node.send(signal.SIGKILL)
        node.wait(10)
        return node

    def close(self) -> None:
        """HAProxy first (no new requests), then every node (SIGINT: no drain)."""
        if self.haproxy is not None:
            self.haproxy.end(signal.SIGTERM)
        for node in self.nodes.values():
            node.end(signal.SIGINT)

    # --- what HAProxy sees ----------------------------------------------------------------------

    def _workers(self) -> set[int]:
        """The pids of HAProxy's workers: its master's children (Linux's /proc)."""
        assert self.haproxy is not None
        pid = self.haproxy.pid
        with contextlib.suppress(OSError):
            return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
        return set()

    def admin(self, command: str, timeout: float = 5.0) -> str:
        """One command on HAProxy's admin socket (its runtime API); the answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.socket_path))
            s.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def server_states(self) -> dict[str, str]:
        """Each server's status as HAProxy sees it (``UP``, ``DOWN``, ``UP 1/2``, ``MAINT``...);
        a server only counts as ``UP`` once a check passed (``L7OK``)."""
        out: dict[str, str] = {}
        text = self.admin("show stat").lstrip("# ")
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("pxname") == BACKEND and row.get("svname") not in ("BACKEND", None):
                status = row.get("status", "")
                if status == "UP" and row.get("check_status") != "L7OK":
                    status = f"UP unchecked ({row.get('check_status')})"
                out[row["svname"]] = status
        return out

    def wait_states(self, want: dict[str, str], timeout: float = STARTUP_TIMEOUT) -> None:
        """Until HAProxy reports each named server in the wanted status (bounded)."""
        last: dict[str, str] = {}

        def reached() -> bool:
            nonlocal last
            with contextlib.suppress(OSError):
                last = self.server_states()
                return all(last.get(k) == v for k, v in want.items())
            return False

        try:
            _until(reached, f"HAProxy sees {want}", timeout, self.haproxy)
        except ClusterError as e:
            raise ClusterError(f"{e}\nlast states: {last}") from None

    # --- starting the parts ---------------------------------------------------------------------

    def _node_args(self, name: str, port: int, cache_dir: Path) -> list[str]:
        args = [sys.executable, "-m", "proxy", "--upstream", self.origin, "--host", "127.0.0.1",
                "--port", str(port), "--cache-dir", str(cache_dir)]
        if self.options.slice_size is not None:
            args += ["--slice-size", str(self.options.slice_size)]
        settings = {"node_name": name, "drain_period": f"{self.options.drain_period}s", **self.options.settings}
        for k, v in settings.items():
            args += ["--set", f"{k}={v}"]
        return args

    def _start_node(self, name: str) -> Node:
        cache_dir = self.workdir / name / "cache"
        for _attempt in range(3):  # a free port may be taken before the node binds it
            port = free_port()
            node = Node(name, port, cache_dir, self._node_args(name, port, cache_dir), self.workdir)
            try:
                _until(node.healthy, f"{name} healthy", STARTUP_TIMEOUT, node)
            except ClusterError:
                node.end(signal.SIGKILL)
                if "address already in use" in node.log_text().lower():
                    continue
                raise
            self.nodes[name] = node
            return node
        raise ClusterError(f"{name}: no free port after 3 attempts")

    def _front_pem(self) -> Path | None:
        """HAProxy's ``crt`` wants the chain and the key in one file: ``<workdir>/front.pem`` (mode 600)."""
        cert, key = self.options.tls_cert, self.options.tls_key
        if cert is None and key is None:
            return None
        if cert is None or key is None:
            raise ClusterError("a TLS front needs both tls_cert and tls_key")
        try:
            text = Path(cert).read_text().rstrip("\n") + "\n" + Path(key).read_text()
        except OSError as e:
            raise ClusterError(f"cannot read the front's certificate or key: {e}") from None
        pem = self.workdir / "front.pem"
        pem.touch(mode=0o600)
        pem.write_text(text)
        return pem

    def _write_config(self) -> None:
        nodes = [(n.name, n.port) for n in self.nodes.values()]
        self.config_path.write_text(haproxy_config(self.front_port, nodes, self.socket_path, fall=self.options.fall,
                                                   tls_pem=self._front_pem(), stats_port=self.stats_port))

    def _start_haproxy(self) -> None:
        exe = find_tool("haproxy")
        if exe is None:
            raise ClusterError("haproxy is not installed (Debian: apt-get install haproxy; `make system-deps`)")
        for _attempt in range(3):
            self.front_port = self.options.front_port or free_port()
            self.stats_port = free_port()
            self._write_config()
            check = subprocess.run([exe, "-c", "-q", "-f", str(self.config_path)], capture_output=True, text=True,
                                   check=False, timeout=30)
            if check.returncode != 0:
                raise ClusterError(f"haproxy refused {self.config_path}:\n{check.stdout}{check.stderr}")
            self.haproxy = _Proc("haproxy", [exe, "-W", "-db", "-f", str(self.config_path)], self.workdir)
            try:
                self.wait_states({name: "UP" for name in self.nodes})
                return
            except ClusterError:
                self.haproxy.end(signal.SIGTERM)  # the master stops its worker too (SIGKILL would orphan it)
                text = self.haproxy.log_text().lower()
                if self.options.front_port or ("cannot bind" not in text and "address already in use" not in text):
                    raise
        raise ClusterError("haproxy: no free front port after 3 attempts")
