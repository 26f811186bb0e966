"""Origin updates (a new ETag) and freshness: a response is made of one
version only -- never a mix -- and once the proxy has noticed a change
(on a revalidation or a slice fetch) it serves the new version whole.
Cache-Control no-store / private are never stored; max-age is respected."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.client import Outcome, content_range, fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.servers import DEFAULT_SLICE

pytestmark = pytest.mark.integration

S = DEFAULT_SLICE


def rng(a: int, b: int) -> dict[str, str]:
    return {"Range": f"bytes={a}-{b}"}


def which_version(out: Outcome, versions: list[bytes], a: int = 0, b: int | None = None) -> int | None:
    """Index of the version whose bytes [a, b] the (complete) body is, else None."""
    for i, v in enumerate(versions):
        last = len(v) - 1 if b is None else min(b, len(v) - 1)
        if out.body == v[a:last + 1]:
            return i
    return None


def assert_one_version_or_cut(out: Outcome, versions: list[bytes], a: int = 0, b: int | None = None) -> None:
    if out.status == 502:
        return
    assert out.status in (200, 206), out.status
    if out.complete:
        assert which_version(out, versions, a, b) is not None, "the body is a mix of versions"
    else:
        assert any(out.body == v[a:a + len(out.body)] for v in versions), "wrong bytes before the cut"


async def test_revalidation_serves_the_new_version_whole(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    size = 4 * S + 5
    v1, v2 = seeded_bytes(size, 41), seeded_bytes(size, 42)
    v3 = seeded_bytes(6 * S + 1, 43)
    fault_origin.set_object("ver.bin", v1)
    proxy = proxy_factory(fault_origin.url, default_ttl=0, readahead_slices=0)
    url = proxy.url_for("ver.bin")

    out = await fetch(http, url)
    assert out.status == 200 and out.body == v1

    fault_origin.set_object("ver.bin", v2)  # same length, new bytes, new ETag
    out = await fetch(http, url)
    assert out.status == 200 and out.complete and out.body == v2, which_version(out, [v1, v2])
    assert out.header("ETag") == fault_origin.get_object("ver.bin").etag
    out = await fetch(http, url, headers=rng(S - 3, 3 * S))
    assert out.status == 206 and out.body == v2[S - 3:3 * S + 1]

    fault_origin.set_object("ver.bin", v3)  # longer
    out = await fetch(http, url, headers=rng(S - 3, 3 * S))
    assert out.status == 206 and out.complete and out.body == v3[S - 3:3 * S + 1]
    assert content_range(out.header("Content-Range")) == (S - 3, 3 * S, len(v3))
    out = await fetch(http, url)
    assert out.status == 200 and out.body == v3
    out = await fetch(http, url, headers=rng(5 * S, 6 * S))  # beyond the old end
    assert out.status == 206 and out.body == v3[5 * S:]

    # unchanged: revalidated (the origin is asked), but no slice is fetched again
    before = fault_origin.count_slice_fetches("ver.bin", S)
    n = len(fault_origin.requests_for("ver.bin"))
    out = await fetch(http, url)
    assert out.status == 200 and out.body == v3
    assert len(fault_origin.requests_for("ver.bin")) > n, "default_ttl=0 but no revalidation"
    assert fault_origin.count_slice_fetches("ver.bin", S) == before, "unchanged slices were fetched again"


async def test_shrinking_version(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    v1, v2 = seeded_bytes(5 * S, 44), seeded_bytes(S + 10, 45)
    fault_origin.set_object("shr.bin", v1)
    proxy = proxy_factory(fault_origin.url, default_ttl=0)
    url = proxy.url_for("shr.bin")
    assert (await fetch(http, url)).body == v1
    fault_origin.set_object("shr.bin", v2)
    out = await fetch(http, url, headers=rng(3 * S, 4 * S))
    assert out.status == 416 and out.header("Content-Range") == f"bytes */{len(v2)}"
    out = await fetch(http, url)
    assert out.status == 200 and out.body == v2


async def test_if_range_with_the_old_etag_gets_the_new_version(fault_origin: FaultOrigin, proxy_factory,
                                                               http) -> None:
    v1, v2 = seeded_bytes(3 * S, 46), seeded_bytes(3 * S, 47)
    fault_origin.set_object("irv.bin", v1)
    proxy = proxy_factory(fault_origin.url, default_ttl=0)
    url = proxy.url_for("irv.bin")
    old = (await fetch(http, url)).header("ETag")
    fault_origin.set_object("irv.bin", v2)
    out = await fetch(http, url, headers={**rng(10, 20), "If-Range": old})
    assert out.status == 200 and out.body == v2
    new = fault_origin.get_object("irv.bin").etag
    out = await fetch(http, url, headers={**rng(10, 20), "If-Range": new})
    assert out.status == 206 and out.body == v2[10:21]


async def test_change_noticed_on_a_missing_slice(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    """No revalidation (long TTL): the change shows when a missing slice is
    fetched. That response is all-new, or fails safely; the next ones are all-new."""
    size = 6 * S + 3
    v1, v2 = seeded_bytes(size, 48), seeded_bytes(size, 49)
    fault_origin.set_object("miss.bin", v1)
    proxy = proxy_factory(fault_origin.url, default_ttl=3600, readahead_slices=0)  # slices 2-3 stay missing
    url = proxy.url_for("miss.bin")
    out = await fetch(http, url, headers=rng(0, 2 * S - 1))
    assert out.body == v1[:2 * S]

    fault_origin.set_object("miss.bin", v2)
    out = await fetch(http, url, headers=rng(0, 4 * S - 1))
    assert_one_version_or_cut(out, [v1, v2], 0, 4 * S - 1)
    if out.complete and out.status == 206:  # all-v1 is impossible: slices 2-3 were not cached
        assert out.body == v2[:4 * S], which_version(out, [v1, v2], 0, 4 * S - 1)

    out = await fetch(http, url, headers=rng(0, 4 * S - 1))
    assert out.status == 206 and out.complete and out.body == v2[:4 * S], which_version(out, [v1, v2], 0, 4 * S - 1)
    out = await fetch(http, url)
    assert out.status == 200 and out.complete and out.body == v2
    out = await fetch(http, url, headers=rng(S, S + 9))
    assert out.body == v2[S:S + 10]


async def test_never_a_mix_while_the_origin_keeps_changing(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    size = 6 * S + 11
    versions = [seeded_bytes(size, 100 + i) for i in range(6)]
    fault_origin.set_object("flip.bin", versions[0], chunk_size=16384, chunk_delay=0.003)
    proxy = proxy_factory(fault_origin.url, default_ttl=0, max_run_slices=2)
    url = proxy.url_for("flip.bin")
    stop = asyncio.Event()

    async def flipper() -> None:
        i = 0
        while not stop.is_set():
            await asyncio.sleep(0.07)
            i = (i + 1) % len(versions)
            fault_origin.set_object("flip.bin", versions[i], chunk_size=16384, chunk_delay=0.003)

    task = asyncio.create_task(flipper())
    seen: set[int] = set()
    complete = 0
    try:
        deadline = time.monotonic() + 8
        n = 0
        while time.monotonic() < deadline and n < 40:
            n += 1
            if n % 2:
                out = await fetch(http, url, timeout=20)
                assert_one_version_or_cut(out, versions)
                if out.complete and out.status == 200:
                    seen.add(which_version(out, versions))
                    complete += 1
            else:
                a, b = S // 2, 5 * S
                out = await fetch(http, url, headers=rng(a, b), timeout=20)
                assert_one_version_or_cut(out, versions, a, b)
                if out.complete and out.status == 206:
                    complete += 1
    finally:
        stop.set()
        await task
    assert complete >= 5, "almost nothing was served completely"
    # and once the origin is quiet, the current version is served
    current = fault_origin.get_object("flip.bin").data
    out = await fetch(http, url)
    assert out.status == 200 and out.complete and out.body == current


async def test_max_age_is_respected(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    v1, v2 = seeded_bytes(2 * S, 50), seeded_bytes(2 * S, 51)
    fault_origin.set_object("ma.bin", v1, cache_control="max-age=2")
    proxy = proxy_factory(fault_origin.url, default_ttl=3600)
    url = proxy.url_for("ma.bin")
    assert (await fetch(http, url)).body == v1
    t_cached = time.monotonic()
    n = len(fault_origin.requests_for("ma.bin"))

    fault_origin.set_object("ma.bin", v2, cache_control="max-age=2")
    out = await fetch(http, url)
    if time.monotonic() - t_cached < 1.5:  # still fresh: served from the cache, origin not asked
        assert out.body == v1 and out.header("X-Cache") == "HIT"
        assert len(fault_origin.requests_for("ma.bin")) == n
        age = int(out.header("Age"))
        assert 0 <= age <= 2
    await asyncio.sleep(max(0.0, t_cached + 3.1 - time.monotonic()))
    out = await fetch(http, url)
    assert out.status == 200 and out.complete and out.body == v2, "stale content served after max-age"
    assert len(fault_origin.requests_for("ma.bin")) > n


async def test_max_age_zero_with_long_default_ttl_revalidates(fault_origin: FaultOrigin, proxy_factory,
                                                              http) -> None:
    v1, v2 = seeded_bytes(S + 1, 52), seeded_bytes(S + 1, 53)
    fault_origin.set_object("ma0.bin", v1, cache_control="max-age=0")
    proxy = proxy_factory(fault_origin.url, default_ttl=3600)
    url = proxy.url_for("ma0.bin")
    assert (await fetch(http, url)).body == v1
    fault_origin.set_object("ma0.bin", v2, cache_control="max-age=0")
    out = await fetch(http, url)
    assert out.status == 200 and out.body == v2


@pytest.mark.parametrize("cc", ["no-store", "private", "private, max-age=600", "no-store, max-age=600"])
async def test_no_store_and_private_are_never_stored(fault_origin: FaultOrigin, proxy_factory, http, cc) -> None:
    data = seeded_bytes(3 * S + 5, 54)
    fault_origin.set_object("ns.bin", data, cache_control=cc)
    proxy = proxy_factory(fault_origin.url, default_ttl=3600)
    url = proxy.url_for("ns.bin")
    for i in range(3):
        out = await fetch(http, url)
        assert out.status == 200 and out.body == data
        assert out.header("X-Cache") != "HIT", i
    counts = fault_origin.count_slice_fetches("ns.bin", S)
    assert all(counts[i] >= 3 for i in range(4)), counts

    for i in range(2):
        out = await fetch(http, url, headers=rng(S + 1, 2 * S + 1))
        assert out.status == 206 and out.body == data[S + 1:2 * S + 2]
    assert fault_origin.count_slice_fetches("ns.bin", S)[1] >= counts[1] + 2
    # a changed object is seen at once (nothing stored to be stale)
    new = seeded_bytes(3 * S + 5, 55)
    fault_origin.set_object("ns.bin", new, cache_control=cc)
    out = await fetch(http, url)
    assert out.status == 200 and out.body == new
    # nothing of this object reached the disk cache
    assert not any(p.stat().st_size >= S for p in proxy.cache_dir.rglob("*.val")), "slices were written to disk"


async def test_without_a_strong_validator_slices_of_two_fetches_are_never_combined(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    """RFC 9111 §3.4: an object with neither ETag nor Last-Modified changes without a trace;
    its slices are not stored, and one response is one upstream answer."""
    size = 6 * S
    v1, v2 = seeded_bytes(size, 44), seeded_bytes(size, 45)  # same length: nothing else differs
    fault_origin.set_object("plain.bin", v1, validators=False, cache_control="max-age=600")
    proxy = proxy_factory(fault_origin.url, readahead_slices=0, max_run_slices=2)
    url = proxy.url_for("plain.bin")
    out = await fetch(http, url, headers=rng(0, 2 * S - 1))
    assert out.status == 206 and out.body == v1[:2 * S]
    fault_origin.set_object("plain.bin", v2, validators=False, cache_control="max-age=600")
    fault_origin.reset_counters()
    out = await fetch(http, url, headers=rng(0, size - 1))
    assert out.status == 206 and out.complete
    assert out.body == v2, which_version(out, [v1, v2])  # not v1's first slices and v2's last ones
    assert len(fault_origin.gets_for("plain.bin")) == 1  # one upstream answer for the whole response


async def test_an_object_not_stored_is_read_by_each_response_from_its_own_answer(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    """Without a strong validator two responses never share an upstream answer (neither can
    tell which version the other got), and a reader that stops early lets its run go."""
    size = 24 * S
    data = seeded_bytes(size, 46)
    fault_origin.set_object("own.bin", data, validators=False, cache_control="max-age=600")
    proxy = proxy_factory(fault_origin.url, readahead_slices=0, max_run_slices=2)
    url = proxy.url_for("own.bin")
    out = await fetch(http, url, headers=rng(0, 0))  # learn it
    assert out.status == 206 and out.body == data[:1]
    fault_origin.reset_counters()
    a, b = await asyncio.gather(fetch(http, url), fetch(http, url, headers=rng(S, size - 1)))
    assert a.status == 200 and a.body == data
    assert b.status == 206 and b.body == data[S:]
    # Nothing of it was kept: each passes through, the origin answering its own request.
    assert sorted(str(r.range) for r in fault_origin.gets_for("own.bin")) == ["None", f"bytes={S}-{size - 1}"]
    # A client that reads one slice of a big one and hangs up: its run stops (the origin's
    # answer, far larger than the socket buffers, is cut), and nothing is left stuck.
    big = seeded_bytes(1024 * S, 47)
    fault_origin.set_object("big.bin", big, validators=False, cache_control="max-age=600")
    big_url = proxy.url_for("big.bin")
    assert (await fetch(http, big_url, headers=rng(0, 0))).body == big[:1]
    fault_origin.reset_counters()
    async with http.get(big_url) as resp:
        assert resp.status == 200
        assert await resp.content.readexactly(S) == big[:S]
        resp.close()  # hang up, unread rest and all
    # (waited for in a thread: the loop must run to close the client's socket)
    assert await asyncio.to_thread(fault_origin.wait_idle, 3), "the abandoned read's upstream answer is stuck"
    out = await fetch(http, big_url, headers=rng(3 * S, 5 * S))
    assert out.status == 206 and out.body == big[3 * S:5 * S + 1]


async def test_an_object_without_a_strong_validator_is_stored_whole_and_never_completed_from_another_answer(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    """RFC 9111 §3.4: an answer that brought all of it is stored and reused (its slices tied to
    that one answer); a slice of it that left the store is not fetched on its own: the
    response then comes whole from one new answer, and never mixes two."""
    size = 3 * S
    v1, v2 = seeded_bytes(size, 48), seeded_bytes(size, 49)
    fault_origin.set_object("w.bin", v1, validators=False, cache_control="max-age=600")
    proxy = proxy_factory(fault_origin.url, readahead_slices=0, max_run_slices=4)
    url = proxy.url_for("w.bin")
    out = await fetch(http, url)  # one answer, all of it
    assert out.status == 200 and out.body == v1
    out = await fetch(http, url, headers=rng(S + 3, 2 * S + 3))
    assert out.status == 206 and out.body == v1[S + 3:2 * S + 4] and out.header("X-Cache") == "HIT"
    assert len(fault_origin.gets_for("w.bin")) == 1
    # The origin changes without a trace, and one slice leaves the store.
    fault_origin.set_object("w.bin", v2, validators=False, cache_control="max-age=600")
    deadline = time.monotonic() + 10  # the slices go to the disk behind the response
    while len(gone := sorted(p for p in proxy.cache_dir.rglob("*.val") if p.stat().st_size == S)) < 3:
        assert time.monotonic() < deadline, "the slices never reached the disk"
        await asyncio.sleep(0.02)
    proxy.stop()  # (a running proxy may still hold the file open)
    first = next(p for p in gone if p.read_bytes() == v1[:S])
    first.unlink()
    proxy = proxy_factory(fault_origin.url, workdir=proxy.workdir, readahead_slices=0, max_run_slices=4)
    url = proxy.url_for("w.bin")
    fault_origin.reset_counters()
    # Its first slice is gone, two are stored: it is learnt anew, all of it from one answer.
    out = await fetch(http, url)
    assert out.status == 200 and out.complete and out.body == v2, which_version(out, [v1, v2])
    assert len(fault_origin.gets_for("w.bin")) == 1
    out = await fetch(http, url, headers=rng(2 * S, size - 1))
    assert out.status == 206 and out.body == v2[2 * S:] and out.header("X-Cache") == "HIT"
