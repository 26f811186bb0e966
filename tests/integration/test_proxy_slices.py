"""What the proxy asks the origin for: slice-aligned Range requests, runs of
contiguous missing slices in one request (bounded by max_run_slices),
collapsing of concurrent fetches, and completing a slice whose client left."""

from __future__ import annotations

import asyncio
import math
import time

import aiohttp
import pytest

from tests.support.client import fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin, parse_single_range
from tests.support.servers import DEFAULT_SLICE

pytestmark = pytest.mark.integration

S = DEFAULT_SLICE


def upstream_spans(origin: FaultOrigin, name: str) -> list[tuple[int, int]]:
    """The byte spans of the proxy's upstream GETs for ``name`` (all must be single ranges)."""
    spans = []
    for r in origin.gets_for(name):
        assert r.range is not None, f"upstream GET without Range: {r}"
        span = parse_single_range(r.range)
        assert span is not None, f"not a bytes=a-b range: {r.range!r}"
        spans.append(span)
    return spans


def ranges_sent(origin: FaultOrigin, name: str) -> list[tuple[str | None, int | None, str | None]]:
    return [(r.range, r.status, r.fault) for r in origin.gets_for(name)]


def assert_aligned(spans: list[tuple[int, int]], size: int, max_run: int) -> None:
    for a, b in spans:
        assert a % S == 0, f"start {a} not slice-aligned ({(a, b)})"
        assert b == size - 1 or (b + 1) % S == 0, f"end {b} neither slice-aligned nor the object's end"
        assert b <= size - 1 or b // S == (size - 1) // S, f"{(a, b)} beyond the object (size {size})"
        n = (min(b, size - 1) - a) // S + 1
        assert 1 <= n <= max_run, f"{(a, b)} is {n} slices, more than max_run_slices={max_run}"


