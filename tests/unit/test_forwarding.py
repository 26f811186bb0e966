"""Which client fields reach the origin, and who may share an answer (RFC 9110 §7.6, RFC 9111 §3.5)."""

from __future__ import annotations

import pytest

from proxy.core.forwarding import VIA, Asker, authorized, origin_fields
from proxy.core.representation import Sharing, shareable

WHO = Asker("10.0.0.7", "http", "media.example")


def names(fields: tuple[tuple[str, str], ...]) -> list[str]:
    return [n.lower() for n, _ in fields]


def test_end_to_end_fields_go_and_hop_by_hop_ones_do_not() -> None:
    got = origin_fields([("User-Agent", "player/1"), ("Cookie", "a=1"), ("Cookie", "b=2"),
                         ("Connection", "keep-alive, X-Hop"), ("X-Hop", "1"), ("Keep-Alive", "5"),
                         ("TE", "trailers"), ("Host", "media.example"), ("Accept-Language", "fr")], WHO)
    assert got[:4] == (("User-Agent", "player/1"), ("Cookie", "a=1"), ("Cookie", "b=2"), ("Accept-Language", "fr"))
    assert not {"connection", "x-hop", "keep-alive", "te", "host"} & set(names(got))


def test_the_cache_keeps_its_own_fields_on_its_fetches_and_passes_them_otherwise() -> None:
    client = [("Range", "bytes=0-1"), ("If-None-Match", '"x"'), ("Accept-Encoding", "gzip"),
              ("Cache-Control", "no-cache"), ("Pragma", "no-cache"), ("If-Range", '"x"'), ("Accept", "*/*")]
    cached = origin_fields(client, WHO)
    assert names(cached)[0] == "accept" and not {"range", "if-none-match", "accept-encoding", "cache-control",
                                                  "pragma", "if-range"} & set(names(cached))
    passed = origin_fields(client, WHO, cache_controlled=False)
    assert {"range", "if-none-match", "accept-encoding", "cache-control"} <= set(names(passed))


def test_who_asked_is_appended_and_via_adds_this_hop() -> None:
    got = dict(origin_fields([("X-Forwarded-For", "1.2.3.4"), ("Via", "1.1 edge")], WHO))
    assert got["X-Forwarded-For"] == "1.2.3.4, 10.0.0.7"
    assert got["X-Forwarded-Proto"] == "http" and got["X-Forwarded-Host"] == "media.example"
    assert got["Via"] == f"1.1 edge, {VIA}"
    kept = dict(origin_fields([("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "cdn.example")], WHO))
    assert kept["X-Forwarded-Proto"] == "https" and kept["X-Forwarded-Host"] == "cdn.example"


def test_dropped_fields_never_go() -> None:
    got = origin_fields([("Cookie", "a=1"), ("X-Debug", "1"), ("Accept", "*/*")], WHO, drop=("cookie", "X-DEBUG"))
    assert "cookie" not in names(got) and "x-debug" not in names(got) and "accept" in names(got)


def test_authorization_marks_a_request_as_credentialed() -> None:
    assert authorized({"Authorization": "Bearer t"}) and not authorized({"Cookie": "a=1"})


@pytest.mark.parametrize(("cc", "shared"), [
    (None, False), ("max-age=60", False), ("private, max-age=60", False),
    ("public, max-age=60", True), ("s-maxage=60", True), ("must-revalidate, max-age=60", True),
])
def test_an_answer_to_credentials_is_shared_only_when_the_origin_says_so(cc: str | None, shared: bool) -> None:
    """RFC 9111 §3.5: must-revalidate, public or s-maxage."""
    headers = {"Cache-Control": cc} if cc else {}
    assert shareable(headers, Sharing(authorized=True)) is shared
    assert shareable(headers)  # without credentials, anyone's


def test_an_answer_setting_a_cookie_is_shared_only_when_the_operator_allows_it() -> None:
    assert not shareable({"Set-Cookie": "s=1"})
    assert shareable({"Set-Cookie": "s=1"}, Sharing(keep_cookies=True))


def test_the_caches_fetches_announce_it_as_a_surrogate() -> None:
    """Edge Architecture 1.0: Surrogate-Capability, appended to any a surrogate before us sent."""
    got = dict(origin_fields([("Surrogate-Capability", 'edge="Surrogate/1.0"')], WHO))
    assert got["Surrogate-Capability"] == 'edge="Surrogate/1.0", rangeproxy="Surrogate/1.0"'
    passed = origin_fields([("Surrogate-Capability", 'edge="Surrogate/1.0"')], WHO, cache_controlled=False)
    assert ("Surrogate-Capability", 'edge="Surrogate/1.0"') in passed and len(names(passed)) == 5
