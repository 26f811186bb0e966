"""proxy.core.representation: object metadata, RFC 9111 freshness, upstream piece checks."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.http.dates import format_http_date
from proxy.http.ranges import Span, format_content_range
from proxy.core.representation import (
    Changed,
    Empty,
    Erred,
    Freshness,
    Gone,
    Learned,
    Mismatch,
    ObjectMeta,
    PastEnd,
    Refreshed,
    Refused,
    Unusable,
    check_piece,
    first_answer,
    freshness,
    meta_from_response,
    revalidation,
    strong_validator,
)

NOW = 1_700_000_000.0
LM = "Mon, 01 Jan 2024 00:00:00 GMT"
LM2 = "Tue, 02 Jan 2024 00:00:00 GMT"
DEFAULT_TTL = 300.0


def meta(**kw: object) -> ObjectMeta:
    base: dict[str, object] = dict(url="http://o/x", length=1000, etag='"v1"', last_modified=LM,
                                   content_type="video/mp4", stored_at=NOW, ttl=60.0)
    base.update(kw)
    return ObjectMeta(**base)  # type: ignore[arg-type]


def http_date(offset: float) -> str:
    return format_http_date(NOW + offset)


# --- ObjectMeta ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("etag", "last_modified", "length", "expected"),
    [
        ('"v1"', LM, 1000, 'e:1000:"v1"'),  # a strong ETag and the length identify the version
        ('"v1"', None, 1000, 'e:1000:"v1"'),
        ('"v1"', None, 1001, 'e:1001:"v1"'),  # an origin that keeps its ETag across a change of length
        ('W/"v1"', LM, 1000, f"m:{LM}:1000"),  # a weak ETag does not: Last-Modified + length
        ('W/"v1"', None, 1000, "m::1000"),
        (None, LM, 1000, f"m:{LM}:1000"),
        (None, None, 1000, "m::1000"),
        ("", LM, 7, f"m:{LM}:7"),  # an empty ETag is no validator
    ],
)
def test_validator_prefers_a_strong_etag_else_last_modified_and_length(
        etag: str | None, last_modified: str | None, length: int, expected: str) -> None:
    assert meta(etag=etag, last_modified=last_modified, length=length).validator == expected


def test_validator_without_strong_etag_changes_with_length_or_last_modified() -> None:
    ref = meta(etag=None)
    assert meta(etag=None, length=1001).validator != ref.validator
    assert meta(etag=None, last_modified=LM2).validator != ref.validator
    assert meta(etag='"v2"').validator != meta(etag='"v1"').validator


@pytest.mark.parametrize(
    ("ttl", "now", "fresh"),
    [
        (60.0, NOW, True),
        (60.0, NOW + 59.9, True),
        (60.0, NOW + 60, False),  # stale once age reaches the lifetime
        (60.0, NOW + 3600, False),
        (0.0, NOW, False),  # ttl 0: revalidate every time
    ],
)
def test_is_fresh_until_stored_at_plus_ttl(ttl: float, now: float, fresh: bool) -> None:
    assert meta(ttl=ttl).is_fresh(now) is fresh


@pytest.mark.parametrize(
    ("now", "age"),
    [
        (NOW, 0),
        (NOW + 0.9, 0),  # whole seconds, truncated
        (NOW + 59.99, 59),
        (NOW + 3600, 3600),
        (NOW - 10, 0),  # clock went back: never negative
    ],
)
def test_age_is_whole_seconds_since_stored_and_never_negative(now: float, age: int) -> None:
    assert meta().age(now) == age


def test_revalidated_restarts_the_lifetime_and_keeps_the_version() -> None:
    old = meta(ttl=10.0)
    new = old.revalidated(NOW + 100, 30.0)
    assert (new.stored_at, new.ttl) == (NOW + 100, 30.0)
    assert new.validator == old.validator and new.length == old.length
    assert new.is_fresh(NOW + 129) and not old.is_fresh(NOW + 129)


def test_to_dict_holds_every_field_and_from_dict_round_trips() -> None:
    m = meta(storable=False)
    d = m.to_dict()
    assert set(d) == {f.name for f in dataclasses.fields(ObjectMeta)}
    assert d["storable"] is False and d["etag"] == '"v1"'
    assert ObjectMeta.from_dict(d) == m


def test_from_dict_ignores_unknown_keys() -> None:
    d = {**meta().to_dict(), "future_field": 1}
    assert ObjectMeta.from_dict(d) == meta()


@given(
    st.builds(
        ObjectMeta,
        url=st.text(max_size=30),
        length=st.integers(0, 2**50),
        etag=st.none() | st.text(max_size=20),
        last_modified=st.none() | st.text(max_size=30),
        content_type=st.none() | st.text(max_size=20),
        stored_at=st.floats(0, 2e9),
        ttl=st.floats(0, 1e9),
        storable=st.booleans(),
    )
)
def test_to_dict_from_dict_round_trip_property(m: ObjectMeta) -> None:
    assert ObjectMeta.from_dict(m.to_dict()) == m
    assert ObjectMeta.from_dict(m.to_dict()).validator == m.validator


# --- freshness (RFC 9111) -----------------------------------------------------------

FRESHNESS_CASES = [
    # §5.2.2.5 no-store / §5.2.2.7 private: a shared cache must not store
    ({"Cache-Control": "no-store"}, Freshness(False, 0.0)),
    ({"Cache-Control": "private"}, Freshness(False, 0.0)),
    ({"Cache-Control": 'private="Set-Cookie"'}, Freshness(False, 0.0)),
    ({"Cache-Control": "NO-STORE"}, Freshness(False, 0.0)),  # directive names are case-insensitive
    ({"Cache-Control": "max-age=600, no-store"}, Freshness(False, 0.0)),
    ({"Cache-Control": "public,max-age=600,private"}, Freshness(False, 0.0)),
    ({"Cache-Control": "no-store, no-cache"}, Freshness(False, 0.0)),  # no-store beats no-cache
    # §5.2.2.4 no-cache: store, but revalidate before every use
    ({"Cache-Control": "no-cache"}, Freshness(True, 0.0)),
    ({"Cache-Control": "max-age=600, no-cache"}, Freshness(True, 0.0)),
    ({"Cache-Control": 'no-cache="Set-Cookie", s-maxage=60'}, Freshness(True, 0.0)),
    # §4.2.1: s-maxage beats max-age beats Expires
    ({"Cache-Control": "max-age=600"}, Freshness(True, 600.0)),
    ({"Cache-Control": "public, max-age=600"}, Freshness(True, 600.0)),
    ({"Cache-Control": "s-maxage=30, max-age=600"}, Freshness(True, 30.0)),
    ({"Cache-Control": "max-age=600, s-maxage=30"}, Freshness(True, 30.0)),  # order does not matter
    ({"Cache-Control": "S-MaxAge=30, Max-Age=600"}, Freshness(True, 30.0)),
    ({"Cache-Control": "s-maxage=0, max-age=600"}, Freshness(True, 0.0)),  # 0 is a lifetime, not "absent"
    ({"Cache-Control": "max-age=0"}, Freshness(True, 0.0)),
    ({"Cache-Control": 'max-age="60"'}, Freshness(True, 60.0)),  # quoted form tolerated
    ({"Cache-Control": "max-age=600", "Expires": http_date(10), "Date": http_date(0)}, Freshness(True, 600.0)),
    ({"Cache-Control": "s-maxage=5", "Expires": http_date(10), "Date": http_date(0)}, Freshness(True, 5.0)),
    ({"Cache-Control": "must-revalidate, max-age=60"}, Freshness(True, 60.0)),
    # Expires - Date (§4.2.1), whatever the local clock says
    ({"Expires": http_date(100), "Date": http_date(0)}, Freshness(True, 100.0)),
    ({"Expires": http_date(5000), "Date": http_date(4900)}, Freshness(True, 100.0)),  # origin clock ahead
    ({"Expires": http_date(-100), "Date": http_date(-200)}, Freshness(True, 100.0)),  # origin clock behind
    ({"Expires": http_date(-100), "Date": http_date(0)}, Freshness(True, 0.0)),  # already expired
    ({"Expires": http_date(120)}, Freshness(True, 120.0)),  # no Date: the local clock stands in
    ({"Expires": http_date(120), "Date": "yesterday"}, Freshness(True, 120.0)),  # invalid Date: likewise
    ({"Cache-Control": "public", "Expires": http_date(100), "Date": http_date(0)}, Freshness(True, 100.0)),
    # §5.3: an invalid Expires means already expired
    ({"Expires": "0"}, Freshness(True, 0.0)),
    ({"Expires": "-1"}, Freshness(True, 0.0)),
    ({"Expires": ""}, Freshness(True, 0.0)),
    ({"Expires": "0", "Date": http_date(0)}, Freshness(True, 0.0)),
    # nothing said: the configured default (§4.2.2, a heuristic), when there is a validator
    ({"ETag": '"e"'}, Freshness(True, DEFAULT_TTL)),
    ({"Cache-Control": "", "ETag": '"e"'}, Freshness(True, DEFAULT_TTL)),
    ({"Cache-Control": "public", "Last-Modified": http_date(-9)}, Freshness(True, DEFAULT_TTL)),
    ({"Cache-Control": "must-revalidate", "ETag": 'W/"e"'}, Freshness(True, DEFAULT_TTL)),
    # ... and without one, not reused: nothing would tell a change later
    ({}, Freshness(True, 0.0)),
    ({"Date": http_date(0)}, Freshness(True, 0.0)),
    # Surrogate-Control speaks to this cache in place of Cache-Control
    ({"Surrogate-Control": "max-age=60", "Cache-Control": "no-store"}, Freshness(True, 60.0)),
    ({"Surrogate-Control": "max-age=60+30"}, Freshness(True, 60.0)),
    ({"Surrogate-Control": "no-store", "Cache-Control": "max-age=600"}, Freshness(False, 0.0)),
    ({"Surrogate-Control": "max-age=60;rangeproxy, max-age=5"}, Freshness(True, 60.0)),  # targeted at us wins
    ({"Surrogate-Control": "max-age=60;other", "Cache-Control": "max-age=7"}, Freshness(True, 7.0)),
    ({"Surrogate-Control": "max-age=60", "Age": "20"}, Freshness(True, 40.0)),
    ({"Surrogate-Control": "content=\"ESI/1.0\"", "Cache-Control": "max-age=7"}, Freshness(True, 7.0)),
]


@pytest.mark.parametrize(("headers", "expected"), FRESHNESS_CASES)
def test_freshness_follows_rfc9111_for_a_shared_cache(headers: dict[str, str], expected: Freshness) -> None:
    assert freshness(headers, NOW, DEFAULT_TTL) == expected


def test_obsolete_date_forms_count_for_expires() -> None:
    # RFC 9110 §5.6.7: recipients accept the asctime form too.
    headers = {"Expires": "Sun Nov  6 08:49:47 1994", "Date": "Sun, 06 Nov 1994 08:49:37 GMT"}
    assert freshness(headers, NOW, DEFAULT_TTL) == Freshness(True, 10.0)


@given(st.integers(-10**6, 10**6), st.integers(-10**7, 10**7))
def test_expires_lifetime_is_expires_minus_date_independent_of_local_clock(delta: int, skew: int) -> None:
    headers = {"Expires": http_date(skew + delta), "Date": http_date(skew)}
    assert freshness(headers, NOW, DEFAULT_TTL) == Freshness(True, float(max(0, delta)))


@given(st.integers(0, 10**9), st.integers(0, 10**9))
def test_s_maxage_beats_max_age_in_either_order(s: int, m: int) -> None:
    for cc in (f"s-maxage={s}, max-age={m}", f"max-age={m}, s-maxage={s}"):
        assert freshness({"Cache-Control": cc, "Expires": "0"}, NOW, DEFAULT_TTL) == Freshness(True, float(s))


def test_private_on_a_second_cache_control_line_forbids_storing() -> None:
    from multidict import CIMultiDict

    headers = CIMultiDict([("Cache-Control", "max-age=60"), ("Cache-Control", "private")])
    assert freshness(headers, NOW, DEFAULT_TTL).storable is False


def test_expires_counts_from_a_date_at_the_epoch() -> None:
    headers = {"Date": "Thu, 01 Jan 1970 00:00:00 GMT", "Expires": "Thu, 01 Jan 1970 00:01:40 GMT"}
    assert freshness(headers, NOW, DEFAULT_TTL) == Freshness(True, 100.0)


def test_a_repeated_max_age_uses_the_first_or_is_stale() -> None:
    assert freshness({"Cache-Control": "max-age=0, max-age=3600"}, NOW, DEFAULT_TTL).ttl == 0.0


def test_age_from_an_upstream_cache_shortens_the_remaining_lifetime() -> None:
    assert freshness({"Cache-Control": "max-age=3600", "Age": "3000"}, NOW, DEFAULT_TTL).ttl == 600.0


# --- meta_from_response --------------------------------------------------------


def test_meta_from_a_206_takes_the_length_from_the_content_range_total() -> None:
    headers = {"Content-Range": "bytes 0-99/1000", "Content-Length": "100", "ETag": '"v1"',
               "Last-Modified": LM, "Content-Type": "video/mp4", "Cache-Control": "max-age=60"}
    # The origin's fields are stored, less the framing of this one answer (RFC 9111 §3.1).
    stored = (("ETag", '"v1"'), ("Last-Modified", LM), ("Content-Type", "video/mp4"), ("Cache-Control", "max-age=60"))
    assert meta_from_response("http://o/x", 206, headers, NOW, DEFAULT_TTL) == meta(headers=stored)


def test_meta_from_a_200_takes_the_length_from_content_length() -> None:
    headers = {"Content-Length": "1000", "ETag": '"v1"', "Last-Modified": LM, "Content-Type": "video/mp4",
               "Cache-Control": "max-age=60"}
    stored = (("ETag", '"v1"'), ("Last-Modified", LM), ("Content-Type", "video/mp4"), ("Cache-Control", "max-age=60"))
    assert meta_from_response("http://o/x", 200, headers, NOW, DEFAULT_TTL) == meta(headers=stored)


@pytest.mark.parametrize(
    ("status", "headers", "length", "storable", "ttl"),
    [
        (206, {"Content-Range": "bytes 500-999/1000"}, 1000, True, DEFAULT_TTL),
        (206, {"Content-Range": "bytes 0-0/1"}, 1, True, DEFAULT_TTL),
        (200, {"Content-Length": "0"}, 0, True, DEFAULT_TTL),  # an empty object
        (200, {"Content-Length": "1000", "Cache-Control": "private"}, 1000, False, 0.0),
        (206, {"Content-Range": "bytes 0-9/10", "Cache-Control": "no-store"}, 10, False, 0.0),
        (206, {"Content-Range": "bytes 0-9/10", "Cache-Control": "no-cache"}, 10, True, 0.0),
        (206, {"Content-Range": "bytes 0-9/10", "Expires": "0"}, 10, True, 0.0),
    ],
)
def test_meta_from_response_learns_length_and_freshness(status: int, headers: dict[str, str], length: int,
                                                        storable: bool, ttl: float) -> None:
    # With a Last-Modified a cache may count as strong (RFC 9110 §8.8.2.2), so only freshness decides.
    validated = {**headers, "Last-Modified": LM, "Date": LM2}
    m = meta_from_response("u", status, validated, NOW, DEFAULT_TTL)
    assert m is not None
    assert (m.length, m.storable, m.ttl, m.stored_at) == (length, storable, ttl, NOW)
    assert (m.etag, m.last_modified, m.content_type) == (None, LM, None)


@pytest.mark.parametrize(
    ("headers", "strong"),
    [
        ({"ETag": '"a"'}, True),
        ({"ETag": 'W/"a"'}, False),
        ({}, False),  # no validator at all: two fetches cannot be told apart
        ({"Last-Modified": LM}, False),  # no Date to compare with
        ({"Last-Modified": LM, "Date": LM}, False),  # could have changed twice within that second
        ({"Last-Modified": LM, "Date": "Mon, 01 Jan 2024 00:00:01 GMT"}, True),
        ({"ETag": 'W/"a"', "Last-Modified": LM, "Date": LM2}, True),
    ],
)
def test_strong_validator_follows_rfc9110_8_8_2_2(headers: dict[str, str], strong: bool) -> None:
    assert strong_validator(headers) is strong


def test_an_object_without_a_strong_validator_is_stored_only_from_one_whole_answer() -> None:
    """RFC 9111 §3.4: a part of it could never be completed from another answer."""
    part = meta_from_response("u", 206, {"Content-Range": "bytes 0-9/20", "Cache-Control": "max-age=60"}, NOW, 60)
    assert part is not None and not part.storable
    whole = meta_from_response("u", 206, {"Content-Range": "bytes 0-9/10", "Cache-Control": "max-age=60"}, NOW, 60)
    again = meta_from_response("u", 200, {"Content-Length": "10", "Cache-Control": "max-age=60"}, NOW, 60)
    assert whole is not None and whole.storable and again is not None and again.storable
    # Each answer is its own version: their slices can never meet.
    assert whole.answer and whole.validator != again.validator
    strong = meta_from_response("u", 206, {"Content-Range": "bytes 0-9/20", "ETag": '"s"'}, NOW, 60)
    assert strong is not None and strong.storable and not strong.answer and strong.validator == 'e:20:"s"'


def test_a_304_gives_the_lifetime_of_the_response_it_freshens() -> None:
    """RFC 9111 §4.3.4: a 304 without Cache-Control keeps the stored one's lifetime rules."""
    m = meta_from_response("u", 200, {"Content-Length": "10", "ETag": '"s"', "Cache-Control": "max-age=60",
                                      "Age": "50"}, NOW, 300)
    assert m is not None and m.ttl == 10 and m.age(NOW) == 50
    got = revalidation(m, 304, {"ETag": '"s"'}, NOW + 100, 300)
    assert isinstance(got, Refreshed) and got.meta.ttl == 60 and got.meta.age(NOW + 100) == 0
    got = revalidation(m, 304, {"ETag": '"s"', "Cache-Control": "max-age=5", "Age": "2"}, NOW + 100, 300)
    assert isinstance(got, Refreshed) and got.meta.ttl == 3 and got.meta.age(NOW + 100) == 2


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (206, {}),  # no Content-Range
        (206, {"Content-Range": "bytes 0-99/*"}),  # unknown total
        (206, {"Content-Range": "bytes */1000"}),  # unsatisfied form
        (206, {"Content-Range": "bytes 0-1000/1000"}),  # range past the end
        (206, {"Content-Range": "items 0-9/10"}),
        (206, {"Content-Range": "garbage", "Content-Length": "100"}),  # no fallback to Content-Length
        (200, {}),  # no Content-Length
        (200, {"Content-Length": "1e3"}),
        (200, {"Content-Length": "-1"}),
        (200, {"Content-Length": "+5"}),
        (200, {"Content-Length": "١٢"}),  # non-ASCII digits
        (200, {"Content-Length": ""}),
        (304, {"Content-Length": "1000"}),
        (416, {"Content-Range": "bytes */1000"}),
        (404, {"Content-Length": "10"}),
    ],
)
def test_meta_from_response_without_a_usable_length_is_none(status: int, headers: dict[str, str]) -> None:
    assert meta_from_response("u", status, headers, NOW, DEFAULT_TTL) is None


