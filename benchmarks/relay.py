"""A counting (and optionally slow) TCP relay in front of the origin.

``python -m benchmarks.relay --port P --upstream-port O --control-port C``

Both caches under test talk to the origin through this relay, so the bytes the
origin sent are measured the same way for nginx and for rangeproxy. It parses
the origin's HTTP/1.1 responses (status line, headers, ``Content-Length``) and
counts requests, responses and *body* bytes exactly; bodies are moved with
``os.splice`` (socket -> pipe -> socket, no copy through Python).

A delay (``--delay-ms`` or ``GET /set?delay_ms=N`` on the control port) holds
every request for that long before it goes to the origin: a slow origin for the
read-ahead measurement.

Control port (plain HTTP): ``/healthz``; ``/counts`` (JSON: requests, responses,
body_bytes, header_bytes, connections, by_status); ``/log?since=N`` (the requests
from the N-th on: time, method, target, Range header); ``/set?delay_ms=N``.

Blocking sockets, two threads per connection; every socket has kernel send and
receive time-outs, so a stuck peer cannot keep a thread forever.
"""

from __future__ import annotations

import argparse
import fcntl
import http.server
import json
import os
import socket
import struct
import sys
import threading
import time
import urllib.parse

F_SETPIPE_SZ = 1031
CHUNK = 1 << 20
IO_TIMEOUT = 300.0
NO_BODY = {204, 304}
LOG_MAX = 200_000


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.responses = 0
        self.body_bytes = 0
        self.header_bytes = 0
        self.connections = 0
        self.unframed = 0  # responses without Content-Length (counted to EOF)
        self.by_status: dict[str, int] = {}
        self.delay = 0.0
        self.log: list[list] = []  # [monotonic time, method, target, Range header or ""]
        self.log_base = 0  # index of log[0] since the start (older entries are dropped)

    def add(self, **kw: int) -> None:
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)

    def snapshot(self) -> dict:
        with self.lock:
            return {"requests": self.requests, "responses": self.responses,
                    "body_bytes": self.body_bytes, "header_bytes": self.header_bytes,
                    "connections": self.connections, "unframed": self.unframed,
                    "by_status": dict(self.by_status), "delay_ms": self.delay * 1000,
                    "time": time.monotonic()}


C = Counters()


def _close(*socks: socket.socket) -> None:
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            s.close()
        except OSError:
            pass


def _upstream_side(client: socket.socket, origin: socket.socket, methods: list[bytes]) -> None:
    """Client -> origin: requests (GET/HEAD bodies are empty), counted and maybe delayed."""
    pending = b""
    try:
        while True:
            data = client.recv(65536)
            if not data:
                try:
                    origin.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            if not pending and C.delay > 0:  # a new request starts: the slow origin
                time.sleep(C.delay)
            pending += data
            while b"\r\n\r\n" in pending:
                head, pending = pending.split(b"\r\n\r\n", 1)
                methods.append(head.split(b" ", 1)[0])  # before the origin can answer it
                _log_request(head)
            origin.sendall(data)
    except OSError:
        return


def _log_request(head: bytes) -> None:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    rng = ""
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        if k.strip().lower() == "range":
            rng = v.strip()
    with C.lock:
        C.requests += 1
        C.log.append([time.monotonic(), parts[0], parts[1] if len(parts) > 1 else "", rng])
        if len(C.log) > LOG_MAX:
            drop = len(C.log) - LOG_MAX // 2
            del C.log[:drop]
            C.log_base += drop


def _splice_body(origin: socket.socket, client: socket.socket, n: int, pipe: tuple[int, int] | None) -> int:
    """Move exactly ``n`` body bytes; returns how many were moved."""
    moved = 0
    ofd, cfd = origin.fileno(), client.fileno()
    while moved < n:
        want = min(CHUNK, n - moved)
        if pipe is not None:
            got = os.splice(ofd, pipe[1], want)
            if got == 0:
                break
            left = got
            while left:
                left -= os.splice(pipe[0], cfd, left)
        else:
            data = origin.recv(min(want, 262144))
            got = len(data)
            if not got:
                break
            client.sendall(data)
        moved += got
        C.add(body_bytes=got)
    return moved


