"""Stale answers by the rules (RFC 5861, RFC 9111 §4.2.4): stale-while-revalidate answers at
once and revalidates once behind the answer, stale-if-error answers only within its window,
and must-revalidate / proxy-revalidate / no-cache objects are never answered stale.

Every object has ``max-age=1``: it is stale ``STALE`` seconds after the first answer,
and stale by more than a one-second window after ``PAST_WINDOW``. Each wait is derived
from those, and what the proxy did is read from the origin's request log.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.client import Outcome, fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin, Record
from tests.support.servers import DEFAULT_SLICE, ProxyProc

S = DEFAULT_SLICE
MAX_AGE = 1.0
STALE = MAX_AGE + 0.3  # after the first answer: stale
PAST_WINDOW = MAX_AGE + 1.0 + 0.5  # after the first answer: stale by more than a 1 s window
DELAY = 3.0  # the slow origin's delay before its headers


def conditional(origin: FaultOrigin, name: str) -> list[Record]:
    """The revalidations the origin received for ``name``."""
    return [r for r in origin.gets_for(name) if r.if_none_match is not None]


async def cached(http, origin: FaultOrigin, url: str, name: str, data: bytes) -> None:
    """Fetch the whole object once so every slice is stored, then clear the origin's log."""
    out = await fetch(http, url)
    assert out.status == 200 and out.body == data
    assert origin.wait_idle(5)
    origin.reset_counters()


async def stored(origin: FaultOrigin, proxy_factory, http, name: str, data: bytes, cache_control: str,
                 **settings: object) -> tuple[ProxyProc, str]:
    """A proxy (no read-ahead) holding ``name`` whole, served with ``cache_control``; the
    origin's log cleared. Returns the proxy and the object's URL through it."""
    origin.set_object(name, data, cache_control=cache_control)
    proxy = proxy_factory(origin.url, readahead_slices=0, **settings)
    url = proxy.url_for(name)
    await cached(http, origin, url, name, data)
    return proxy, url


def cache_status(out: Outcome) -> str:
    return out.header("Cache-Status") or ""


# --- stale-while-revalidate ----------------------------------------------------------------