# --- check_piece ---------------------------------------------------------------

ASKED = Span(100, 200)
GOOD_206 = {"Content-Range": "bytes 100-199/1000", "Content-Length": "100", "ETag": '"v1"', "Last-Modified": LM}
GOOD_200 = {"Content-Length": "1000", "ETag": '"v1"', "Last-Modified": LM}


def _without(d: dict[str, str], key: str) -> dict[str, str]:
    return {k: v for k, v in d.items() if k != key}


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (206, GOOD_206),
        (206, _without(GOOD_206, "Content-Length")),  # Content-Length is optional (chunked)
        (206, {**GOOD_206, "Content-Type": "text/plain"}),  # other fields are not compared
        (200, GOOD_200),  # an origin that ignores Range: the caller skips to asked.start
        (200, {**GOOD_200, "Content-Range": "bytes 0-9/10"}),  # a 200's Content-Range means nothing
    ],
)
def test_check_piece_accepts_the_same_version_answering_the_exact_range(status: int,
                                                                        headers: dict[str, str]) -> None:
    assert check_piece(meta(), ASKED, status, headers) is None


# (status, headers, version_changed, text expected in the reason)
REJECTED = [
    # wrong status
    (404, GOOD_206, False, "status 404"),
    (416, {**GOOD_206, "Content-Range": "bytes */1000"}, False, "expected 206"),
    (304, GOOD_206, False, "expected 206"),
    (500, {}, False, "status 500"),
    (204, {}, False, "status 204"),
    # unusable Content-Range
    (206, _without(GOOD_206, "Content-Range"), False, "bad Content-Range"),
    (206, {**GOOD_206, "Content-Range": "bytes 100-199/*"}, False, "bad Content-Range"),
    (206, {**GOOD_206, "Content-Range": "bytes */1000"}, False, "bad Content-Range"),
    (206, {**GOOD_206, "Content-Range": "bytes 199-100/1000"}, False, "bad Content-Range"),
    (206, {**GOOD_206, "Content-Type": "multipart/byteranges; boundary=x",
           "Content-Range": ""}, False, "bad Content-Range"),
    # not the range that was asked (ATS: "Mismatch/Bad block Content-Range")
    (206, {**GOOD_206, "Content-Range": "bytes 100-299/1000"}, False, "unexpected range"),
    (206, {**GOOD_206, "Content-Range": "bytes 100-149/1000"}, False, "unexpected range"),
    (206, {**GOOD_206, "Content-Range": "bytes 0-99/1000"}, False, "unexpected range"),
    (206, {**GOOD_206, "Content-Range": "bytes 101-200/1000"}, False, "unexpected range"),
    # the version moved (ATS: "Mismatch block Etag")
    (206, {**GOOD_206, "Content-Range": "bytes 100-199/2000"}, True, "length 2000"),
    (206, {**GOOD_206, "ETag": '"v2"'}, True, "ETag"),
    (206, _without(GOOD_206, "ETag"), True, "ETag"),
    (206, {**GOOD_206, "ETag": 'W/"v1"'}, True, "ETag"),
    (206, {**GOOD_206, "Last-Modified": LM2}, True, "Last-Modified"),
    (206, _without(GOOD_206, "Last-Modified"), True, "Last-Modified"),
    # a version change wins over a wrong range: the caller must invalidate
    (206, {**GOOD_206, "ETag": '"v2"', "Content-Range": "bytes 0-9/1000"}, True, "ETag"),
    # body length disagrees with the range
    (206, {**GOOD_206, "Content-Length": "99"}, False, "Content-Length 99"),
    (206, {**GOOD_206, "Content-Length": "1000"}, False, "Content-Length 1000"),
    # 200 answers
    (200, _without(GOOD_200, "Content-Length"), False, "200 without Content-Length"),
    (200, {**GOOD_200, "Content-Length": "abc"}, False, "200 without Content-Length"),
    (200, {**GOOD_200, "Content-Length": "999"}, True, "length 999"),
    (200, {**GOOD_200, "ETag": '"v2"'}, True, "ETag"),
    (200, {**GOOD_200, "Last-Modified": LM2}, True, "Last-Modified"),
]


