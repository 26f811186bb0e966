"""Revalidation: once per object (not per slice), collapsed, and a 304 keeps the slices."""

from __future__ import annotations

import asyncio

from tests.support.client import fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.servers import DEFAULT_SLICE

S = DEFAULT_SLICE


async def test_stale_object_is_revalidated_once_and_a_304_keeps_its_slices(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = seeded_bytes(6 * S + 5, 130)
    fault_origin.set_object("f.bin", data, cache_control="max-age=1")
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)
    url = proxy.url_for("f.bin")
    assert (await fetch(http, url)).body == data
    assert fault_origin.wait_idle(5)
    fault_origin.reset_counters()
    await asyncio.sleep(1.2)  # now stale

    outs = await asyncio.gather(*(fetch(http, url) for _ in range(20)))
    assert all(o.status == 200 and o.body == data for o in outs)
    reqs = fault_origin.requests_for("f.bin")
    # One conditional request for the whole object and all 20 clients; no slice refetched.
    assert len(reqs) == 1, [(r.range, r.if_none_match, r.status) for r in reqs]
    assert reqs[0].if_none_match == '"v1-f.bin"' and reqs[0].status == 304
    assert all(o.header("X-Cache") == "HIT" for o in outs)
    # ...and fresh again for max-age: no further request.
    assert (await fetch(http, url, headers={"Range": f"bytes={S}-{3 * S}"})).body == data[S:3 * S + 1]
    assert len(fault_origin.requests_for("f.bin")) == 1


async def test_a_changed_object_on_revalidation_is_served_whole_from_the_new_version(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    v1, v2 = seeded_bytes(4 * S, 131), seeded_bytes(4 * S, 132)
    fault_origin.set_object("g.bin", v1, cache_control="max-age=1")
    proxy = proxy_factory(fault_origin.url)
    url = proxy.url_for("g.bin")
    assert (await fetch(http, url)).body == v1
    fault_origin.set_object("g.bin", v2, cache_control="max-age=1")
    await asyncio.sleep(1.2)
    out = await fetch(http, url)
    assert out.status == 200 and out.body == v2 and out.header("ETag") == '"v2-g.bin"'
    out = await fetch(http, url, headers={"Range": f"bytes=10-{2 * S}"})
    assert out.body == v2[10:2 * S + 1]


async def test_origin_change_found_before_the_first_byte_is_answered_from_the_new_version(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    v1, v2 = seeded_bytes(4 * S, 133), seeded_bytes(4 * S, 134)
    fault_origin.set_object("h.bin", v1, cache_control="max-age=3600")
    proxy = proxy_factory(fault_origin.url, readahead_slices=0, block_size=S)
    url = proxy.url_for("h.bin")
    assert (await fetch(http, url, headers={"Range": f"bytes={3 * S}-{4 * S - 1}"})).body == v1[3 * S:]
    fault_origin.set_object("h.bin", v2, cache_control="max-age=3600")
    # Slice 0 is missing: fetching it reveals the change before any byte went out, so the
    # response starts over from the new version instead of failing.
    out = await fetch(http, url, headers={"Range": f"bytes=0-{4 * S - 1}"})
    assert out.status == 206 and out.complete and out.body == v2
    assert out.header("ETag") == '"v2-h.bin"'
