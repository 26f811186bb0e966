"""Verification of what the origin sends, and origin failures.

The rule checked everywhere: the bytes a client receives are never wrong.
A problem noticed before the proxy sent its response headers gives a 502
(or the origin's own 4xx/5xx status); one noticed later cuts the connection,
so the client sees an incomplete body -- never a clean end with wrong bytes.
Nothing broken is cached: once the fault is gone the right bytes are served.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.support.client import Outcome, content_range, fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.servers import DEFAULT_SLICE, unused_url

pytestmark = pytest.mark.integration

S = DEFAULT_SLICE
SIZE = 4 * S + 77
DATA = seeded_bytes(SIZE, 31)


def rng(a: int, b: int) -> dict[str, str]:
    return {"Range": f"bytes={a}-{b}"}


def assert_failed_safely(out: Outcome, expected: bytes, statuses: tuple[int, ...] = (502,)) -> None:
    """Either an error status before any body, or a cut body that is a correct prefix."""
    if out.status in statuses:
        return
    assert out.status in (200, 206), f"unexpected status {out.status}: {out.body[:200]!r}"
    assert not out.complete, "a faulty origin response was passed off as a complete, clean response"
    assert out.body == expected[:len(out.body)], "wrong bytes before the cut"


async def assert_recovers(http, url: str, headers: dict[str, str], expected: bytes, status: int = 206) -> Outcome:
    out = await fetch(http, url, headers=headers)
    assert out.status == status and out.complete, (out.status, out.error)
    assert out.body == expected
    return out


# --- verification of 206 answers ------------------------------------------------------


async def test_shifted_content_range_cold_is_502_and_not_cached(fault_origin: FaultOrigin, proxy_factory,
                                                               http) -> None:
    fault_origin.set_object("sh.bin", DATA, shift_content_range=100)
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)  # exact fetch counts
    url = proxy.url_for("sh.bin")

    out = await fetch(http, url, headers=rng(10, 20))
    assert out.status == 502, (out.status, out.header("Content-Range"), out.body[:100])
    assert fault_origin.gets_for("sh.bin"), "the origin was not asked"

    fault_origin.clear_faults("sh.bin")
    before = fault_origin.count_slice_fetches("sh.bin", S)[0]
    await assert_recovers(http, url, rng(10, 20), DATA[10:21])
    assert fault_origin.count_slice_fetches("sh.bin", S)[0] == before + 1, "the bad slice was cached"
    await assert_recovers(http, url, {}, DATA, status=200)


async def test_shifted_content_range_on_a_later_run(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    fault_origin.set_object("sh2.bin", DATA)
    proxy = proxy_factory(fault_origin.url)
    url = proxy.url_for("sh2.bin")
    await assert_recovers(http, url, rng(0, S - 1), DATA[:S])  # slice 0 cached

    fault_origin.set_fault("sh2.bin", shift_content_range=-7)
    out = await fetch(http, url, headers=rng(0, 3 * S - 1))
    assert_failed_safely(out, DATA[:3 * S])

    fault_origin.clear_faults("sh2.bin")
    await assert_recovers(http, url, rng(0, 3 * S - 1), DATA[:3 * S])
    await assert_recovers(http, url, {}, DATA, status=200)


async def test_total_length_change_under_the_same_etag(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    """The origin keeps the ETag but the length changes (a broken origin): the
    proxy never serves a mix of the two contents, and recovers."""
    fault_origin.set_object("len.bin", DATA, etag="fixed")
    proxy = proxy_factory(fault_origin.url)
    url = proxy.url_for("len.bin")
    await assert_recovers(http, url, rng(0, S - 1), DATA[:S])

    new = seeded_bytes(SIZE + 1000, 32)
    fault_origin.set_object("len.bin", new, etag="fixed")
    outcomes = []
    for _ in range(3):
        out = await fetch(http, url, headers=rng(0, 3 * S - 1))
        outcomes.append(out)
        if out.status == 206 and out.complete:
            # only slice 0 of the old content is cached: a complete answer must be all new
            assert out.body == new[:3 * S], "a mix of the old and the new content"
        elif out.status != 502:
            assert out.status == 206 and not out.complete, out.status
            assert out.body in (DATA[:len(out.body)], new[:len(out.body)]), "wrong bytes before the cut"
    last = outcomes[-1]
    assert last.status == 206 and last.complete and last.body == new[:3 * S], (
        [(o.status, o.complete) for o in outcomes]
    )
    assert content_range(last.header("Content-Range")) == (0, 3 * S - 1, SIZE + 1000)


@pytest.mark.parametrize("fault", ["short_body", "reset_after"])
@pytest.mark.parametrize("cut_at", [0, 1000, S + 10])
async def test_truncated_origin_body(fault_origin: FaultOrigin, proxy_factory, http, fault, cut_at) -> None:
    fault_origin.set_object("tr.bin", DATA, **{fault: cut_at})
    proxy = proxy_factory(fault_origin.url)
    url = proxy.url_for("tr.bin")

    out = await fetch(http, url, headers=rng(5, 2 * S + 5))
    assert_failed_safely(out, DATA[5:2 * S + 6])
    out = await fetch(http, url)
    assert_failed_safely(out, DATA)

    fault_origin.clear_faults("tr.bin")
    await assert_recovers(http, url, rng(5, 2 * S + 5), DATA[5:2 * S + 6])
    await assert_recovers(http, url, {}, DATA, status=200)
    await assert_recovers(http, url, {}, DATA, status=200)


async def test_truncated_body_after_cached_slices(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    fault_origin.set_object("tr2.bin", DATA)
    proxy = proxy_factory(fault_origin.url)
    url = proxy.url_for("tr2.bin")
    await assert_recovers(http, url, rng(0, S - 1), DATA[:S])

    fault_origin.set_fault("tr2.bin", reset_after=S // 2)
    out = await fetch(http, url)
    assert_failed_safely(out, DATA)
    fault_origin.set_fault("tr2.bin", reset_after=None, short_body=S // 3)
    out = await fetch(http, url, headers=rng(S - 10, 4 * S))
    assert_failed_safely(out, DATA[S - 10:4 * S + 1])

    fault_origin.clear_faults("tr2.bin")
    await assert_recovers(http, url, {}, DATA, status=200)


@pytest.mark.parametrize("status", [404, 410, 500, 503])
async def test_origin_error_status_is_passed_through_not_cached(fault_origin: FaultOrigin, proxy_factory, http,
                                                               status) -> None:
    fault_origin.set_object("err.bin", DATA, fail_status=status)
    # negative_ttl=0: a 404/410 without freshness is not stored (by default it is, for 60 s:
    # test_proxy_origins.py::test_negative_ttl_keeps_a_404_without_freshness).
    proxy = proxy_factory(fault_origin.url, negative_ttl=0)
    url = proxy.url_for("err.bin")
    for hdrs in (rng(0, 99), {}, rng(0, 99)):
        out = await fetch(http, url, headers=hdrs)
        assert out.status == status, (hdrs, out.status)
    n = len(fault_origin.gets_for("err.bin"))
    assert n >= 3, "an error answer was served from the cache"

    fault_origin.clear_faults("err.bin")
    await assert_recovers(http, url, rng(0, 99), DATA[:100])
    await assert_recovers(http, url, {}, DATA, status=200)


async def test_origin_ignoring_range(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    fault_origin.set_object("ign.bin", DATA, ignore_range=True)
    proxy = proxy_factory(fault_origin.url)
    url = proxy.url_for("ign.bin")

    out = await assert_recovers(http, url, rng(70000, 140000), DATA[70000:140001])
    assert content_range(out.header("Content-Range")) == (70000, 140000, SIZE)
    out = await assert_recovers(http, url, rng(3 * S + 1, SIZE + 100), DATA[3 * S + 1:])
    assert content_range(out.header("Content-Range")) == (3 * S + 1, SIZE - 1, SIZE)
    await assert_recovers(http, url, {"Range": "bytes=-10"}, DATA[-10:])
    await assert_recovers(http, url, {}, DATA, status=200)
    head = await fetch(http, url, method="HEAD")
    assert head.status == 200 and int(head.header("Content-Length")) == SIZE


async def test_origin_ignoring_range_for_one_run(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    fault_origin.set_object("ign2.bin", DATA)
    proxy = proxy_factory(fault_origin.url)
    url = proxy.url_for("ign2.bin")
    await assert_recovers(http, url, rng(0, 9), DATA[:10])
    fault_origin.set_fault("ign2.bin", ignore_range=True, fault_times=1)
    await assert_recovers(http, url, rng(2 * S + 3, 3 * S + 3), DATA[2 * S + 3:3 * S + 4])
    await assert_recovers(http, url, {}, DATA, status=200)


async def test_changing_etag_on_every_answer(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    """Same bytes, a new ETag on each origin answer: the proxy must not loop
    forever, must not hang, and must never serve wrong bytes."""
    fault_origin.set_object("ce.bin", DATA, change_etag_every_request=True)
    proxy = proxy_factory(fault_origin.url, max_run_slices=1, default_ttl=0)
    url = proxy.url_for("ce.bin")
    t0 = time.monotonic()
    for hdrs, expected in ((rng(0, 3 * S - 1), DATA[:3 * S]), ({}, DATA), (rng(S, SIZE - 1), DATA[S:]), ({}, DATA)):
        out = await fetch(http, url, headers=hdrs, timeout=20)
        if out.status in (200, 206) and out.complete:
            assert out.body == expected
        else:
            assert_failed_safely(out, expected)
    assert time.monotonic() - t0 < 20
    assert len(fault_origin.requests_for("ce.bin")) <= 60, "the proxy keeps re-asking the origin"


# --- unreachable and slow origins ---------------------------------------------------------


async def test_unreachable_origin_is_502(proxy_factory, http) -> None:
    proxy = proxy_factory(unused_url())
    t0 = time.monotonic()
    for hdrs in ({}, rng(0, 9)):
        out = await fetch(http, proxy.url_for("x.bin"), headers=hdrs, timeout=20)
        assert out.status == 502, out.status
    out = await fetch(http, proxy.url_for("x.bin"), method="HEAD", timeout=20)
    assert out.status == 502
    assert time.monotonic() - t0 < 15


async def test_slow_origin_headers_is_504(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    fault_origin.set_object("slow.bin", DATA, delay=3.0)
    proxy = proxy_factory(fault_origin.url, upstream_read_timeout=0.5)
    t0 = time.monotonic()
    out = await fetch(http, proxy.url_for("slow.bin"), headers=rng(0, 9), timeout=20)
    assert out.status == 504, out.status
    assert time.monotonic() - t0 < 2.5
    fault_origin.set_fault("slow.bin", delay=0.0)
    await assert_recovers(http, proxy.url_for("slow.bin"), rng(0, 9), DATA[:10])


async def test_stalling_origin_body_never_completes_wrongly(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    fault_origin.set_object("stall.bin", DATA, chunk_size=16384, chunk_delay=2.0)
    proxy = proxy_factory(fault_origin.url, upstream_read_timeout=0.5)
    t0 = time.monotonic()
    out = await fetch(http, proxy.url_for("stall.bin"), headers=rng(0, 2 * S - 1), timeout=20)
    assert_failed_safely(out, DATA[:2 * S], statuses=(502, 504))
    assert time.monotonic() - t0 < 6
    fault_origin.set_fault("stall.bin", chunk_delay=0.0)
    fault_origin.wait_idle(10)
    await assert_recovers(http, proxy.url_for("stall.bin"), rng(0, 2 * S - 1), DATA[:2 * S])


async def test_an_origin_stalling_mid_slice_is_cut_by_the_read_timeout_and_only_whole_slices_are_cached(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    """One and a half slices, then nothing: the client's body is a correct prefix that does not
    end cleanly; the complete slice is kept, nothing of the stalled one, which is asked again."""
    fault_origin.set_object("stall2.bin", DATA, chunk_size=S + S // 2, chunk_delay=2.5)
    proxy = proxy_factory(fault_origin.url, upstream_read_timeout=0.5)
    t0 = time.monotonic()
    out = await fetch(http, proxy.url_for("stall2.bin"), headers=rng(0, 2 * S - 1), timeout=20)
    assert time.monotonic() - t0 < 10, "the stalled body was not cut"  # (uncut, it would end cleanly)
    assert out.status == 206 and not out.complete, (out.status, out.error)
    assert S <= len(out.body) < 2 * S and out.body == DATA[:len(out.body)]

    fault_origin.set_fault("stall2.bin", chunk_delay=0.0)
    assert fault_origin.wait_idle(10)  # the stalled answers are over (the proxy cut them)
    deadline = time.monotonic() + 10
    while True:  # slice 0 written, nothing in flight (read-ahead may have stored slices after 1)
        sm = await fetch(http, proxy.url + "/_cache/stall2.bin")
        doc = json.loads(sm.body) if sm.status == 200 else {}
        cached = {i for a, b in doc.get("cached", ()) for i in range(a, b)}
        if doc.get("in_flight") == [] and 0 in cached:
            assert 1 not in cached, f"a part of the stalled slice was cached: {doc}"
            break
        assert time.monotonic() < deadline, f"slice map: {sm.status} {sm.body[:300]!r}"
        await asyncio.sleep(0.05)
    before = fault_origin.count_slice_fetches("stall2.bin", S)
    await assert_recovers(http, proxy.url_for("stall2.bin"), rng(0, 2 * S - 1), DATA[:2 * S])
    after = fault_origin.count_slice_fetches("stall2.bin", S)
    assert after[1] == before[1] + 1, "the stalled slice was not asked again (something of it was cached)"
    assert after[0] == before[0], "the complete slice was fetched again"