@pytest.mark.parametrize(("status", "headers", "version_changed", "reason"), REJECTED)
def test_check_piece_rejects_answers_that_disagree(status: int, headers: dict[str, str], version_changed: bool,
                                                   reason: str) -> None:
    bad = check_piece(meta(), ASKED, status, headers)
    assert isinstance(bad, Mismatch)
    assert bad.version_changed is version_changed
    assert reason in bad.reason


@pytest.mark.parametrize(
    ("ref", "headers", "ok"),
    [
        # a reference without validators checks the length only
        (meta(etag=None, last_modified=None), {"Content-Range": "bytes 100-199/1000", "ETag": '"new"'}, True),
        (meta(etag=None, last_modified=None), {"Content-Range": "bytes 100-199/1001"}, False),
        # a reference with only Last-Modified compares it, and ignores an ETag the origin now adds
        (meta(etag=None), {"Content-Range": "bytes 100-199/1000", "Last-Modified": LM, "ETag": '"x"'}, True),
        (meta(etag=None), {"Content-Range": "bytes 100-199/1000", "Last-Modified": LM2}, False),
        # a reference with only an ETag compares it
        (meta(last_modified=None), {"Content-Range": "bytes 100-199/1000", "ETag": '"v1"'}, True),
        (meta(last_modified=None), {"Content-Range": "bytes 100-199/1000", "ETag": '"v1"', "Last-Modified": LM2},
         True),
        # weak ETags must match exactly too
        (meta(etag='W/"v1"'), {"Content-Range": "bytes 100-199/1000", "ETag": 'W/"v1"', "Last-Modified": LM}, True),
        (meta(etag='W/"v1"'), {"Content-Range": "bytes 100-199/1000", "ETag": '"v1"', "Last-Modified": LM}, False),
    ],
)
def test_check_piece_compares_only_the_validators_the_reference_has(ref: ObjectMeta, headers: dict[str, str],
                                                                    ok: bool) -> None:
    bad = check_piece(ref, ASKED, 206, headers)
    assert (bad is None) is ok
    if not ok:
        assert bad is not None and bad.version_changed


