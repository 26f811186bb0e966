"""A small raw HTTP/1.1 client for the one-shot measurements (cold GETs, bursts).

wrk measures throughput; these measurements need per-request timings (time to
first body byte, time to last byte) and a byte-for-byte check, on a keep-alive
connection, with as little client overhead as possible: bodies are received
with ``recv_into`` straight into one buffer and compared after the clock stops.

Everything has a time-out; a burst gives up after its deadline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import selectors
import socket
import time
from typing import Iterator

from .harness import BenchError

TIMEOUT = 120.0


@dataclasses.dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytearray
    sent: float  # time.monotonic() when the request was written
    first: float  # ... when the first body byte (or, without a body, the headers) arrived
    done: float  # ... when the last byte arrived

    @property
    def ttfb(self) -> float:
        return self.first - self.sent

    @property
    def total(self) -> float:
        return self.done - self.sent


def request_bytes(path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "User-Agent: rangeproxy-bench"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise BenchError(f"bad status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for ln in lines[1:]:
        if ln:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
    return int(parts[1]), headers


class Connection:
    """One keep-alive connection; ``get`` sends a request and reads the whole answer."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = TIMEOUT,
                 rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: str, headers: dict[str, str] | None = None, *,
            rate: float | None = None) -> Reply:
        """Send one GET and read the answer. ``rate`` (bytes/s) makes a slow reader:
        64 KiB at a time, sleeping to hold that pace."""
        sent = time.monotonic()
        self.sock.sendall(request_bytes(path, headers))
        buf = self._buf
        while b"\r\n\r\n" not in buf:
            data = self.sock.recv(65536)
            if not data:
                raise BenchError(f"GET {path}: connection closed before the headers")
            buf += data
        end = buf.index(b"\r\n\r\n") + 4
        status, hdrs = _parse_head(buf[:end])
        buf = buf[end:]
        first = time.monotonic()
        if status in (204, 304) or 100 <= status < 200:
            self._buf = buf
            return Reply(status, hdrs, bytearray(), sent, first, first)
        if "chunked" in hdrs.get("transfer-encoding", "").lower():
            body, self._buf, first = self._chunked(buf, first)
            return Reply(status, hdrs, body, sent, first, time.monotonic())
        if "content-length" not in hdrs:
            raise BenchError(f"GET {path}: answer without Content-Length ({status})")
        n = int(hdrs["content-length"])
        if n and len(buf) == 0:
            # The first body byte is timed before the body's buffer exists: bytearray(n)
            # zero-fills it, about 100 ms for 256 MiB, which was counted into the TTFB
            # of every answer whose headers came in a segment of their own (and only those).
            data = self.sock.recv(65536)
            if not data:
                raise BenchError(f"GET {path}: connection closed before the body")
            first = time.monotonic()
            buf = data
        take = buf[:n]
        self._buf = buf[n:]
        got_first = bool(take) or n == 0
        body = bytearray(n)
        body[:len(take)] = take
        view = memoryview(body)
        pos = len(take)
        step = 65536 if rate else len(view)
        t_start = time.monotonic()
        while pos < n:
            want = min(step, n - pos)
            got = self.sock.recv_into(view[pos:pos + want], want)
            if not got:
                raise BenchError(f"GET {path}: connection closed after {pos} of {n} body bytes")
            if not got_first:
                first = time.monotonic()
                got_first = True
            pos += got
            if rate:
                lag = t_start + pos / rate - time.monotonic()
                if lag > 0:
                    time.sleep(lag)
        return Reply(status, hdrs, body, sent, first, time.monotonic())

    def _chunked(self, buf: bytes, first: float) -> tuple[bytearray, bytes, float]:
        body = bytearray()
        got_first = False

        def need(k: int) -> None:
            nonlocal buf
            while len(buf) < k:
                data = self.sock.recv(262144)
                if not data:
                    raise BenchError("connection closed inside a chunked body")
                buf += data

        while True:
            while b"\r\n" not in buf:
                need(len(buf) + 1)
            line, buf = buf.split(b"\r\n", 1)
            size = int(line.split(b";")[0], 16)
            need(size + 2)
            if size and not got_first:
                first, got_first = time.monotonic(), True
            body += buf[:size]
            buf = buf[size + 2:]
            if size == 0:
                return body, buf, first


def fetch(port: int, path: str, headers: dict[str, str] | None = None) -> Reply:
    with Connection(port) as c:
        return c.get(path, headers)