async def test_upstream_requests_are_slice_aligned(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    size = 5 * S + 123
    data = seeded_bytes(size, 21)
    fault_origin.set_object("al.bin", data)
    proxy = proxy_factory(fault_origin.url, readahead_slices=0, block_size=S)  # whole slices, exact counts
    url = proxy.url_for("al.bin")

    out = await fetch(http, url, headers={"Range": "bytes=100-200"})
    assert out.status == 206 and out.body == data[100:201]
    assert [r.range for r in fault_origin.gets_for("al.bin")] == [f"bytes=0-{S - 1}"]

    fault_origin.reset_counters()
    out = await fetch(http, url, headers={"Range": f"bytes={3 * S + 10}-"})
    assert out.status == 206 and out.body == data[3 * S + 10:]
    # slices 3..5 in one request, the last one clipped to the object's end
    assert [r.range for r in fault_origin.gets_for("al.bin")] == [f"bytes={3 * S}-{size - 1}"]

    fault_origin.reset_counters()
    out = await fetch(http, url)
    assert out.status == 200 and out.body == data
    assert [r.range for r in fault_origin.gets_for("al.bin")] == [f"bytes={S}-{3 * S - 1}"]


async def test_runs_of_missing_slices_one_request_each(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    size = 8 * S
    data = seeded_bytes(size, 22)
    fault_origin.set_object("runs.bin", data)
    proxy = proxy_factory(fault_origin.url, readahead_slices=0, block_size=S)  # whole slices, exact counts
    url = proxy.url_for("runs.bin")
    for i in (2, 5):
        out = await fetch(http, url, headers={"Range": f"bytes={i * S + 7}-{i * S + 8}"})
        assert out.status == 206 and out.body == data[i * S + 7:i * S + 9]
    fault_origin.reset_counters()

    out = await fetch(http, url)
    assert out.status == 200 and out.body == data
    assert out.header("X-Cache") == "PARTIAL"
    assert sorted(upstream_spans(fault_origin, "runs.bin")) == [
        (0, 2 * S - 1),
        (3 * S, 5 * S - 1),
        (6 * S, 8 * S - 1),
    ]


@pytest.mark.parametrize("max_run", [None, 4])
async def test_runs_are_bounded_by_max_run_slices(fault_origin: FaultOrigin, proxy_factory, http, max_run) -> None:
    n_slices = 40
    size = n_slices * S + 5  # 41 slices, the last one 5 bytes
    data = seeded_bytes(size, 23)
    fault_origin.set_object("long.bin", data)
    settings = {} if max_run is None else {"max_run_slices": max_run}
    proxy = proxy_factory(fault_origin.url, readahead_slices=0, **settings)
    limit = max_run or 16

    out = await fetch(http, proxy.url_for("long.bin"))
    assert out.status == 200 and out.body == data
    spans = upstream_spans(fault_origin, "long.bin")
    assert_aligned(spans, size, limit)
    total = n_slices + 1
    assert fault_origin.count_slice_fetches("long.bin", S) == {i: 1 for i in range(total)}, ranges_sent(
        fault_origin, "long.bin")
    # a first probe of one slice is allowed, otherwise runs are as long as allowed
    assert len(spans) <= math.ceil(total / limit) + 1, spans

    fault_origin.reset_counters()
    out = await fetch(http, proxy.url_for("long.bin"), headers={"Range": f"bytes={S + 1}-{30 * S}"})
    assert out.status == 206 and out.body == data[S + 1:30 * S + 1]
    assert fault_origin.gets_for("long.bin") == []


async def test_concurrent_identical_cold_requests_collapse(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    size = 4 * S
    data = seeded_bytes(size, 24)
    # slow origin: each 64 KiB slice takes ~0.16 s, so the requests overlap
    fault_origin.set_object("col.bin", data, chunk_size=8192, chunk_delay=0.02)
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)  # exact fetch counts

    n = 10
    outs = await asyncio.gather(*(fetch(http, proxy.url_for("col.bin")) for _ in range(n)))
    for out in outs:
        assert out.status == 200 and out.complete and out.body == data
    assert fault_origin.count_slice_fetches("col.bin", S) == {0: 1, 1: 1, 2: 1, 3: 1}

    rng = {"Range": f"bytes={S + 5}-{3 * S + 5}"}
    fault_origin.set_object("col2.bin", data, chunk_size=8192, chunk_delay=0.02)
    outs = await asyncio.gather(*(fetch(http, proxy.url_for("col2.bin"), headers=rng) for _ in range(n)))
    for out in outs:
        assert out.status == 206 and out.complete and out.body == data[S + 5:3 * S + 6]
    assert fault_origin.count_slice_fetches("col2.bin", S) == {1: 1, 2: 1, 3: 1}


async def test_concurrent_overlapping_cold_requests_fetch_each_slice_once(fault_origin: FaultOrigin,
                                                                         proxy_factory, http) -> None:
    size = 6 * S + 50
    data = seeded_bytes(size, 25)
    fault_origin.set_object("ov.bin", data, chunk_size=8192, chunk_delay=0.02)
    proxy = proxy_factory(fault_origin.url, readahead_slices=0, block_size=S)  # whole slices, exact counts
    # learn the object first (one slice), so the concurrent requests are planned with the size known
    out = await fetch(http, proxy.url_for("ov.bin"), headers={"Range": "bytes=0-0"})
    assert out.body == data[:1]
    spans = [(S, 3 * S - 1), (2 * S + 10, 4 * S), (3 * S, size - 1), (S + 1, size - 1), (0, size - 1)]
    outs = await asyncio.gather(
        *(fetch(http, proxy.url_for("ov.bin"), headers={"Range": f"bytes={a}-{b}"}) for a, b in spans)
    )
    for out, (a, b) in zip(outs, spans):
        assert out.status == 206 and out.complete and out.body == data[a:b + 1], (a, b)
    assert fault_origin.count_slice_fetches("ov.bin", S) == {i: 1 for i in range(7)}, ranges_sent(
        fault_origin, "ov.bin")


async def test_client_abort_still_completes_and_caches_the_slice(fault_origin: FaultOrigin, proxy_factory,
                                                                 http) -> None:
    data = seeded_bytes(4 * S, 26)
    # the slice arrives in 8 chunks 0.1 s apart: ~0.7 s to fill it
    fault_origin.set_object("ab.bin", data, chunk_size=8192, chunk_delay=0.1)
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)  # exact fetch counts
    url = proxy.url_for("ab.bin")

    async with http.get(url, headers={"Range": f"bytes=0-{S - 1}"}) as r:
        assert r.status == 206
        got = await asyncio.wait_for(r.content.read(4096), 10)
        assert got == data[:len(got)] and got
        r.close()  # the client goes away mid-slice

    # the proxy keeps reading: the origin gets to send the whole slice
    assert fault_origin.wait_until(lambda: fault_origin.gets_for("ab.bin")
                                   and all(x.completed for x in fault_origin.gets_for("ab.bin")), 10)
    rec = fault_origin.gets_for("ab.bin")[0]
    assert rec.fault is None or "client-gone" not in rec.fault, "the proxy dropped the upstream fetch"
    time.sleep(0.3)  # let the proxy store it

    fault_origin.set_fault("ab.bin", chunk_delay=0.0)
    out = await fetch(http, url, headers={"Range": f"bytes=0-{S - 1}"})
    assert out.status == 206 and out.body == data[:S]
    assert out.header("X-Cache") == "HIT"
    assert fault_origin.count_slice_fetches("ab.bin", S)[0] == 1


async def test_client_abort_does_not_break_later_requests(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    """Many clients leaving at different points of a multi-slice response; then
    everything is served right, and no slice was fetched more than twice."""
    data = seeded_bytes(6 * S + 9, 27)
    fault_origin.set_object("ab2.bin", data, chunk_size=16384, chunk_delay=0.01)
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)  # exact fetch counts
    url = proxy.url_for("ab2.bin")

    async def leave_after(nbytes: int) -> None:
        async with http.get(url) as r:
            got = b""
            while len(got) < nbytes:
                chunk = await asyncio.wait_for(r.content.read(min(65536, nbytes - len(got))), 10)
                if not chunk:
                    break
                got += chunk
            assert got == data[:len(got)]
            r.close()

    await asyncio.gather(*(leave_after(n) for n in (1, 1000, S, S + 1, 3 * S)))
    fault_origin.wait_idle(10)
    fault_origin.set_fault("ab2.bin", chunk_delay=0.0)
    for _ in range(2):
        out = await fetch(http, url)
        assert out.status == 200 and out.complete and out.body == data
    counts = fault_origin.count_slice_fetches("ab2.bin", S)
    assert set(counts) == set(range(7))
    assert max(counts.values()) <= 2, counts
    async with aiohttp.ClientSession() as s2:  # a fresh connection too
        out = await fetch(s2, url, headers={"Range": "bytes=-9"})
        assert out.status == 206 and out.body == data[-9:]
