"""When a stale object may answer: stale-while-revalidate, stale-if-error and the directives
that forbid both (RFC 5861, RFC 9111 §4.2.4), without sockets."""

from __future__ import annotations

import pytest

from proxy.core.conditions import RequestDirectives
from proxy.core.fields import cache_status
from proxy.core.representation import ObjectMeta
from proxy.core.staleness import (
    IF_ERROR,
    MAX_STALE,
    WHILE_REVALIDATE,
    Fresh,
    PassError,
    Revalidate,
    ServeStale,
    StaleWindows,
    on_error,
    on_request,
    stale_for,
    stale_windows,
    usable_without_origin,
)

NOW = 1_700_000_000.0
TTL = 60.0
EXPIRY = NOW + TTL
PLAIN = RequestDirectives()
NO_CACHE = RequestDirectives(revalidate=True)


def meta(cache_control: str | None, storable: bool = True, ttl: float = TTL) -> ObjectMeta:
    headers = (("Cache-Control", cache_control),) if cache_control is not None else ()
    return ObjectMeta("http://o/x", 100, '"v1"', None, None, NOW, ttl, storable, headers)


# --- the windows ---------------------------------------------------------------------


def test_no_directives_give_the_setting_for_errors_and_no_while_revalidate() -> None:
    assert stale_windows(meta("max-age=60"), 30.0) == StaleWindows(0.0, 30.0)
    assert stale_windows(meta(None), 0.0) == StaleWindows(0.0, 0.0)


def test_the_origins_windows_beat_the_setting() -> None:
    m = meta("max-age=60, stale-while-revalidate=10, stale-if-error=600")
    assert stale_windows(m, 30.0) == StaleWindows(10.0, 600.0)
    assert stale_windows(meta("max-age=60, stale-if-error=0"), 30.0).if_error == 0.0


@pytest.mark.parametrize("directive", ["must-revalidate", "proxy-revalidate", "no-cache"])
def test_must_revalidate_proxy_revalidate_and_no_cache_forbid_any_stale_answer(directive: str) -> None:
    m = meta(f"max-age=60, {directive}, stale-while-revalidate=10, stale-if-error=600")
    assert stale_windows(m, 3600.0) == StaleWindows(0.0, 0.0)


def test_an_object_not_stored_is_never_answered_stale() -> None:
    m = meta("max-age=60, stale-while-revalidate=10, stale-if-error=600", storable=False)
    assert stale_windows(m, 3600.0) == StaleWindows(0.0, 0.0)


def test_s_maxage_keeps_the_setting_out_but_not_the_origins_own_windows() -> None:
    # RFC 9111 §5.2.2.10: s-maxage means proxy-revalidate for a shared cache; an explicit
    # stale-* directive in the same response is the origin's own permission.
    assert stale_windows(meta("s-maxage=60"), 3600.0) == StaleWindows(0.0, 0.0)
    assert stale_windows(meta("s-maxage=60, stale-while-revalidate=5, stale-if-error=9"), 3600.0) == \
        StaleWindows(5.0, 9.0)


def test_invalid_window_arguments_count_as_absent() -> None:
    assert stale_windows(meta("max-age=60, stale-while-revalidate=soon, stale-if-error=-1"), 7.0) == \
        StaleWindows(0.0, 7.0)


def test_the_directives_are_read_across_repeated_cache_control_lines() -> None:
    m = ObjectMeta("u", 1, '"v"', None, None, NOW, TTL, True,
                   (("Cache-Control", "max-age=60"), ("Cache-Control", "stale-while-revalidate=10")))
    assert stale_windows(m, 0.0).while_revalidate == 10.0


def test_stale_for_counts_from_expiry() -> None:
    assert stale_for(meta(None), EXPIRY + 3) == 3
    assert stale_for(meta(None), NOW) == -TTL


# --- a request for a stale object -------------------------------------------------------


def test_within_stale_while_revalidate_the_stale_object_answers_at_once() -> None:
    m = meta("max-age=60, stale-while-revalidate=10")
    assert on_request(m, EXPIRY, PLAIN) == ServeStale(WHILE_REVALIDATE)
    assert on_request(m, EXPIRY + 9.9, PLAIN) == ServeStale(WHILE_REVALIDATE)


def test_beyond_stale_while_revalidate_the_request_waits() -> None:
    m = meta("max-age=60, stale-while-revalidate=10")
    assert on_request(m, EXPIRY + 10, PLAIN) == Revalidate()
    assert on_request(meta("max-age=60"), EXPIRY + 0.001, PLAIN) == Revalidate()


def test_a_client_asking_to_revalidate_always_waits() -> None:
    assert on_request(meta("max-age=60, stale-while-revalidate=10"), EXPIRY + 1, NO_CACHE) == Revalidate()


def test_must_revalidate_waits_even_with_stale_while_revalidate() -> None:
    assert on_request(meta("max-age=60, must-revalidate, stale-while-revalidate=10"), EXPIRY + 1, PLAIN) == \
        Revalidate()


def test_a_fresh_object_answers_from_the_cache() -> None:
    assert on_request(meta("max-age=60"), NOW + 59, PLAIN) == Fresh()
    assert on_request(meta("max-age=60"), NOW + 59, NO_CACHE) == Revalidate()


