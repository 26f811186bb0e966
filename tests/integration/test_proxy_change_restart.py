"""An object that changes at the origin while the proxy still holds its old version as fresh.

The proxy learns of it when a slice it fetches carries another validator; before any byte of the
answer went out it must answer from the new version (once), not a 502: the client asked for no
particular version, and nothing failed (found by the soak, hardening.soak).
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.client import fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.servers import DEFAULT_SLICE

pytestmark = pytest.mark.integration

S = DEFAULT_SLICE
V1 = seeded_bytes(4 * S + 10, 61)
V2 = seeded_bytes(4 * S + 10, 62)


@pytest.mark.parametrize("headers, status, want", [
    ({}, 200, V2),
    ({"Range": f"bytes={S}-{3 * S}"}, 206, V2[S:3 * S + 1]),
])
async def test_a_change_found_before_the_first_byte_answers_from_the_new_version(
        fault_origin: FaultOrigin, proxy_factory, http, headers, status, want) -> None:
    fault_origin.set_object("c.bin", V1, cache_control="max-age=600")
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)
    url = proxy.url_for("c.bin")
    first = await fetch(http, url, headers={"Range": "bytes=0-9"})
    assert first.status == 206 and first.body == V1[:10]  # v1's metadata and slice 0 only

    fault_origin.set_object("c.bin", V2, cache_control="max-age=600")
    out = await fetch(http, url, headers=headers)
    assert out.status == status and out.complete, (out.status, out.error, out.body[:200])
    assert out.header("ETag") == fault_origin.get_object("c.bin").etag
    assert out.body == want


async def test_many_clients_meeting_the_change_at_once_all_get_the_new_version(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    fault_origin.set_object("m.bin", V1, cache_control="max-age=600")
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)
    url = proxy.url_for("m.bin")
    assert (await fetch(http, url, headers={"Range": "bytes=0-9"})).status == 206

    fault_origin.set_object("m.bin", V2, cache_control="max-age=600")
    outs = await asyncio.gather(*(fetch(http, url) for _ in range(30)))
    assert [(o.status, o.complete) for o in outs] == [(200, True)] * 30, [(o.status, o.error) for o in outs]
    assert all(o.body == V2 for o in outs)


async def test_a_request_restarted_by_the_change_does_not_join_a_revalidation_from_before_it(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    """A revalidation that began before the change (its 304 names the old version) is still in
    flight when another request finds the change: the restarted request must learn the object
    anew, not wait for that revalidation and meet the same mismatch again (which was a 502)."""
    fault_origin.set_object("p.bin", V1, cache_control="max-age=600")
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)
    url = proxy.url_for("p.bin")
    assert (await fetch(http, url, headers={"Range": "bytes=0-9"})).status == 206

    fault_origin.set_fault("p.bin", answer_delay=1.5)
    revalidating = asyncio.ensure_future(fetch(http, url, headers={"Range": "bytes=0-9", "Cache-Control": "no-cache"}))
    for _ in range(250):  # the revalidation reached the origin (5 s at most)
        if any(r.if_none_match for r in fault_origin.requests_for("p.bin")):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError(f"no revalidation reached the origin: {list(fault_origin.requests_for('p.bin'))}")
    fault_origin.set_object("p.bin", V2, cache_control="max-age=600")
    fault_origin.set_fault("p.bin", answer_delay=0.0)

    out = await fetch(http, url, headers={"Range": f"bytes={S}-{2 * S - 1}"})
    assert out.status == 206 and out.complete, (out.status, out.error, out.body[:200])
    assert out.header("ETag") == fault_origin.get_object("p.bin").etag and out.body == V2[S:2 * S]
    early = await revalidating  # it asked before the change: either version, whole and named by its ETag
    assert early.status == 206 and early.complete, (early.status, early.error)
    assert early.body == {'"v1-p.bin"': V1, '"v2-p.bin"': V2}[early.header("ETag")][:10]


@pytest.mark.parametrize("headers", [{}, {"Range": f"bytes={3 * S}-{3 * S + 99}"}, {"Range": f"bytes={S}-"}])
async def test_an_object_that_shrank_meanwhile(fault_origin: FaultOrigin, proxy_factory, http, headers) -> None:
    """Slices past the new end are a 416 from the origin: the object changed, not a fault."""
    short = seeded_bytes(S // 2, 63)
    fault_origin.set_object("s.bin", V1, cache_control="max-age=600")
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)
    url = proxy.url_for("s.bin")
    assert (await fetch(http, url, headers={"Range": "bytes=0-9"})).status == 206

    fault_origin.set_object("s.bin", short, cache_control="max-age=600")
    out = await fetch(http, url, headers=headers)
    if headers:
        assert out.status == 416 and out.header("Content-Range") == f"bytes */{len(short)}", (out.status, out.body)
    else:
        assert out.status == 200 and out.complete and out.body == short, (out.status, out.error, out.body[:200])
    assert proxy.alive() and "list index out of range" not in proxy.stderr_text()


async def test_a_late_answer_for_the_old_version_does_not_drop_the_new_one(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    """A slice fetch for v1 is slow to answer; meanwhile a revalidation learns v2 and a request
    restarted on v2 is being filled. The late answer (of v2 bytes, for a v1 fetch) must not drop
    v2 as well: the restarted request would fail a second time (a 502 or a cut answer)."""
    fault_origin.set_object("l.bin", V1, cache_control="max-age=600")
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)
    url = proxy.url_for("l.bin")
    assert (await fetch(http, url, headers={"Range": "bytes=0-9"})).status == 206

    fault_origin.set_fault("l.bin", delay=1.0)  # decided after the delay: v2's bytes, for v1's fetch
    slow = asyncio.ensure_future(fetch(http, url, headers={"Range": f"bytes={S}-{2 * S - 1}"}))
    for _ in range(250):
        if any(r.range and r.range.startswith(f"bytes={S}-") for r in fault_origin.requests_for("l.bin")):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the slice fetch did not reach the origin")
    fault_origin.set_object("l.bin", V2, cache_control="max-age=600")
    fault_origin.set_fault("l.bin", delay=0.0, chunk_size=1024, chunk_delay=0.05)  # v2's fills take a while
    fresh = await fetch(http, url, headers={"Range": "bytes=0-9", "Cache-Control": "no-cache"})
    assert fresh.status == 206 and fresh.body == V2[:10]

    out = await slow
    assert out.status == 206 and out.complete, (out.status, out.error, out.body[:200])
    assert out.header("ETag") == '"v2-l.bin"' and out.body == V2[S:2 * S]