def _downstream_side(client: socket.socket, origin: socket.socket, methods: list[bytes]) -> None:
    """Origin -> client: responses parsed for framing, bodies spliced and counted."""
    pipe = None
    try:
        r, w = os.pipe()
        try:
            fcntl.fcntl(w, F_SETPIPE_SZ, CHUNK)
        except OSError:
            pass
        pipe = (r, w)
    except OSError:
        pipe = None
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                data = origin.recv(65536)
                if not data:
                    if buf:
                        client.sendall(buf)
                    return
                buf += data
            end = buf.index(b"\r\n\r\n") + 4
            head, buf = buf[:end], buf[end:]
            lines = head.split(b"\r\n")
            status = int(lines[0].split()[1])
            length = None
            for ln in lines[1:]:
                k, _, v = ln.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v.strip())
            client.sendall(head)
            if 100 <= status < 200:
                C.add(header_bytes=len(head))
                continue
            method = methods.pop(0) if methods else b"GET"
            with C.lock:
                C.responses += 1
                C.header_bytes += len(head)
                C.by_status[str(status)] = C.by_status.get(str(status), 0) + 1
            if method == b"HEAD" or status in NO_BODY:
                length = 0
            if length is None:  # to EOF
                C.add(unframed=1)
                if buf:
                    client.sendall(buf)
                    C.add(body_bytes=len(buf))
                _splice_body(origin, client, 1 << 62, pipe)
                return
            first = buf[:length]
            if first:
                client.sendall(first)
                C.add(body_bytes=len(first))
            buf = buf[length:]
            rest = length - len(first)
            if rest and _splice_body(origin, client, rest, pipe) < rest:
                return
    except (OSError, ValueError, IndexError):
        return
    finally:
        if pipe is not None:
            os.close(pipe[0])
            os.close(pipe[1])
        _close(client, origin)


def _serve(client: socket.socket, upstream: tuple[str, int]) -> None:
    try:
        origin = socket.create_connection(upstream, timeout=10)
    except OSError:
        _close(client)
        return
    # Blocking fds (os.splice needs them) with kernel time-outs instead of Python's.
    tv = struct.pack("ll", int(IO_TIMEOUT), 0)
    for s in (client, origin):
        s.settimeout(None)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    C.add(connections=1)
    methods: list[bytes] = []
    up = threading.Thread(target=_upstream_side, args=(client, origin, methods), daemon=True)
    up.start()
    _downstream_side(client, origin, methods)
    up.join(IO_TIMEOUT)


class _Control(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        u = urllib.parse.urlsplit(self.path)
        if u.path == "/healthz":
            body = b"ok\n"
        elif u.path == "/counts":
            body = json.dumps(C.snapshot()).encode()
        elif u.path == "/log":  # requests since index ?since=N (as counted from the start)
            since = int(urllib.parse.parse_qs(u.query).get("since", ["0"])[0])
            with C.lock:
                first = max(since, C.log_base)
                body = json.dumps({"first": first, "next": C.log_base + len(C.log),
                                   "entries": C.log[first - C.log_base:]}).encode()
        elif u.path == "/set":
            q = urllib.parse.parse_qs(u.query)
            if "delay_ms" in q:
                C.delay = max(0.0, float(q["delay_ms"][0]) / 1000)
            body = json.dumps(C.snapshot()).encode()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.relay")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream-host", default="127.0.0.1")
    p.add_argument("--upstream-port", type=int, required=True)
    p.add_argument("--control-port", type=int, required=True)
    p.add_argument("--delay-ms", type=float, default=0.0)
    a = p.parse_args(argv)
    C.delay = a.delay_ms / 1000
    ctl = http.server.ThreadingHTTPServer((a.host, a.control_port), _Control)
    ctl.daemon_threads = True
    threading.Thread(target=ctl.serve_forever, daemon=True).start()
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.host, a.port))
    ls.listen(4096)
    print(f"relay {a.host}:{a.port} -> {a.upstream_host}:{a.upstream_port}, control {a.control_port}",
          flush=True)
    upstream = (a.upstream_host, a.upstream_port)
    while True:
        conn, _ = ls.accept()
        threading.Thread(target=_serve, args=(conn, upstream), daemon=True).start()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
