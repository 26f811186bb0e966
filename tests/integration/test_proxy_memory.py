"""Bounded memory: a 300 MiB object read through the proxy cold and warm,
fast and by a slow client, must not grow the proxy's RSS by more than 50 MiB."""

from __future__ import annotations

import asyncio
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
                       max_seconds: float | None = None) -> tuple[int, str | None]:
    """Read ``url`` comparing every byte with ``src``; returns (bytes read, X-Cache).
    A slow reader takes 64 KiB then sleeps ``slow_delay``; it stops after ``max_seconds``."""
    t0 = time.monotonic()
    n = 0
    timeout = aiohttp.ClientTimeout(total=120, sock_read=30)
    with open(src, "rb") as f:
        async with session.get(url, timeout=timeout) as r:
            assert r.status == 200
            assert int(r.headers["Content-Length"]) == HUGE
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