# --- multipart/byteranges ------------------------------------------------------------


def parse_multipart(content_type: str, body: bytes) -> list[tuple[int, int, int, bytes]]:
    """Parts of a multipart/byteranges body as (first, last, total, bytes)."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise BenchError(f"no boundary in {content_type!r}")
    delim = b"--" + m.group(1).encode("latin-1")
    parts = []
    pos = body.find(delim)
    if pos < 0:
        raise BenchError("multipart body without its boundary")
    while True:
        pos += len(delim)
        if body[pos:pos + 2] == b"--":
            return parts
        if body[pos:pos + 2] != b"\r\n":
            raise BenchError("malformed multipart delimiter line")
        head_end = body.index(b"\r\n\r\n", pos)
        _, hdrs = _parse_head(b"HTTP/1.1 200 part" + body[pos:head_end])
        cr = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", hdrs.get("content-range", ""))
        if not cr:
            raise BenchError(f"part without a valid Content-Range: {hdrs}")
        a, b, total = (int(x) for x in cr.groups())
        start = head_end + 4
        data = bytes(body[start:start + b - a + 1])
        nxt = start + len(data)
        if body[nxt:nxt + 2 + len(delim)] != b"\r\n" + delim:
            raise BenchError("part body length does not match its Content-Range")
        parts.append((a, b, total, data))
        pos = nxt + 2


# --- a burst of concurrent identical requests -----------------------------------------


@dataclasses.dataclass
class BurstResult:
    sent: float
    firsts: list[float]  # per connection, first body byte (nan if none)
    dones: list[float]
    statuses: list[int]
    correct: list[bool]


def burst(port: int, path: str, headers: dict[str, str], expected: bytes, n: int,
          deadline_s: float = 120.0) -> BurstResult:
    """``n`` connections, opened first, then all send the same request at once.

    Each answer is compared with ``expected`` as it arrives. The loop serves the
    connections still waiting for their first byte before the others, so a
    first byte is noticed within one small read of its arrival.
    """
    socks = []
    sel = selectors.DefaultSelector()
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(s)
        req = request_bytes(path, headers)
        for s in socks:
            s.setblocking(False)
        st = [{"buf": b"", "len": None, "pos": 0, "first": float("nan"), "done": float("nan"),
               "status": 0, "ok": True} for _ in socks]
        for i, s in enumerate(socks):
            sel.register(s, selectors.EVENT_READ, i)
        sent = time.monotonic()
        for s in socks:
            s.sendall(req)  # ~150 bytes: never blocks
        left = n
        exp = expected
        end = sent + deadline_s
        while left and time.monotonic() < end:
            events = sel.select(timeout=1.0)
            # Connections still waiting for their first body byte go first.
            events.sort(key=lambda e: st[e[0].data]["first"] == st[e[0].data]["first"])
            for key, _ in events:
                i = key.data
                c = st[i]
                try:
                    data = socks[i].recv(65536)
                except BlockingIOError:
                    continue
                now = time.monotonic()
                if not data:
                    c["ok"] = False
                    sel.unregister(socks[i])
                    left -= 1
                    continue
                if c["len"] is None:
                    c["buf"] += data
                    if b"\r\n\r\n" not in c["buf"]:
                        continue
                    hend = c["buf"].index(b"\r\n\r\n") + 4
                    c["status"], hdrs = _parse_head(c["buf"][:hend])
                    c["len"] = int(hdrs.get("content-length", "0"))
                    data = c["buf"][hend:]
                    c["buf"] = b""
                if data and c["first"] != c["first"]:
                    c["first"] = now
                if data:
                    p = c["pos"]
                    if p + len(data) > len(exp) or exp[p:p + len(data)] != data:
                        c["ok"] = False
                    c["pos"] = p + len(data)
                if c["pos"] >= c["len"]:
                    c["done"] = now
                    if c["pos"] != len(expected):
                        c["ok"] = False
                    sel.unregister(socks[i])
                    left -= 1
        if left:
            raise BenchError(f"burst of {n} on {path}: {left} answers incomplete after {deadline_s:.0f}s")
        return BurstResult(sent=sent, firsts=[c["first"] for c in st], dones=[c["done"] for c in st],
                           statuses=[c["status"] for c in st], correct=[c["ok"] for c in st])
    finally:
        sel.close()
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()


# --- pinning the measuring thread --------------------------------------------------------


@contextlib.contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Run the calling thread on ``cpu`` for the block (Linux: affinity is per thread)."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, before)