def test_check_piece_accepts_the_short_last_slice_of_the_object() -> None:
    headers = {"Content-Range": "bytes 900-999/1000", "Content-Length": "100", "ETag": '"v1"', "Last-Modified": LM}
    assert check_piece(meta(), Span(900, 1000), 206, headers) is None


def test_check_piece_reads_content_length_as_a_number() -> None:
    assert check_piece(meta(), ASKED, 206, {**GOOD_206, "Content-Length": "0100"}) is None


@st.composite
def length_and_two_spans(draw: st.DrawFn) -> tuple[int, Span, Span]:
    length = draw(st.integers(1, 10**12))

    def span() -> Span:
        start = draw(st.integers(0, length - 1))
        return Span(start, draw(st.integers(start + 1, length)))

    return length, span(), span()


@given(length_and_two_spans(), st.sampled_from(['"v1"', None]), st.sampled_from([LM, None]))
def test_an_honest_206_is_accepted_only_for_the_span_asked(case: tuple[int, Span, Span], etag: str | None,
                                                          last_modified: str | None) -> None:
    length, asked, sent = case
    ref = meta(length=length, etag=etag, last_modified=last_modified)
    headers = {"Content-Range": format_content_range(sent, length), "Content-Length": str(sent.size)}
    if etag:
        headers["ETag"] = etag
    if last_modified:
        headers["Last-Modified"] = last_modified
    bad = check_piece(ref, asked, 206, headers)
    if sent == asked:
        assert bad is None
    else:
        assert bad is not None and not bad.version_changed
    # the same answer for another total length is a version change
    other = {**headers, "Content-Range": format_content_range(sent, length + 1)}
    moved = check_piece(ref, asked, 206, other)
    assert moved is not None and moved.version_changed