async def test_stale_while_revalidate_answers_at_once_and_revalidates_once_behind(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    v1, v2 = seeded_bytes(2 * S + 7, 300), seeded_bytes(2 * S + 7, 301)
    proxy, url = await stored(fault_origin, proxy_factory, http, "swr.bin", v1, "max-age=1, stale-while-revalidate=30")
    await asyncio.sleep(STALE)
    # The origin has a new version now, and is slow to say so.
    fault_origin.set_object("swr.bin", v2, cache_control="max-age=60", delay=DELAY)

    t0 = time.monotonic()
    outs = await asyncio.gather(*(fetch(http, url) for _ in range(5)))
    elapsed = time.monotonic() - t0
    assert elapsed < DELAY, f"a stale-while-revalidate answer waited for the origin ({elapsed:.1f} s)"
    for out in outs:
        assert out.status == 200 and out.body == v1
        assert out.header("X-Cache") == "HIT"
        assert "; hit;" in cache_status(out) and "detail=stale-while-revalidate" in cache_status(out)
        assert "ttl=-" in cache_status(out)
    # One revalidation for all of them, running behind the answers.
    assert fault_origin.wait_until(lambda: len(conditional(fault_origin, "swr.bin")) == 1, 5)

    # Once the revalidation (and the new version's discovery) is done, the new version answers.
    assert fault_origin.wait_until(lambda: len(fault_origin.gets_for("swr.bin")) >= 2, DELAY + 5)
    assert fault_origin.wait_idle(DELAY + 5)
    assert len(conditional(fault_origin, "swr.bin")) == 1
    fault_origin.set_fault("swr.bin", delay=0.0)
    out = await fetch(http, url)
    assert out.status == 200 and out.body == v2 and out.header("ETag") == '"v2-swr.bin"'
    assert "detail" not in cache_status(out)


async def test_beyond_stale_while_revalidate_the_request_waits_for_the_revalidation(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = seeded_bytes(S + 3, 302)
    proxy, url = await stored(fault_origin, proxy_factory, http,
                              "late.bin", data, "max-age=1, stale-while-revalidate=1")
    await asyncio.sleep(PAST_WINDOW)
    fault_origin.set_fault("late.bin", delay=DELAY)

    t0 = time.monotonic()
    out = await fetch(http, url)
    assert time.monotonic() - t0 >= DELAY - 0.1, "answered stale beyond stale-while-revalidate"
    assert out.status == 200 and out.body == data
    assert "detail" not in cache_status(out)
    reqs = conditional(fault_origin, "late.bin")
    assert len(reqs) == 1 and reqs[0].status == 304


# --- stale-if-error -------------------------------------------------------------------------


async def test_stale_if_error_answers_stale_when_the_origin_answers_500(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = seeded_bytes(2 * S + 1, 303)
    proxy, url = await stored(fault_origin, proxy_factory, http,
                              "sie.bin", data, "max-age=1, stale-if-error=30")
    await asyncio.sleep(STALE)
    fault_origin.set_fault("sie.bin", fail_status=500)

    out = await fetch(http, url)
    assert out.status == 200 and out.body == data
    assert "fwd=stale; fwd-status=500" in cache_status(out) and "detail=stale-if-error" in cache_status(out)
    reqs = conditional(fault_origin, "sie.bin")
    assert len(reqs) == 1 and reqs[0].status == 500  # it asked the origin first
    # A range of it too, from the stored slices.
    out = await fetch(http, url, headers={"Range": f"bytes={S}-{S + 9}"})
    assert out.status == 206 and out.body == data[S:S + 10]


async def test_beyond_stale_if_error_the_origins_500_reaches_the_client(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = seeded_bytes(S + 5, 304)
    proxy, url = await stored(fault_origin, proxy_factory, http,
                              "sie-late.bin", data, "max-age=1, stale-if-error=1")
    await asyncio.sleep(PAST_WINDOW)
    fault_origin.set_fault("sie-late.bin", fail_status=500)

    out = await fetch(http, url)
    assert out.status == 500 and b"injected 500" in out.body
    assert [r.status for r in conditional(fault_origin, "sie-late.bin")] == [500]
    # The object is kept: once the origin is back, a 304 revalidates it.
    fault_origin.clear_faults("sie-late.bin")
    out = await fetch(http, url)
    assert out.status == 200 and out.body == data
    assert [r.status for r in conditional(fault_origin, "sie-late.bin")] == [500, 304]


async def test_origin_down_answers_stale_within_the_window_and_502_beyond(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    within, beyond = seeded_bytes(S + 9, 305), seeded_bytes(S + 9, 306)
    # One window from the origin, one from the setting (the origin gives none).
    fault_origin.set_object("in.bin", within, cache_control="max-age=1, stale-if-error=60")
    fault_origin.set_object("out.bin", beyond, cache_control="max-age=1")
    proxy = proxy_factory(fault_origin.url, readahead_slices=0, stale_if_error="1s")
    await cached(http, fault_origin, proxy.url_for("in.bin"), "in.bin", within)
    await cached(http, fault_origin, proxy.url_for("out.bin"), "out.bin", beyond)
    await asyncio.sleep(PAST_WINDOW)
    fault_origin.stop()  # unreachable from now on

    out = await fetch(http, proxy.url_for("in.bin"), timeout=20)
    assert out.status == 200 and out.body == within
    assert "fwd=stale;" in cache_status(out) and "fwd-status" not in cache_status(out)
    out = await fetch(http, proxy.url_for("out.bin"), timeout=20)
    assert out.status == 502, out.status


async def test_the_stale_if_error_setting_covers_an_origin_without_the_directive(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = seeded_bytes(S + 2, 307)
    proxy, url = await stored(fault_origin, proxy_factory, http,
                              "set.bin", data, "max-age=1", stale_if_error="1m")
    await asyncio.sleep(STALE)
    fault_origin.set_fault("set.bin", fail_status=503)
    out = await fetch(http, url)
    assert out.status == 200 and out.body == data and "fwd-status=503" in cache_status(out)
    # A client that asks for a validated answer gets the origin's error, not the stale object.
    out = await fetch(http, url, headers={"Cache-Control": "no-cache"})
    assert out.status == 503


async def test_without_a_window_the_error_reaches_the_client(fault_origin: FaultOrigin, proxy_factory,
                                                             http) -> None:
    data = seeded_bytes(S + 4, 308)
    proxy, url = await stored(fault_origin, proxy_factory, http, "none.bin", data, "max-age=1")  # stale_if_error 0
    await asyncio.sleep(STALE)
    fault_origin.set_fault("none.bin", fail_status=502)
    out = await fetch(http, url)
    assert out.status == 502 and b"injected 502" in out.body


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refusal_on_revalidation_means_not_authorised_not_gone(
        fault_origin: FaultOrigin, proxy_factory, http, status: int) -> None:
    """The origin refusing a revalidation (its credentials or a signed URL expired) reaches the
    client, and the object stays: once the origin accepts again, a 304 brings it back with no
    body fetched again."""
    data = seeded_bytes(2 * S + 5, 309)
    proxy, url = await stored(fault_origin, proxy_factory, http, "auth.bin", data, "max-age=1")
    await asyncio.sleep(STALE)
    fault_origin.set_fault("auth.bin", fail_status=status)
    out = await fetch(http, url)
    assert out.status == status
    fault_origin.clear_faults("auth.bin")
    fault_origin.reset_counters()
    out = await fetch(http, url)
    assert out.status == 200 and out.body == data and out.header("X-Cache") == "HIT"
    seen = fault_origin.requests_for("auth.bin")
    assert [r.status for r in seen] == [304], seen  # one revalidation, no slice fetched again


# --- directives that forbid stale answers ---------------------------------------------------------


@pytest.mark.parametrize("directive", ["must-revalidate", "proxy-revalidate"])
async def test_must_revalidate_and_proxy_revalidate_are_never_answered_stale(
        fault_origin: FaultOrigin, proxy_factory, http, directive: str) -> None:
    data = seeded_bytes(S + 6, 309)
    proxy, url = await stored(fault_origin, proxy_factory, http, "mr.bin", data,
                              f"max-age=1, {directive}, stale-while-revalidate=60, stale-if-error=60",
                              stale_if_error="1h")
    await asyncio.sleep(STALE)

    fault_origin.set_fault("mr.bin", fail_status=503)
    out = await fetch(http, url)
    assert out.status == 503 and b"injected 503" in out.body
    assert [r.status for r in conditional(fault_origin, "mr.bin")] == [503]

    # No stale-while-revalidate either: the request waits for the revalidation.
    fault_origin.clear_faults("mr.bin")
    fault_origin.set_fault("mr.bin", delay=1.0)
    t0 = time.monotonic()
    out = await fetch(http, url)
    assert time.monotonic() - t0 >= 0.9 and out.status == 200 and out.body == data
    assert [r.status for r in conditional(fault_origin, "mr.bin")] == [503, 304]

    fault_origin.stop()
    await asyncio.sleep(STALE)
    out = await fetch(http, url, timeout=20)
    assert out.status == 502, out.status


async def test_no_cache_is_revalidated_on_every_request_and_never_answered_stale(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = seeded_bytes(S + 8, 310)
    proxy, url = await stored(fault_origin, proxy_factory, http,
                              "nc.bin", data, "no-cache, stale-if-error=60", stale_if_error="1h")
    for _ in range(2):
        out = await fetch(http, url)
        assert out.status == 200 and out.body == data
    assert [r.status for r in conditional(fault_origin, "nc.bin")] == [304, 304]
    fault_origin.set_fault("nc.bin", fail_status=500)
    out = await fetch(http, url)
    assert out.status == 500


# --- the client's max-stale and min-fresh (RFC 9111 §5.2.1.2, §5.2.1.3) ----------------------


async def test_max_stale_answers_stale_at_once_and_only_if_cached_with_it_too(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = seeded_bytes(S + 1, 311)
    proxy, url = await stored(fault_origin, proxy_factory, http, "ms.bin", data, "max-age=1")
    await asyncio.sleep(STALE)
    out = await fetch(http, url, headers={"Cache-Control": "only-if-cached"})
    assert out.status == 504  # stale, and this client takes no stale answer
    out = await fetch(http, url, headers={"Cache-Control": "only-if-cached, max-stale"})
    assert out.status == 200 and out.body == data and "detail=max-stale" in cache_status(out)
    assert fault_origin.gets_for("ms.bin") == []  # only-if-cached never asks the origin

    fault_origin.set_fault("ms.bin", delay=DELAY)
    t0 = time.monotonic()
    out = await fetch(http, url, headers={"Cache-Control": "max-stale=60"})
    assert time.monotonic() - t0 < DELAY, "a max-stale answer waited for the origin"
    assert out.status == 200 and out.body == data and "detail=max-stale" in cache_status(out)
    # ...and it was revalidated behind the answer.
    assert fault_origin.wait_until(lambda: len(conditional(fault_origin, "ms.bin")) == 1, 5)
    assert fault_origin.wait_idle(DELAY + 5)
    assert [r.status for r in conditional(fault_origin, "ms.bin")] == [304]


async def test_max_stale_beyond_its_value_waits_for_the_revalidation(fault_origin: FaultOrigin, proxy_factory,
                                                                      http) -> None:
    data = seeded_bytes(S + 1, 312)
    proxy, url = await stored(fault_origin, proxy_factory, http, "ms-late.bin", data, "max-age=1")
    await asyncio.sleep(PAST_WINDOW)
    out = await fetch(http, url, headers={"Cache-Control": "max-stale=1"})
    assert out.status == 200 and "detail" not in cache_status(out)
    assert [r.status for r in conditional(fault_origin, "ms-late.bin")] == [304]


async def test_min_fresh_revalidates_an_object_that_expires_too_soon(fault_origin: FaultOrigin, proxy_factory,
                                                                      http) -> None:
    data = seeded_bytes(S + 1, 313)
    proxy, url = await stored(fault_origin, proxy_factory, http, "mf.bin", data, "max-age=600")
    out = await fetch(http, url, headers={"Cache-Control": "min-fresh=60"})
    assert out.status == 200 and out.body == data
    assert conditional(fault_origin, "mf.bin") == []  # fresh for 60 s more: answered from the cache
    out = await fetch(http, url, headers={"Cache-Control": "min-fresh=3600"})
    assert out.status == 200 and out.body == data
    assert [r.status for r in conditional(fault_origin, "mf.bin")] == [304]
