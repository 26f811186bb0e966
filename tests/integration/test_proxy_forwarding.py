"""What a client's GET or HEAD lends the origin (RFC 9110 §7.6), and who may share the answer
(RFC 9111 §3.5 for credentials, §7.4 for cookies): real proxy, real fault origin on loopback."""

from __future__ import annotations

import pytest

from tests.support.client import fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.servers import DEFAULT_SLICE

pytestmark = pytest.mark.integration

S = DEFAULT_SLICE
TOKEN = "Bearer good-token"


async def test_the_clients_fields_reach_the_origin_on_a_miss_but_not_the_caches_own(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = seeded_bytes(3 * S, 61)
    fault_origin.set_object("f.bin", data, cache_control="max-age=600")
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)
    out = await fetch(http, proxy.url_for("f.bin"), headers={
        "Range": "bytes=10-20", "User-Agent": "player/7", "Accept-Language": "fr", "Cookie": "session=1",
        "X-Forwarded-For": "203.0.113.9", "If-None-Match": '"nope"', "Accept-Encoding": "gzip",
        "Cache-Control": "max-stale=5", "X-Custom": "yes"})
    assert out.status == 206 and out.body == data[10:21]
    (got,) = fault_origin.gets_for("f.bin")
    h = got.headers
    assert h["User-Agent"] == "player/7" and h["Accept-Language"] == "fr" and h["Cookie"] == "session=1"
    assert h["X-Custom"] == "yes"
    assert h["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1" and h["X-Forwarded-Proto"] == "http"
    assert h["X-Forwarded-Host"] == f"127.0.0.1:{proxy.port}"
    assert h["Via"].endswith("1.1 rangeproxy")
    # The cache's own: its slice-aligned Range, identity, no client conditional or directive.
    assert h["Range"] != "bytes=10-20" and h["Accept-Encoding"] == "identity"
    assert "If-None-Match" not in h and "Cache-Control" not in h


async def test_a_balancers_x_forwarded_for_is_kept_and_extended(fault_origin: FaultOrigin, proxy_factory,
                                                                 http) -> None:
    """Behind a balancer: the chain it sent (one line, or a line it added to the client's, as HAProxy's
    option forwardfor does) reaches the origin as one line, with this client's address last, on a
    miss and on an answer passed through (a 404)."""
    from multidict import CIMultiDict

    fault_origin.set_object("x.bin", seeded_bytes(S, 64), cache_control="max-age=600")
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)
    for name, lines, want in (
        ("x.bin", ["198.51.100.20, 203.0.113.9"], "198.51.100.20, 203.0.113.9, 127.0.0.1"),
        ("absent.bin", ["198.51.100.20", "192.0.2.1"], "198.51.100.20, 192.0.2.1, 127.0.0.1"),
    ):
        headers = CIMultiDict([("X-Forwarded-For", line) for line in lines])
        headers.update({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "media.example"})  # the balancer's
        async with http.get(proxy.url_for(name), headers=headers) as r:
            await r.read()
            assert r.status == (200 if name == "x.bin" else 404)
        (got,) = fault_origin.gets_for(name)
        assert [v for k, v in got.header_lines if k.lower() == "x-forwarded-for"] == [want]
        assert (got.headers["X-Forwarded-Proto"], got.headers["X-Forwarded-Host"]) == ("https", "media.example")


async def test_dropped_fields_never_reach_the_origin(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    fault_origin.set_object("d.bin", seeded_bytes(S, 62), cache_control="max-age=600")
    proxy = proxy_factory(fault_origin.url, drop_request_fields="Cookie, X-Debug")
    out = await fetch(http, proxy.url_for("d.bin"), headers={"Cookie": "a=1", "X-Debug": "1", "X-Keep": "1"})
    assert out.status == 200
    out = await fetch(http, proxy.url_for("d.bin"), method="POST", headers={"Cookie": "a=1", "X-Keep": "1"})
    assert out.status == 200
    for rec in fault_origin.requests_for("d.bin"):
        assert "Cookie" not in rec.headers and "X-Debug" not in rec.headers and rec.headers["X-Keep"] == "1"


async def test_an_answer_to_credentials_is_for_that_client_alone(fault_origin: FaultOrigin, proxy_factory,
                                                                 http) -> None:
    """RFC 9111 §3.5: without public, s-maxage or must-revalidate it is neither stored nor shared."""
    data = seeded_bytes(3 * S + 5, 63)
    fault_origin.set_object("mine.bin", data, cache_control="max-age=600", authorization=TOKEN)
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)
    url = proxy.url_for("mine.bin")
    out = await fetch(http, url, headers={"Authorization": TOKEN})
    assert out.status == 200 and out.body == data
    assert fault_origin.gets_for("mine.bin")[0].headers["Authorization"] == TOKEN
    # Anyone else is asked about by the origin, which says no: 401 and its challenge pass through.
    out = await fetch(http, url, headers={"Range": "bytes=0-9"})
    assert out.status == 401 and out.header("WWW-Authenticate") == 'Bearer realm="media"'
    # The owner again: a new upstream answer each time (nothing kept), right bytes.
    before = len(fault_origin.gets_for("mine.bin"))
    out = await fetch(http, url, headers={"Authorization": TOKEN, "Range": f"bytes={S}-{2 * S + 9}"})
    assert out.status == 206 and out.body == data[S:2 * S + 10]
    assert len(fault_origin.gets_for("mine.bin")) > before
    assert not any(p.stat().st_size >= S for p in proxy.cache_dir.rglob("*.val")), "a private answer was stored"


@pytest.mark.parametrize("cc", ["public, max-age=600", "s-maxage=600", "must-revalidate, max-age=600"])
async def test_an_answer_to_credentials_the_origin_marks_shareable_is_shared(
        fault_origin: FaultOrigin, proxy_factory, http, cc: str) -> None:
    data = seeded_bytes(2 * S, 64)
    fault_origin.set_object("pub.bin", data, cache_control=cc, authorization=TOKEN)
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)
    url = proxy.url_for("pub.bin")
    out = await fetch(http, url, headers={"Authorization": TOKEN})
    assert out.status == 200 and out.body == data
    asked = len(fault_origin.gets_for("pub.bin"))
    out = await fetch(http, url, headers={"Range": f"bytes=5-{S + 5}"})  # no credentials: from the cache
    assert out.status == 206 and out.body == data[5:S + 6] and out.header("X-Cache") == "HIT"
    assert len(fault_origin.gets_for("pub.bin")) == asked


async def test_a_response_setting_a_cookie_is_stored_when_the_operator_allows_it(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = seeded_bytes(S, 65)
    fault_origin.set_object("c.bin", data, cache_control="max-age=600", headers=[("Set-Cookie", "seen=1")])
    proxy = proxy_factory(fault_origin.url, store_set_cookie=True)
    url = proxy.url_for("c.bin")
    first = await fetch(http, url)
    assert first.status == 200 and first.body == data and first.headers.getall("Set-Cookie") == ["seen=1"]
    second = await fetch(http, url)
    assert second.status == 200 and second.body == data and second.header("X-Cache") == "HIT"
    assert "Set-Cookie" not in second.headers  # the cookie was the first client's
    assert len(fault_origin.gets_for("c.bin")) == 1
