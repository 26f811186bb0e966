"""Bounded memory: a 300 MiB object read through the proxy cold and warm,
fast and by a slow client, must not grow the proxy's RSS by more than 50 MiB; a client
that stops reading a 96 MiB response altogether costs at most 40 MiB."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import aiohttp
import pytest

from tests.support.data import write_seeded_file
from tests.support.servers import RssSampler

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HUGE = 300 * 2**20
RSS_BUDGET = 50 * 2**20


async def read_through(session: aiohttp.ClientSession, url: str, src: Path, *, slow_delay: float = 0.0,
                       max_seconds: float | None = None, size: int = HUGE) -> tuple[int, str | None]:
    """Read ``url`` comparing every byte with ``src``; returns (bytes read, X-Cache).
    A slow reader takes 64 KiB then sleeps ``slow_delay``; it stops after ``max_seconds``."""
    t0 = time.monotonic()
    n = 0
    timeout = aiohttp.ClientTimeout(total=120, sock_read=30)
    with open(src, "rb") as f:
        async with session.get(url, timeout=timeout) as r:
            assert r.status == 200
            assert int(r.headers["Content-Length"]) == size
            while True:
                chunk = await r.content.read(65536)
                if not chunk:
                    break
                expected = f.read(len(chunk))
                assert chunk == expected, f"wrong bytes at offset {n}"
                n += len(chunk)
                if slow_delay:
                    await asyncio.sleep(slow_delay)
                if max_seconds is not None and time.monotonic() - t0 > max_seconds:
                    r.close()
                    return n, r.headers.get("X-Cache")
            return n, r.headers.get("X-Cache")


@pytest.mark.timeout(240)
async def test_memory_stays_bounded_for_a_300_mib_object(tmp_path: Path, appserver_factory, proxy_factory) -> None:
    media = tmp_path / "huge-media"
    src = write_seeded_file(media / "huge.bin", HUGE, seed=99)
    (media / "small.bin").write_bytes(b"x" * 200_000)
    origin = appserver_factory(media)
    settings = dict(slice_size=2**20, cache_size=2 * 2**30)
    proxy = proxy_factory(origin.url, **settings)
    url = proxy.url_for("huge.bin")

    async with aiohttp.ClientSession(auto_decompress=False) as s:
        # warm-up: imports and pools that any request needs are not what is measured
        for hdrs in ({}, {"Range": "bytes=0-10"}, {"Range": "bytes=0-1,5-6"}):
            async with s.get(proxy.url_for("small.bin"), headers=hdrs) as r:
                await r.read()
        await asyncio.sleep(0.2)
        baseline = proxy.tree_rss_bytes()
        assert baseline > 0

        with RssSampler(proxy, interval=0.02) as cold_slow:
            n, _ = await read_through(s, url, src, slow_delay=0.004, max_seconds=6)
            assert n > 0
        with RssSampler(proxy, interval=0.02) as cold_fast:
            n, _ = await read_through(s, url, src)
            assert n == HUGE
        with RssSampler(proxy, interval=0.02) as warm_fast:
            n, _ = await read_through(s, url, src)
            assert n == HUGE
        with RssSampler(proxy, interval=0.02) as warm_slow:
            n, _ = await read_through(s, url, src, slow_delay=0.004, max_seconds=6)
            assert n > 0

    report = {name: (sampler.max - baseline) / 2**20
              for name, sampler in (("cold slow", cold_slow), ("cold fast", cold_fast),
                                    ("warm fast", warm_fast), ("warm slow", warm_slow))}
    print("proxy RSS growth (MiB):", {k: round(v, 1) for k, v in report.items()})
    for name, grown_mib in report.items():
        assert grown_mib <= RSS_BUDGET / 2**20, f"RSS grew by {grown_mib:.1f} MiB ({name}); all: {report}"



STOPPED = 96 * 2**20  # a response much larger than the budget below
STOPPED_BUDGET = 40 * 2**20  # what the proxy may grow by while one client holds it unread
HOLD = 3.0  # seconds the client stops reading for


def stopped_reader(port: int, path: str, src: Path) -> socket.socket:
    """A client with a 4 KiB receive buffer that asks for ``path``, reads the head and the first
    bytes (checked against ``src``), then stops reading; the caller closes it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window is set then
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET /{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    got = b""
    while b"\r\n\r\n" not in got or len(got) < 70_000:
        chunk = s.recv(65536)
        assert chunk, f"the proxy closed early: {got[:300]!r}"
        got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {STOPPED}".encode() in head, head
    with open(src, "rb") as f:
        assert body == f.read(len(body)), "wrong first bytes"
    return s


@pytest.mark.timeout(120)
async def test_a_client_that_stops_reading_holds_the_proxy_s_memory_bounded(tmp_path: Path, appserver_factory,
                                                                            proxy_factory) -> None:
    """Back-pressure: a 96 MiB response nobody reads, cold (filled from the origin) and warm (sent
    from the cache), costs the proxy a bounded amount of memory, and others are served meanwhile."""
    media = tmp_path / "stop-media"
    src = write_seeded_file(media / "stopped.bin", STOPPED, seed=98)
    small = (media / "small.bin")
    small.write_bytes(bytes(range(256)) * 1000)
    origin = appserver_factory(media)
    proxy = proxy_factory(origin.url, slice_size=2**20, cache_size=2**30)

    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async def others_are_served() -> None:
            t0 = time.monotonic()
            async with s.get(proxy.url_for("small.bin")) as r:
                assert r.status == 200 and await r.read() == small.read_bytes()
            async with s.get(proxy.url_for("stopped.bin"), headers={"Range": "bytes=50000000-50099999"}) as r:
                with open(src, "rb") as f:
                    f.seek(50_000_000)
                    assert r.status == 206 and await r.read() == f.read(100_000)
            assert time.monotonic() - t0 < 5, "another client waited on the stopped one"

        await others_are_served()  # warm-up: imports and pools any request needs are not measured
        await asyncio.sleep(0.2)
        baseline = proxy.tree_rss_bytes()
        grown = {}
        for case in ("cold", "warm"):
            if case == "warm":
                n, _ = await read_through(s, proxy.url_for("stopped.bin"), src, size=STOPPED)
                assert n == STOPPED
            with RssSampler(proxy, interval=0.02) as sampler:
                sock = await asyncio.to_thread(stopped_reader, proxy.port, "stopped.bin", src)
                try:
                    deadline = time.monotonic() + HOLD
                    while time.monotonic() < deadline:
                        await others_are_served()
                        await asyncio.sleep(0.2)
                    assert proxy.alive()
                finally:
                    sock.close()
            grown[case] = (sampler.max - baseline) / 2**20
        await others_are_served()  # and after it went away
    print("proxy RSS growth while a client stopped reading (MiB):", {k: round(v, 1) for k, v in grown.items()})
    for case, mib in grown.items():
        assert mib <= STOPPED_BUDGET / 2**20, f"RSS grew by {mib:.1f} MiB ({case}); all: {grown}"
