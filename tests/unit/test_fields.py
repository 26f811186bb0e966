"""proxy.core.fields: which origin fields a shared cache stores, freshens and replays."""

from __future__ import annotations

import pytest

from proxy.core.fields import (
    cache_status, cookies, freshen, initial_age, not_modified_fields, replay, stored_fields, via,
)

ORIGIN = [
    ("Content-Type", "video/mp4"),
    ("Content-Length", "100"),
    ("Content-Range", "bytes 0-99/1000"),
    ("Accept-Ranges", "bytes"),
    ("ETag", '"v1"'),
    ("Cache-Control", "max-age=60"),
    ("Access-Control-Allow-Origin", "*"),
    ("Link", "</a.vtt>; rel=preload"),
    ("Link", "</b.vtt>; rel=preload"),
    ("Connection", "keep-alive, X-Hop"),
    ("Keep-Alive", "timeout=5"),
    ("X-Hop", "only for this connection"),
    ("Transfer-Encoding", "chunked"),
    ("Set-Cookie", "session=abc"),
    ("Proxy-Authenticate", "Basic"),
    ("Age", "30"),
    ("Content-Disposition", 'attachment; filename="a.mp4"'),
]


def test_stored_fields_keep_end_to_end_fields_in_order_with_repeats() -> None:
    assert stored_fields(ORIGIN) == (
        ("Content-Type", "video/mp4"),
        ("ETag", '"v1"'),
        ("Cache-Control", "max-age=60"),
        ("Access-Control-Allow-Origin", "*"),
        ("Link", "</a.vtt>; rel=preload"),
        ("Link", "</b.vtt>; rel=preload"),
        ("Age", "30"),
        ("Content-Disposition", 'attachment; filename="a.mp4"'),
    )


@pytest.mark.parametrize(
    "name",
    ["Connection", "Keep-Alive", "Proxy-Connection", "TE", "Transfer-Encoding", "Upgrade", "Proxy-Authenticate",
     "Proxy-Authentication-Info", "Proxy-Authorization", "Set-Cookie", "Content-Length", "X-Cache"],
)
def test_hop_by_hop_personal_and_framing_fields_are_never_stored(name: str) -> None:
    assert stored_fields([(name.lower(), "x"), ("ETag", '"e"')]) == (("ETag", '"e"'),)


def test_fields_named_by_private_or_no_cache_are_not_stored() -> None:
    """RFC 9111 §5.2.2.4 / §5.2.2.7: the qualified forms name fields a shared cache leaves out."""
    got = stored_fields([("Cache-Control", 'private="X-User, X-Tier", max-age=5'), ("X-User", "ann"),
                         ("X-Tier", "gold"), ("Cache-Control", 'no-cache="X-Trace"'), ("X-Trace", "t1"),
                         ("X-Other", "kept")])
    assert [n for n, _ in got] == ["Cache-Control", "Cache-Control", "X-Other"]


def test_freshen_replaces_each_named_field_and_keeps_the_rest() -> None:
    stored = stored_fields(ORIGIN)
    new = freshen(stored, [("Cache-Control", "max-age=600"), ("Expires", "never"), ("Content-Length", "0"),
                           ("Content-Type", "video/mp4; codecs=avc1"), ("Set-Cookie", "x=1"), ("ETag", '"other"'),
                           ("Content-MD5", "x")])
    d = dict(new)
    assert d["Cache-Control"] == "max-age=600" and d["Expires"] == "never"
    assert d["Content-Type"] == "video/mp4; codecs=avc1"  # RFC 9111 §3.2: nothing was parsed from it
    assert d["ETag"] == '"v1"' and d["Content-MD5"] == "x"  # the content's own: kept, or added if none
    again = dict(freshen(new, [("Content-MD5", "y"), ("ETag", '"w"')]))
    assert again["Content-MD5"] == "x" and again["ETag"] == '"v1"'
    assert "Set-Cookie" not in d and "Content-Length" not in d
    assert [v for n, v in new if n == "Link"] == ["</a.vtt>; rel=preload", "</b.vtt>; rel=preload"]


def test_via_appends_this_hop_to_the_origins() -> None:
    assert via(()) == "1.1 rangeproxy"
    assert via((("Via", "1.1 edge"), ("Via", "1.0 old"))) == "1.1 edge, 1.0 old, 1.1 rangeproxy"


def test_replay_leaves_out_via_and_what_the_answer_frames_itself() -> None:
    stored = (("Via", "1.1 edge"), ("Content-Type", "a/b"), ("ETag", '"e"'))
    assert replay(stored, drop=("content-type",)) == [("ETag", '"e"')]


@pytest.mark.parametrize(
    ("x_cache", "ttl", "stored", "expected"),
    [
        ("HIT", 59.7, True, "rangeproxy; hit; ttl=59"),
        ("MISS", 60.0, True, "rangeproxy; fwd=miss; stored; ttl=60"),
        ("MISS", None, False, "rangeproxy; fwd=miss"),
        ("PARTIAL", None, True, "rangeproxy; fwd=partial; stored"),
        ("PASS", None, True, "rangeproxy; fwd=method"),
    ],
)
def test_cache_status_follows_rfc9211(x_cache: str, ttl: float | None, stored: bool, expected: str) -> None:
    assert cache_status(x_cache, ttl, stored) == expected


def test_a_304_carries_only_the_fields_rfc9110_lists() -> None:
    stored = (("Content-Type", "a/b"), ("ETag", '"e"'), ("Cache-Control", "max-age=1"), ("Vary", "Origin"),
              ("Link", "<x>"), ("Date", "d"), ("Expires", "x"), ("Content-Location", "/a"))
    assert [n for n, _ in not_modified_fields(stored)] == ["ETag", "Cache-Control", "Vary", "Date", "Expires",
                                                           "Content-Location"]


def test_cookies_are_the_set_cookie_fields_only() -> None:
    assert cookies(ORIGIN) == (("Set-Cookie", "session=abc"),)
    assert cookies([("ETag", '"e"')]) == ()


def test_a_304_keeps_the_cors_fields_a_browser_checks() -> None:
    stored = (("Access-Control-Allow-Origin", "*"), ("Access-Control-Expose-Headers", "Content-Range"),
              ("Timing-Allow-Origin", "*"), ("Content-Disposition", "inline"), ("ETag", '"e"'))
    assert [n for n, _ in not_modified_fields(stored)] == ["Access-Control-Allow-Origin",
                                                           "Access-Control-Expose-Headers", "Timing-Allow-Origin",
                                                           "ETag"]


def test_the_origins_age_is_stored_as_the_initial_age_and_never_replayed() -> None:
    """RFC 9111 §4.2.3: the Age sent is the age it arrived with plus the time spent here."""
    stored = stored_fields([("Age", "30"), ("ETag", '"e"')])
    assert initial_age(stored) == 30 and ("Age", "30") not in replay(stored)
    assert initial_age(stored_fields([("Age", "soon")])) == 0 and initial_age(()) == 0
