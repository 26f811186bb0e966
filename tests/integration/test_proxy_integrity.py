"""Slice integrity against faults of disk and process: a slice file truncated or damaged in place
behind the proxy's back is detected, dropped and fetched again (a truncation by the length check
every hit makes, a same-length damage by the scrubber's CRC-32), also across a restart; a SIGKILL
in the middle of cold fills loses nothing that was complete and never leaves a partial slice to
be served. Files are found through the cache directory's SQLite ``Cache`` table (tests.support.cachedir)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import aiohttp
import pytest

from proxy.cache.orphans import ORPHAN_AGE
from tests.support.cachedir import all_files, etag_validator, slice_file, slice_rows, until, wait_slices
from tests.support.client import fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.metrics import scrape, val
from tests.support.servers import DEFAULT_SLICE, ProxyProc

pytestmark = pytest.mark.integration

S = DEFAULT_SLICE
FAST_SCRUB = 64 * 2**20  # bytes/s: a pass over these few slices takes milliseconds


def flip(path: Path, at: int, n: int = 16) -> None:
    """Damage a file in place: ``n`` bytes from ``at`` inverted, the length unchanged."""
    with open(path, "r+b") as f:
        f.seek(at)
        old = f.read(n)
        f.seek(at)
        f.write(bytes(b ^ 0xFF for b in old))


async def metric_at_least(http: aiohttp.ClientSession, proxy: ProxyProc, name: str, want: float,
                          timeout: float = 15.0) -> float:
    deadline = time.monotonic() + timeout
    while True:
        got = val(await scrape(http, proxy.url), name)
        if got >= want:
            return got
        assert time.monotonic() < deadline, f"{name} is {got} after {timeout} s, expected >= {want}"
        await asyncio.sleep(0.05)


def put_object(origin: FaultOrigin, name: str, n: int, seed: int, **faults: object) -> tuple[bytes, str, str]:
    """An object of ``n`` slices (the last one short); (its bytes, its cache key, its validator)."""
    data = seeded_bytes(n * S - 1000, seed)
    obj = origin.set_object(name, data, cache_control="max-age=3600", **faults)
    return data, origin.url_for(name), etag_validator(obj.etag, len(data))


async def test_a_truncated_slice_file_is_dropped_and_refetched(fault_origin: FaultOrigin, proxy_factory,
                                                               http: aiohttp.ClientSession) -> None:
    data, key, v = put_object(fault_origin, "trunc.bin", 8, 81)
    proxy = proxy_factory(fault_origin.url, default_ttl=3600, readahead_slices=0, scrub_rate=0)  # the hit finds it
    url = proxy.url_for("trunc.bin")
    assert (await fetch(http, url)).body == data
    files = await wait_slices(proxy.cache_dir, key, v, set(range(8)))
    with open(files[3], "r+b") as f:
        f.truncate(S // 2)
    before = fault_origin.count_slice_fetches("trunc.bin", S)

    out = await fetch(http, url, headers={"Range": f"bytes={3 * S - 10}-{4 * S + 9}"})  # slice 3 and around it
    assert out.status == 206 and out.complete and out.body == data[3 * S - 10:4 * S + 10]
    after = fault_origin.count_slice_fetches("trunc.bin", S)
    assert {i: after[i] - before[i] for i in range(8)} == {i: int(i == 3) for i in range(8)}
    assert val(await scrape(http, proxy.url), "rangeproxy_cache_corrupt_dropped_total") >= 1
    # Stored again, whole: served from the cache, the origin not asked again.
    new = await until(lambda: slice_file(proxy.cache_dir, key, v, 3) not in (None, files[3])
                      and slice_file(proxy.cache_dir, key, v, 3), "slice 3 stored again")
    assert new.stat().st_size == S
    out = await fetch(http, url)
    assert out.status == 200 and out.complete and out.body == data
    assert fault_origin.count_slice_fetches("trunc.bin", S) == after


@pytest.mark.parametrize("when", ["running", "stopped"])
async def test_a_same_length_corruption_is_found_by_the_scrubber(fault_origin: FaultOrigin, proxy_factory,
                                                                 http: aiohttp.ClientSession, tmp_path: Path,
                                                                 when: str) -> None:
    """Damage in place (the length unchanged) while the proxy runs, or while it is stopped and then
    started again on the same directory: the scrubber finds it before any request does, the
    entry is dropped, and the next request fetches that slice (and only that one) again."""
    data, key, v = put_object(fault_origin, "flip.bin", 6, 82)
    workdir = tmp_path / "flip"
    settings = dict(default_ttl=3600, readahead_slices=0)
    proxy = proxy_factory(fault_origin.url, workdir=workdir, scrub_rate=FAST_SCRUB if when == "running" else 0,
                          **settings)
    url = proxy.url_for("flip.bin")
    assert (await fetch(http, url)).body == data
    files = await wait_slices(proxy.cache_dir, key, v, set(range(6)))
    if when == "stopped":
        assert proxy.stop() == 0
    else:
        await metric_at_least(http, proxy, "rangeproxy_cache_scrubbed_slices_total", 6)  # a pass saw it whole
        assert val(await scrape(http, proxy.url), "rangeproxy_cache_scrub_corrupt_total") == 0
    size = files[4].stat().st_size
    flip(files[4], 1000)
    assert files[4].stat().st_size == size
    if when == "stopped":
        proxy = proxy_factory(fault_origin.url, workdir=workdir, scrub_rate=FAST_SCRUB, **settings)
        url = proxy.url_for("flip.bin")
    fault_origin.reset_counters()

    assert await metric_at_least(http, proxy, "rangeproxy_cache_scrub_corrupt_total", 1) == 1
    cache = json.loads((await fetch(http, proxy.url + "/stats.json")).body)["cache"]
    assert cache["scrub_corrupt"] == 1 and cache["scrubbed"] >= 6
    await until(lambda: slice_file(proxy.cache_dir, key, v, 4) is None, "the damaged slice's row deleted")
    assert not files[4].exists()
    assert fault_origin.requests_for("flip.bin") == []  # found by the scrubber, not by a request

    out = await fetch(http, url)
    assert out.status == 200 and out.complete and out.body == data
    assert dict(fault_origin.count_slice_fetches("flip.bin", S)) == {4: 1}
    out = await fetch(http, url, headers={"Range": f"bytes={4 * S + 999}-{4 * S + 1020}"})
    assert out.status == 206 and out.body == data[4 * S + 999:4 * S + 1021]
    assert dict(fault_origin.count_slice_fetches("flip.bin", S)) == {4: 1}


@pytest.mark.timeout(120)
async def test_sigkill_during_cold_fills_then_a_restart(fault_origin: FaultOrigin, proxy_factory,
                                                        http: aiohttp.ClientSession, tmp_path: Path) -> None:
    """The origin sends slowly (a slice in some 0.4 s): the proxy is killed once a few slices are
    stored, with the answer still coming. Restarted on the same directory it serves the object and
    ranges byte for byte, and fetches again only what was not complete before the kill."""
    n = 40
    data, key, v = put_object(fault_origin, "kill.bin", n, 83, chunk_size=8192, chunk_delay=0.05)
    workdir = tmp_path / "kill"
    settings = dict(default_ttl=3600, readahead_slices=0, max_run_slices=n, scrub_rate=0)
    proxy = proxy_factory(fault_origin.url, workdir=workdir, **settings)
    url = proxy.url_for("kill.bin")
    # Two cold fills at once: a range from the middle, then the whole object (a second upstream run
    # for the slices before it).
    middle = asyncio.create_task(fetch(http, url, headers={"Range": f"bytes={20 * S}-{30 * S - 1}"}, timeout=60))
    await until(lambda: fault_origin.gets_for("kill.bin"), "the origin asked for the middle")
    whole = asyncio.create_task(fetch(http, url, timeout=60))
    await wait_slices(proxy.cache_dir, key, v, {0, 1, 2, 20, 21}, timeout=30)
    assert not all(r.completed for r in fault_origin.gets_for("kill.bin")), "the fills ended before the kill"
    proxy.kill()  # SIGKILL
    assert proxy.proc.returncode == -9
    for task in (whole, middle):
        out = await task
        assert not out.complete  # cut by the kill, never completed with wrong bytes
        assert out.body in (data[:len(out.body)], data[20 * S:20 * S + len(out.body)])

    stored = slice_rows(proxy.cache_dir, key, v)  # what was committed before the kill
    assert {0, 1, 2, 20, 21} <= stored.keys() and len(stored) < n
    for i, path in stored.items():  # a row is written after its whole file: never a partial slice
        assert path.read_bytes() == data[i * S:(i + 1) * S], f"slice {i} stored wrong"
    # A file written but not recorded when the kill came is never served; aged past ORPHAN_AGE
    # (with one more planted beside it), the restarted proxy's scrubber removes it.
    named = all_files(proxy.cache_dir)  # of every entry: the slices and the metadata record
    orphans = [p for p in proxy.cache_dir.rglob("*.val") if p not in named]
    planted = proxy.cache_dir / "0f" / "0f" / ("0" * 28 + ".val")
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_bytes(data[:S])
    orphans.append(planted)
    old = time.time() - 2 * ORPHAN_AGE
    for p in [*orphans, *named]:
        os.utime(p, (old, old))
    fault_origin.clear_faults("kill.bin")
    fault_origin.reset_counters()

    proxy = proxy_factory(fault_origin.url, workdir=workdir, **{**settings, "scrub_rate": FAST_SCRUB})
    url = proxy.url_for("kill.bin")
    assert await metric_at_least(http, proxy, "rangeproxy_cache_orphans_removed_total", len(orphans)) == len(orphans)
    assert not any(p.exists() for p in orphans) and all(p.exists() for p in named)
    for lo, hi in [(0, 3 * S - 1), (S - 7, 21 * S + 6), (20 * S + 5, 20 * S + 5), (len(data) - 100, len(data) - 1)]:
        out = await fetch(http, url, headers={"Range": f"bytes={lo}-{hi}"})
        assert out.status == 206 and out.complete and out.body == data[lo:hi + 1], (lo, hi)
    out = await fetch(http, url)
    assert out.status == 200 and out.complete and out.body == data
    fetched = fault_origin.count_slice_fetches("kill.bin", S)
    assert not set(fetched) & stored.keys(), f"slices complete before the kill fetched again: {sorted(fetched)}"
    assert set(fetched) == set(range(n)) - stored.keys()  # (the last one twice: blocks for the small read first)


async def test_with_two_workers_one_scrubs(fault_origin: FaultOrigin, proxy_factory,
                                           http: aiohttp.ClientSession) -> None:
    data, key, v = put_object(fault_origin, "two.bin", 4, 84)
    proxy = proxy_factory(fault_origin.url, default_ttl=3600, workers=2, scrub_rate=FAST_SCRUB)
    assert (await fetch(http, proxy.url_for("two.bin"))).body == data
    files = await wait_slices(proxy.cache_dir, key, v, set(range(4)))
    flip(files[1], 5)
    await metric_at_least(http, proxy, "rangeproxy_cache_scrub_corrupt_total", 1)
    assert proxy.stderr_text().count("scrubbing the slices of") == 1
    # Whichever worker answers, the damaged slice is not served: dropped, and fetched again.
    for _ in range(4):
        out = await fetch(http, proxy.url_for("two.bin"), headers={"Range": f"bytes={S}-{2 * S - 1}"})
        assert out.status == 206 and out.body == data[S:2 * S]