# --- first_answer: what the first ranged GET of an unknown object means -------------

FIRST = Span(0, 4096)  # the first units of an object of unknown length (not clipped)


def test_a_206_covering_the_asked_span_up_to_the_end_is_learnt() -> None:
    h = {"Content-Range": "bytes 0-999/1000", "ETag": '"v1"', "Content-Type": "video/mp4",
         "Cache-Control": "max-age=60"}
    got = first_answer("http://o/x", FIRST, 206, h, NOW, DEFAULT_TTL)
    stored = (("ETag", '"v1"'), ("Content-Type", "video/mp4"), ("Cache-Control", "max-age=60"))
    assert got == Learned(ObjectMeta("http://o/x", 1000, '"v1"', None, "video/mp4", NOW, 60.0, headers=stored))


def test_a_200_from_an_origin_ignoring_range_is_learnt_from_its_content_length() -> None:
    got = first_answer("http://o/x", Span(2048, 4096), 200, {"Content-Length": "5000"}, NOW, DEFAULT_TTL)
    assert isinstance(got, Learned) and got.meta.length == 5000


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (416, {"Content-Range": "bytes */0", "ETag": '"e"'}, Empty),  # an empty object
        (416, {"Content-Range": "bytes */100"}, PastEnd),  # asked past the end of 100 bytes
        (416, {}, Unusable),  # a 416 must say the complete length
        (416, {"Content-Range": "bytes */*"}, Unusable),
        (404, {}, Refused),  # an error status: passed through
        (503, {"Retry-After": "5"}, Refused),
        (206, {"Content-Range": "bytes 0-99/*"}, Unusable),  # no usable length
        (200, {"Content-Length": "+5"}, Unusable),  # strict digits (RFC 9110 §8.6)
        (200, {}, Unusable),
    ],
)
def test_first_answer_outcomes(status: int, headers: dict[str, str], expected: type) -> None:
    got = first_answer("http://o/x", FIRST, status, headers, NOW, DEFAULT_TTL)
    assert isinstance(got, expected)
    if isinstance(got, PastEnd):
        assert got.length == 100
    if isinstance(got, Empty):
        assert (got.meta.length, got.meta.etag) == (0, '"e"')
    if isinstance(got, Refused):
        assert got.status == status


