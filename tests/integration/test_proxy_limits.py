"""Limits against abusive clients (issue 13): a request head must be complete within
``header_timeout`` (408, closed), idle connections close after ``keepalive_timeout``, at most
``max_connections`` are open (the next gets a quick 503), and only HTTP/1.x is served.

Every case is on the wire, raw sockets against the real proxy; times are bounded polls.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.metrics import scrape, val
from tests.support.rawhttp import RawConnection, send_raw

pytestmark = pytest.mark.integration

DATA = seeded_bytes(100_000, 41)


async def _read_until_closed(reader: asyncio.StreamReader, timeout: float) -> tuple[bytes, bool]:
    """What the server sent until it closed the connection (True) or ``timeout`` passed (False)."""
    data = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            return data, False
        try:
            chunk = await asyncio.wait_for(reader.read(65536), left)
        except asyncio.TimeoutError:
            return data, False
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk


async def test_http_0_9_and_other_versions_are_refused(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    fault_origin.set_object("a.bin", DATA)
    proxy = proxy_factory(fault_origin.url)
    # A request line without a version is HTTP/0.9: it would get a bare body.
    for request in (b"GET /a.bin\r\n\r\n", b"GET /a.bin HTTP/0.9\r\n\r\n"):
        out = await send_raw(proxy.port, request, timeout=5)
        assert out.startswith(b"HTTP/1.") and out.split(b" ", 2)[1] == b"400", out[:200]
        assert DATA[:64] not in out, "an object's body went to an HTTP/0.9 request"
    out = await send_raw(proxy.port, b"GET /a.bin HTTP/2.0\r\nHost: x\r\n\r\n", timeout=5)
    assert out.split(b" ", 2)[1] == b"505", out[:200]
    assert DATA[:64] not in out
    # Nothing of these reached the origin; HTTP/1.0 and 1.1 are served.
    assert not fault_origin.gets_for("a.bin")
    for version in ("1.0", "1.1"):
        out = await send_raw(proxy.port, f"GET /a.bin HTTP/{version}\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        assert out.split(b" ", 2)[1] == b"200" and out.endswith(DATA)
    assert val(await scrape(http, proxy.url), "rangeproxy_client_connections_refused_total", reason="version") == 3


async def test_a_request_pipelined_after_an_http_2_0_one_is_not_answered(fault_origin: FaultOrigin,
                                                                        proxy_factory) -> None:
    fault_origin.set_object("a.bin", DATA)
    proxy = proxy_factory(fault_origin.url)
    out = await send_raw(proxy.port, b"GET /a.bin HTTP/2.0\r\nHost: x\r\n\r\nGET /a.bin HTTP/1.1\r\nHost: x\r\n\r\n",
                         timeout=5)
    # (llhttp itself refuses a request after one it takes as not persistent: 400 then.)
    assert out.split(b" ", 2)[1] in (b"400", b"505") and b" 200 OK\r\n" not in out, out[:300]
    assert DATA[:64] not in out
    assert not fault_origin.gets_for("a.bin")


async def test_half_sent_request_heads_get_408_after_header_timeout(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    fault_origin.set_object("a.bin", DATA)
    proxy = proxy_factory(fault_origin.url, header_timeout="1s", keepalive_timeout="30s")
    conns = [await asyncio.open_connection("127.0.0.1", proxy.port) for _ in range(200)]
    t0 = time.monotonic()
    for _, w in conns:
        w.write(b"GET /a.bin HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never the rest
    # While they hang, a whole request is served at once.
    out = await send_raw(proxy.port, b"GET /a.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=5)
    assert out.split(b" ", 2)[1] == b"200" and out.endswith(DATA)
    results = await asyncio.gather(*(_read_until_closed(r, timeout=10) for r, _ in conns))
    elapsed = time.monotonic() - t0
    for _, w in conns:
        w.close()
    assert all(closed for _, closed in results), "a half-sent head was held open past the header timeout"
    assert all(data.startswith(b"HTTP/1.1 408 ") for data, _ in results), {d[:40] for d, _ in results}
    assert 0.9 <= elapsed < 8, elapsed
    assert not fault_origin.gets_for("a.bin")[1:], "a half-sent request reached the origin"
    assert val(await scrape(http, proxy.url), "rangeproxy_client_connections_refused_total", reason="header_timeout") == 200


async def test_a_slow_head_that_completes_in_time_is_served(fault_origin: FaultOrigin, proxy_factory) -> None:
    fault_origin.set_object("a.bin", DATA)
    proxy = proxy_factory(fault_origin.url, header_timeout="3s", keepalive_timeout="30s")
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    for piece in (b"GET /a.bin HTTP/1.1\r\n", b"Host: x\r\n", b"Connection: close\r\n", b"\r\n"):
        writer.write(piece)
        await asyncio.sleep(0.3)
    data, closed = await _read_until_closed(reader, timeout=10)
    writer.close()
    assert closed and data.startswith(b"HTTP/1.1 200 ") and data.endswith(DATA)


async def test_idle_keepalive_connections_close_after_keepalive_timeout(fault_origin: FaultOrigin,
                                                                       proxy_factory) -> None:
    fault_origin.set_object("a.bin", DATA)
    proxy = proxy_factory(fault_origin.url, keepalive_timeout="1s")
    with RawConnection(proxy.port) as conn:
        t0 = time.monotonic()
        assert conn.request("GET", "/a.bin").body == DATA
        conn.sock.settimeout(10)
        assert conn.sock.recv(1) == b"", "the idle connection was not closed"
        idle = time.monotonic() - t0
    assert 0.9 <= idle < 6, idle
    # A connection that never sends anything is idle too.
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    data, closed = await _read_until_closed(reader, timeout=10)
    writer.close()
    assert closed and data == b""


async def test_connections_beyond_max_connections_are_refused_at_once(fault_origin: FaultOrigin,
                                                                     proxy_factory) -> None:
    fault_origin.set_object("a.bin", DATA)
    proxy = proxy_factory(fault_origin.url, max_connections=20, keepalive_timeout="60s")
    held = []
    for _ in range(20):  # each with one request answered: its protocol is made and counted
        c = RawConnection(proxy.port)
        assert c.request("GET", "/a.bin").status == 200
        held.append(c)
    t0 = time.monotonic()
    out = await send_raw(proxy.port, b"GET /a.bin HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
    assert time.monotonic() - t0 < 2
    assert out.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in out, out[:200]
    # The held ones still work; when one goes, a new connection is taken again.
    assert held[0].request("GET", "/a.bin").body == DATA
    held.pop().close()
    deadline = time.monotonic() + 5
    while True:
        out = await send_raw(proxy.port, b"GET /a.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=5)
        if out.split(b" ", 2)[1] == b"200" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)  # the proxy sees the close a moment after we make it
    assert out.split(b" ", 2)[1] == b"200" and out.endswith(DATA)
    for c in held:
        c.close()


async def test_thousands_of_half_heads_are_all_closed_and_memory_returns(fault_origin: FaultOrigin,
                                                                         proxy_factory, http) -> None:
    """The issue's case: 3,000 connections that each sent half a request head."""
    fault_origin.set_object("a.bin", DATA)
    proxy = proxy_factory(fault_origin.url, header_timeout="2s")
    before = proxy.rss_bytes()
    socks = []
    for _ in range(3000):
        s = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        s.sendall(b"GET /a.bin HTTP/1.1\r\nHost: x\r\nUser-Agent: half")
        socks.append(s)
    deadline = time.monotonic() + 30
    for s in socks:  # each one gets its 408 and an end of stream (bounded by the deadline)
        s.settimeout(max(0.1, deadline - time.monotonic()))
        got = b""
        try:
            while chunk := s.recv(4096):
                got += chunk
        except ConnectionResetError:
            pass
        assert got.startswith(b"HTTP/1.1 408 "), got[:60]
        s.close()
    assert val(await scrape(http, proxy.url), "rangeproxy_client_connections") == 1  # this one
    assert proxy.rss_bytes() - before < 40 * 2**20


async def test_requests_sent_before_a_half_close_are_all_answered(fault_origin: FaultOrigin, proxy_factory) -> None:
    """A client may shut its sending half after its last request (found by the fuzzer: aiohttp
    closed the connection at the EOF and the answers were lost)."""
    fault_origin.set_object("a.bin", DATA)
    proxy = proxy_factory(fault_origin.url)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /a.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-3\r\n\r\n"
                 b"GET /a.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n"
                 b"GET /a.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    writer.write_eof()
    data, closed = await _read_until_closed(reader, timeout=10)
    writer.close()
    assert closed, "the half-closed connection was not closed after its answers"
    assert data.count(b"HTTP/1.1 206 ") == 2 and data.count(b"HTTP/1.1 200 ") == 1, data[:300]
    assert DATA[0:4] in data and DATA[10:20] in data and data.endswith(DATA)
    # A half-close with a head left incomplete is closed at once, not at the header timeout.
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /a.bin HTTP/1.1\r\nHost: x\r\n")
    writer.write_eof()
    t0 = time.monotonic()
    data, closed = await _read_until_closed(reader, timeout=10)
    writer.close()
    assert closed and data == b"" and time.monotonic() - t0 < 5
