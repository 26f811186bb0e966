"""Failover across an origin's upstream list (``upstream = [A, B]``): two fault origins on loopback
serving the same object, one killed or failing mid-test; every byte checked, and never a splice of
two versions when B's validator differs from A's."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Callable, Iterator

import aiohttp
import pytest

from tests.support.client import Outcome, fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.origins import write_config
from tests.support.servers import DEFAULT_SLICE, ProxyProc

pytestmark = pytest.mark.integration

S = DEFAULT_SLICE
SLICES = 160
NAME = "f.bin"
LAST_MODIFIED = float(int(time.time()) - 3600)  # one Last-Modified for both upstreams


@pytest.fixture
def pair(fault_origin: FaultOrigin) -> Iterator[tuple[FaultOrigin, FaultOrigin]]:
    with FaultOrigin() as b:
        yield fault_origin, b


def serve(origin: FaultOrigin, data: bytes, etag: str) -> None:
    origin.set_object(NAME, data, etag=etag, cache_control="max-age=600").last_modified = LAST_MODIFIED


def start(proxy_factory: Callable[..., ProxyProc], tmp_path: Path, a: FaultOrigin, b: FaultOrigin,
          cooldown: str = "30s") -> ProxyProc:
    config = write_config(tmp_path / "failover.toml", [{
        "name": "pair", "upstream": [a.url, b.url], "failover_cooldown": cooldown}],
        readahead_slices=0, block_size="4MiB", max_run_slices=1)
    return proxy_factory("", config=config)


async def read_slice(http: aiohttp.ClientSession, proxy: ProxyProc, i: int) -> Outcome:
    """A range inside slice ``i`` (each one a miss: the proxy asks an upstream for that slice)."""
    return await fetch(http, proxy.url_for(NAME), headers={"Range": f"bytes={i * S + 7}-{i * S + 7 + 999}"},
                       timeout=20)


def expect(data: bytes, i: int) -> bytes:
    return data[i * S + 7:i * S + 7 + 1000]


async def test_a_killed_upstream_fails_over_and_every_byte_is_right(pair, proxy_factory, tmp_path, http) -> None:
    a, b = pair
    data = seeded_bytes(SLICES * S, 201)
    serve(a, data, "same")
    serve(b, data, "same")
    proxy = start(proxy_factory, tmp_path, a, b)
    outcomes: list[tuple[int, float, Outcome]] = []
    killed = float("inf")

    async def reader() -> None:  # until 20 reads have started after the kill
        for i in range(SLICES):
            if sum(started > killed for _, started, _ in outcomes) >= 20:
                return
            outcomes.append((i, time.monotonic(), await read_slice(http, proxy, i)))

    task = asyncio.create_task(reader())
    while len(outcomes) < 8:  # A serves the first ones
        assert not task.done()
        await asyncio.sleep(0.01)
    await asyncio.to_thread(a.stop)  # killed while the reader goes on
    killed = time.monotonic()
    await asyncio.wait_for(task, 60)
    for i, started, out in outcomes:
        if out.status == 206 and out.complete:
            assert out.body == expect(data, i), i
        else:  # only the one in flight as A went away may fail, and cleanly
            assert started < killed and out.status in (206, 502), (i, out.status, out.error)
    after = [out for _, started, out in outcomes if started > killed]
    assert len(after) == 20 and all(o.status == 206 and o.complete for o in after)
    served_a = {r.range for r in a.gets_for(NAME) if r.status == 206}
    served_b = {r.range for r in b.gets_for(NAME) if r.status == 206}
    assert len(served_a) >= 8 and len(served_b) >= 20 and not served_a & served_b
    assert len(served_a) + len(served_b) >= len(outcomes) - 1  # each read a miss, on one of them


async def test_a_5xx_moves_to_the_next_upstream_and_cools_down(pair, proxy_factory, tmp_path, http) -> None:
    a, b = pair
    data = seeded_bytes(SLICES * S, 202)
    serve(a, data, "same")
    serve(b, data, "same")
    cooldown = 4.0
    proxy = start(proxy_factory, tmp_path, a, b, cooldown=f"{cooldown}s")
    assert (await read_slice(http, proxy, 0)).body == expect(data, 0)
    assert [r.status for r in a.gets_for(NAME)] == [206] and not b.gets_for(NAME)
    a.set_fault(NAME, fail_status=503)
    t0 = time.monotonic()
    out = await read_slice(http, proxy, 1)
    assert out.status == 206 and out.body == expect(data, 1)  # B's answer, the client never sees A's 503
    assert [r.status for r in a.gets_for(NAME)] == [206, 503] and [r.status for r in b.gets_for(NAME)] == [206]
    assert "answered 503, trying the next upstream" in proxy.stderr_text()
    a.clear_faults(NAME)  # A is well again, but cooling down: B takes the next misses
    for i in range(2, 8):
        out = await read_slice(http, proxy, i)
        assert out.status == 206 and out.body == expect(data, i)
    assert time.monotonic() - t0 < cooldown, "too slow to tell a cool-down apart"
    assert len(a.gets_for(NAME)) == 2 and len(b.gets_for(NAME)) == 7
    await asyncio.sleep(cooldown - (time.monotonic() - t0) + 0.3)
    out = await read_slice(http, proxy, 8)  # cooled down: A first again
    assert out.status == 206 and out.body == expect(data, 8)
    assert [r.status for r in a.gets_for(NAME)] == [206, 503, 206] and len(b.gets_for(NAME)) == 7


def one_version(out: Outcome, versions: dict[str, bytes]) -> str:
    """The ETag of the version ``out`` is: its body is exactly that version's bytes (complete),
    or a prefix of them (cut, or a clean 502 with none); fails on a mix, or on bytes under
    another version's ETag."""
    if out.status == 502:
        return ""
    assert out.status in (200, 206), (out.status, out.body[:200])
    etag = out.header("ETag") or ""
    assert etag in versions, etag
    if out.complete:
        assert out.body == versions[etag], f"a complete body that is not all of {etag}"
        return etag
    assert versions[etag].startswith(out.body), f"a cut body that is not {etag}'s"
    return ""