@pytest.mark.parametrize(
    ("content_range", "content_length", "why"),
    [
        ("bytes 0-2047/10000", None, "unexpected range"),  # shorter than asked (object is longer)
        ("bytes 1-4096/10000", None, "unexpected range"),  # not where asked
        ("bytes 0-4095/10000", "4000", "Content-Length"),  # body length disagrees with the range
        ("bytes 0-998/1000", None, "unexpected range"),  # must reach the end when the object ends first
    ],
)
def test_a_206_that_disagrees_with_the_request_is_a_mismatch(content_range: str, content_length: str | None,
                                                             why: str) -> None:
    h = {"Content-Range": content_range}
    if content_length is not None:
        h["Content-Length"] = content_length
    got = first_answer("http://o/x", FIRST, 206, h, NOW, DEFAULT_TTL)
    assert isinstance(got, Unusable) and got.mismatch and why in got.reason


# --- revalidation: what a conditional request's answer means (RFC 9111 §4.3) ---------


def test_a_304_refreshes_with_its_own_freshness() -> None:
    got = revalidation(meta(), 304, {"Cache-Control": "max-age=120"}, NOW + 500, DEFAULT_TTL)
    # RFC 9111 §3.2: the 304's fields freshen the stored ones.
    assert got == Refreshed(meta(stored_at=NOW + 500, ttl=120.0, headers=(("Cache-Control", "max-age=120"),)))


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (206, {"Content-Range": "bytes 0-0/1000", "ETag": '"v1"', "Last-Modified": LM}),
        (200, {"Content-Length": "1000", "ETag": '"v1"', "Last-Modified": LM}),  # Range ignored, same version
    ],
)
def test_the_same_version_answered_in_full_refreshes(status: int, headers: dict[str, str]) -> None:
    got = revalidation(meta(), status, headers, NOW + 10, DEFAULT_TTL)
    stored = (("ETag", '"v1"'), ("Last-Modified", LM))
    assert got == Refreshed(meta(stored_at=NOW + 10, ttl=DEFAULT_TTL, headers=stored))