# --- the client's max-stale and min-fresh (RFC 9111 §5.2.1.2, §5.2.1.3) -------------------


def test_min_fresh_revalidates_an_object_about_to_expire() -> None:
    m = meta("max-age=60")
    assert on_request(m, NOW + 49, RequestDirectives(min_fresh=10)) == Fresh()
    assert on_request(m, NOW + 50, RequestDirectives(min_fresh=10)) == Revalidate()


def test_max_stale_accepts_a_stale_object_up_to_its_value() -> None:
    m = meta("max-age=60")
    assert on_request(m, EXPIRY + 10, RequestDirectives(max_stale=10)) == ServeStale(MAX_STALE)
    assert on_request(m, EXPIRY + 10.5, RequestDirectives(max_stale=10)) == Revalidate()
    assert on_request(m, EXPIRY + 1e6, RequestDirectives(max_stale=float("inf"))) == ServeStale(MAX_STALE)


@pytest.mark.parametrize("directive", ["must-revalidate", "proxy-revalidate", "no-cache", "s-maxage=60"])
def test_max_stale_yields_to_the_origins_directives(directive: str) -> None:
    m = meta(f"max-age=60, {directive}")
    assert on_request(m, EXPIRY + 1, RequestDirectives(max_stale=float("inf"))) == Revalidate()


def test_only_if_cached_takes_fresh_or_max_stale_objects_only() -> None:
    m = meta("max-age=60, stale-while-revalidate=600")
    assert usable_without_origin(m, NOW, PLAIN) == Fresh()
    assert usable_without_origin(m, EXPIRY + 1, PLAIN) is None  # stale-while-revalidate would ask the origin
    assert usable_without_origin(m, EXPIRY + 1, RequestDirectives(max_stale=5)) == ServeStale(MAX_STALE)


# --- a failed revalidation ------------------------------------------------------------


@pytest.mark.parametrize("status", [None, 500, 502, 503, 504])
def test_within_stale_if_error_a_failed_revalidation_answers_stale(status: int | None) -> None:
    m = meta("max-age=60, stale-if-error=30")
    assert on_error(m, EXPIRY + 29, 0.0, status) == ServeStale(IF_ERROR, fwd="stale", fwd_status=status)


@pytest.mark.parametrize("status", [None, 500])
def test_beyond_stale_if_error_the_error_reaches_the_client(status: int | None) -> None:
    assert on_error(meta("max-age=60, stale-if-error=30"), EXPIRY + 30, 0.0, status) == PassError()
    assert on_error(meta("max-age=60"), EXPIRY + 1, 0.0, status) == PassError()


def test_the_setting_is_the_window_when_the_origin_gives_none() -> None:
    assert isinstance(on_error(meta("max-age=60"), EXPIRY + 59, 60.0, None), ServeStale)
    assert on_error(meta("max-age=60"), EXPIRY + 61, 60.0, None) == PassError()


@pytest.mark.parametrize("status", [403, 301, 429])
def test_a_status_that_is_no_error_is_passed_through_never_hidden(status: int) -> None:
    assert on_error(meta("max-age=60, stale-if-error=600"), EXPIRY + 1, 600.0, status) == PassError()


@pytest.mark.parametrize("directive", ["must-revalidate", "proxy-revalidate"])
def test_must_revalidate_passes_every_error(directive: str) -> None:
    m = meta(f"max-age=60, {directive}, stale-if-error=600")
    assert on_error(m, EXPIRY + 1, 3600.0, None) == PassError()
    assert on_error(m, EXPIRY + 1, 3600.0, 503) == PassError()


def test_a_fresh_object_still_answers_when_an_asked_for_revalidation_fails() -> None:
    # Not a stale answer at all: the object has not expired (the client's own no-cache
    # is handled by the caller, which passes the error to that client).
    assert isinstance(on_error(meta("max-age=60, must-revalidate"), NOW + 1, 0.0, 503), ServeStale)


# --- what the answer says ---------------------------------------------------------------


def test_cache_status_of_stale_answers() -> None:
    # RFC 9211 §3: a stale hit has a negative ttl; a forwarded stale one says fwd=stale.
    assert cache_status("HIT", -3.5, True, detail=WHILE_REVALIDATE) == \
        "rangeproxy; hit; ttl=-4; detail=stale-while-revalidate"
    assert cache_status("HIT", -4, True, fwd="stale", fwd_status=503, detail=IF_ERROR) == \
        "rangeproxy; fwd=stale; fwd-status=503; ttl=-4; detail=stale-if-error"
    assert cache_status("HIT", -4, True, fwd="stale", detail=IF_ERROR) == \
        "rangeproxy; fwd=stale; ttl=-4; detail=stale-if-error"


def test_a_clients_max_age_wants_an_answer_no_older() -> None:
    """RFC 9111 §5.2.1.1: older than N seconds (fresh or not) is revalidated first."""
    from proxy.core.conditions import request_directives

    m = meta("max-age=600", ttl=600.0)
    later = NOW + 100  # 100 s old, still fresh
    assert isinstance(on_request(m, later, request_directives({"Cache-Control": "max-age=50"})), Revalidate)
    assert isinstance(on_request(m, later, request_directives({"Cache-Control": "max-age=500"})), Fresh)
    assert request_directives({"Cache-Control": "max-age=0"}).revalidate