@pytest.mark.parametrize("first", ["whole", "ranged"])
async def test_an_upstream_with_another_etag_is_a_changed_object_never_spliced(pair, proxy_factory, tmp_path,
                                                                               http, first: str) -> None:
    a, b = pair
    old, new = seeded_bytes(8 * S, 203), seeded_bytes(8 * S, 204)
    versions = {'"from-a"': old, '"from-b"': new}
    serve(a, old, "from-a")
    serve(b, new, "from-b")
    proxy = start(proxy_factory, tmp_path, a, b)
    url = proxy.url_for(NAME)
    for rng in ("0-99", f"{S}-{2 * S + 9}"):  # slices 0..2 from A
        out = await fetch(http, url, headers={"Range": f"bytes={rng}"})
        lo, hi = (int(x) for x in rng.split("-"))
        assert out.status == 206 and out.body == old[lo:hi + 1] and out.header("ETag") == '"from-a"'
    a.set_fault(NAME, fail_status=503)  # from now on B answers, with its own version
    if first == "whole":
        # Slices 0..2 are A's in the cache, the rest must come from B: all of one, or cut within A's.
        one_version(await fetch(http, url), versions)
    else:
        # Nothing of it cached: B's answer shows the change before a byte went out, so the client
        # gets B's version whole.
        out = await fetch(http, url, headers={"Range": f"bytes={4 * S}-{4 * S + 99}"})
        assert one_version(out, {k: v[4 * S:4 * S + 100] for k, v in versions.items()}) == '"from-b"'
    assert one_version(await fetch(http, url), versions) == '"from-b"', "B's version, whole, once learnt"
    spans = [(0, 3 * S), (3 * S - 50, 5 * S + 50), (7 * S, 8 * S), (S + 5, S + 105)]
    outs = await asyncio.gather(*(fetch(http, url, headers={"Range": f"bytes={s}-{e - 1}"}) for s, e in spans))
    for (s, e), out in zip(spans, outs):
        assert out.status == 206 and out.body == new[s:e] and out.header("ETag") == '"from-b"'
    assert b.gets_for(NAME) and all(r.etag == '"from-b"' for r in b.gets_for(NAME))