@pytest.mark.parametrize(
    ("status", "headers", "why"),
    [
        (206, {"Content-Range": "bytes 0-0/1000", "ETag": '"v2"', "Last-Modified": LM}, "ETag"),
        (200, {"Content-Length": "1000", "ETag": '"v1"', "Last-Modified": LM2}, "Last-Modified"),
        (206, {"Content-Range": "bytes 0-0/999", "ETag": '"v1"', "Last-Modified": LM}, "length"),
    ],
)
def test_another_version_is_changed(status: int, headers: dict[str, str], why: str) -> None:
    got = revalidation(meta(), status, headers, NOW, DEFAULT_TTL)
    assert isinstance(got, Changed) and why in got.reason


def test_a_content_length_with_non_ascii_digits_is_no_length() -> None:
    """"１０００" (full-width) passes str.isdigit(); HTTP's digits are ASCII only."""
    h = {"Content-Length": "\uff11\uff10\uff10\uff10", "ETag": '"v1"', "Last-Modified": LM}
    assert isinstance(revalidation(meta(), 200, h, NOW, DEFAULT_TTL), Refreshed)  # same version, length unknown
    h2 = {"Content-Length": "999", "ETag": '"v1"', "Last-Modified": LM}
    assert isinstance(revalidation(meta(), 200, h2, NOW, DEFAULT_TTL), Changed)


@pytest.mark.parametrize("status", [404, 410])
def test_404_and_410_mean_gone(status: int) -> None:
    assert revalidation(meta(), status, {}, NOW, DEFAULT_TTL) == Gone(status)


@pytest.mark.parametrize("status", [500, 502, 503, 403, 301])
def test_other_statuses_mean_the_revalidation_erred(status: int) -> None:
    # Whether the stored object may still answer is proxy.core.staleness.on_error's decision.
    assert revalidation(meta(), status, {}, NOW, DEFAULT_TTL) == Erred(status)


def test_a_response_setting_a_cookie_is_not_stored() -> None:
    h = {"Content-Range": "bytes 0-9/10", "ETag": '"a"', "Cache-Control": "max-age=60", "Set-Cookie": "s=1"}
    m = meta_from_response("u", 206, h, NOW, 60)
    assert m is not None and not m.storable and all(n != "Set-Cookie" for n, _ in m.headers)
