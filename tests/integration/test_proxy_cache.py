"""The on-disk slice cache: damaged entries are detected and refetched, and
the cache survives a restart (SIGTERM -> exit 0 -> start on the same dir)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.support.client import fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.servers import DEFAULT_SLICE

pytestmark = pytest.mark.integration

S = DEFAULT_SLICE


def slice_files(cache_dir: Path) -> list[Path]:
    """diskcache keeps large values (the slices) as ``*.val`` files."""
    return sorted(p for p in cache_dir.rglob("*.val") if p.is_file())


async def test_corrupt_cache_entries_are_detected_and_refetched(fault_origin: FaultOrigin, proxy_factory,
                                                                http) -> None:
    n = 8
    data = seeded_bytes(n * S, 71)
    fault_origin.set_object("cor.bin", data, cache_control="max-age=3600")
    proxy = proxy_factory(fault_origin.url, default_ttl=3600)
    url = proxy.url_for("cor.bin")
    assert (await fetch(http, url)).body == data
    fault_origin.wait_idle(5)

    files = []
    for _ in range(50):  # the store may finish shortly after the response
        files = [p for p in slice_files(proxy.cache_dir) if p.stat().st_size == S]
        if len(files) >= n:
            break
        await asyncio.sleep(0.1)
    assert len(files) == n, f"expected {n} slice files of {S} bytes under the cache dir, found {len(files)}"

    truncated, rewritten = files[0::2], files[1::2]
    for p in truncated:
        with open(p, "r+b") as f:
            f.truncate(S // 3)
    for k, p in enumerate(rewritten):
        # different bytes AND a different length: longer or shorter than a slice
        p.write_bytes(seeded_bytes(S + 100 if k % 2 else S - 100, 700 + k))
    before = fault_origin.count_slice_fetches("cor.bin", S)

    out = await fetch(http, url)
    assert out.status == 200 and out.complete and out.body == data
    after = fault_origin.count_slice_fetches("cor.bin", S)
    refetched = [i for i in range(n) if after[i] > before[i]]
    assert len(refetched) >= len(files), f"corrupt slices were not all refetched: {refetched}"

    out = await fetch(http, url, headers={"Range": f"bytes={S - 1}-{5 * S}"})
    assert out.status == 206 and out.body == data[S - 1:5 * S + 1]
    out = await fetch(http, url)
    assert out.status == 200 and out.body == data


async def test_deleted_cache_file_is_refetched(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = seeded_bytes(4 * S, 72)
    fault_origin.set_object("del.bin", data, cache_control="max-age=3600")
    proxy = proxy_factory(fault_origin.url, default_ttl=3600)
    url = proxy.url_for("del.bin")
    assert (await fetch(http, url)).body == data
    fault_origin.wait_idle(5)
    for _ in range(50):
        files = [p for p in slice_files(proxy.cache_dir) if p.stat().st_size == S]
        if len(files) >= 4:
            break
        await asyncio.sleep(0.1)
    assert files
    for p in files[:2]:
        os.unlink(p)
    out = await fetch(http, url)
    assert out.status == 200 and out.complete and out.body == data


@pytest.mark.timeout(60)
async def test_cache_survives_a_restart(fault_origin: FaultOrigin, proxy_factory, http, tmp_path: Path) -> None:
    data = seeded_bytes(5 * S + 9, 73)
    fault_origin.set_object("rs.bin", data, cache_control="max-age=3600")
    workdir = tmp_path / "restart"
    proxy = proxy_factory(fault_origin.url, workdir=workdir, default_ttl=3600, readahead_slices=0)
    span = {"Range": f"bytes={S + 3}-{3 * S + 3}"}
    out = await fetch(http, proxy.url_for("rs.bin"), headers=span)
    assert out.status == 206 and out.body == data[S + 3:3 * S + 4]
    await fetch(http, proxy.url_for("rs.bin"), headers={"Range": "bytes=-5"})

    assert proxy.stop() == 0  # SIGTERM -> clean exit 0
    fault_origin.reset_counters()

    proxy2 = proxy_factory(fault_origin.url, workdir=workdir, default_ttl=3600, readahead_slices=0)
    assert proxy2.cache_dir == proxy.cache_dir
    out = await fetch(http, proxy2.url_for("rs.bin"), headers=span)
    assert out.status == 206 and out.complete and out.body == data[S + 3:3 * S + 4]
    assert out.header("X-Cache") == "HIT"
    out = await fetch(http, proxy2.url_for("rs.bin"), headers={"Range": "bytes=-5"})
    assert out.status == 206 and out.body == data[-5:]
    assert fault_origin.requests_for("rs.bin") == [], "the restarted proxy asked the origin again"
    assert proxy2.stop() == 0


async def test_sigterm_during_a_transfer_exits_cleanly(fault_origin: FaultOrigin, proxy_factory, http,
                                                        tmp_path: Path) -> None:
    data = seeded_bytes(4 * S, 74)
    fault_origin.set_object("term.bin", data, chunk_size=8192, chunk_delay=0.05)
    proxy = proxy_factory(fault_origin.url)
    task = asyncio.create_task(fetch(http, proxy.url_for("term.bin"), timeout=20))
    for _ in range(100):
        if fault_origin.gets_for("term.bin"):
            break
        await asyncio.sleep(0.05)
    assert fault_origin.gets_for("term.bin")
    await asyncio.sleep(0.2)
    rc = await asyncio.to_thread(proxy.stop, False, 20)
    out = await task
    assert rc == 0, proxy.stderr_text()[-3000:]
    if out.complete:
        assert out.body == data
    else:
        assert out.body == data[:len(out.body)]


async def test_cache_size_limit_evicts_and_stays_correct(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    slice_size = 2**20
    limit = 16 * slice_size  # the smallest cache the proxy accepts; the object is 3 times that
    data = seeded_bytes(3 * limit, 75)
    fault_origin.set_object("ev.bin", data, cache_control="max-age=3600")
    proxy = proxy_factory(fault_origin.url, slice_size=slice_size, cache_size=limit, default_ttl=3600)
    url = proxy.url_for("ev.bin")
    for _ in range(2):
        out = await fetch(http, url)
        assert out.status == 200 and out.complete and out.body == data
    await asyncio.sleep(0.5)
    on_disk = sum(p.stat().st_size for p in slice_files(proxy.cache_dir))
    assert on_disk <= 2 * limit, f"{on_disk} bytes of slice files for a {limit}-byte cache"
    for a in (0, 20 * slice_size + 5, len(data) - 10):
        out = await fetch(http, url, headers={"Range": f"bytes={a}-{a + S}"})
        assert out.status == 206 and out.body == data[a:a + S + 1]
