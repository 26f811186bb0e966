"""fill_memory: slices in memory are bounded across all upstream requests, and a
tight bound only slows cold reads down, it never stalls or corrupts them."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from tests.support.client import fetch
from tests.support.metrics import scrape, val
from tests.support.servers import DEFAULT_SLICE

pytestmark = pytest.mark.integration

S = DEFAULT_SLICE  # 64 KiB slices


async def test_one_slice_of_fill_memory_serves_many_cold_readers_exactly(appserver, proxy_factory, http) -> None:
    src = appserver.path("big.bin").read_bytes()
    # Room for one slice at a time; read-ahead on, so prefetches compete for it too.
    proxy = proxy_factory(appserver.url, fill_memory=f"{S // 1024}KiB", readahead_slices=4)
    url = proxy.url_for("big.bin")
    rnd = random.Random(77)
    ranges = []
    for _ in range(24):
        a = rnd.randrange(0, len(src) - 1)
        ranges.append((a, min(len(src) - 1, a + rnd.randrange(1, 6 * S))))
    ranges.append((0, len(src) - 1))  # and one whole-object reader among them

    outs = await asyncio.wait_for(
        asyncio.gather(*(fetch(http, url, headers={"Range": f"bytes={a}-{b}"}, timeout=60) for a, b in ranges)),
        90)
    for (a, b), out in zip(ranges, outs):
        assert out.status == 206 and out.complete, (a, b, out.status, out.error)
        assert out.body == src[a:b + 1], (a, b)

    m = await scrape(http, proxy.url)
    assert val(m, "rangeproxy_fill_memory_waits_total") > 0  # the bound was reached and waited on
    # Every slice stored or dropped gave its room back.
    deadline = time.monotonic() + 10
    while val(m, "rangeproxy_fill_memory_bytes") != 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        m = await scrape(http, proxy.url)
    assert ("rangeproxy_fill_memory_bytes", frozenset()) in m and val(m, "rangeproxy_fill_memory_bytes") == 0
    out = await fetch(http, url)
    assert out.status == 200 and out.body == src and out.header("X-Cache") == "HIT"


async def test_fill_memory_is_checked_at_start_up(appserver, proxy_factory) -> None:
    with pytest.raises(Exception) as info:
        proxy_factory(appserver.url, fill_memory="1KiB")
    assert "fill_memory" in str(info.value)
