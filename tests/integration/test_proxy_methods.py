"""Methods other than GET/HEAD pass through to the origin, request bodies
streamed; a successful unsafe method invalidates the cached object."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import pytest

from tests.support.client import fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.servers import DEFAULT_SLICE

pytestmark = pytest.mark.integration

S = DEFAULT_SLICE


async def test_methods_pass_through(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    proxy = proxy_factory(fault_origin.url)
    url = proxy.url_for("m/obj.bin")
    body = seeded_bytes(300_000, 61)

    out = await fetch(http, url + "?v=1", method="PUT", data=body, headers={"Content-Type": "application/x-test"})
    assert out.status == 201
    put = fault_origin.requests_for("m/obj.bin")[-1]
    assert (put.method, put.query, put.body_len) == ("PUT", "v=1", len(body))
    assert put.body_sha256 == hashlib.sha256(body).hexdigest()
    assert fault_origin.get_object("m/obj.bin").data == body

    for method in ("POST", "PATCH"):
        out = await fetch(http, url + "?q=2", method=method, data=body[:1234],
                          headers={"Content-Type": "text/x-thing"})
        assert out.status == 200, method
        echo = json.loads(out.body)
        assert echo["method"] == method
        assert echo["length"] == 1234
        assert echo["sha256"] == hashlib.sha256(body[:1234]).hexdigest()
        assert echo["content_type"] == "text/x-thing"
        assert echo["query"] == "q=2"

    out = await fetch(http, url, method="OPTIONS")
    assert out.status == 204 and "PATCH" in (out.header("Allow") or "")
    out = await fetch(http, url, method="POST")  # empty body
    assert out.status == 200 and json.loads(out.body)["length"] == 0

    out = await fetch(http, url, method="DELETE")
    assert out.status == 204
    assert (await fetch(http, url, method="DELETE")).status == 404
    assert (await fetch(http, url)).status == 404
    methods = [r.method for r in fault_origin.requests_for("m/obj.bin")]
    assert methods[:6] == ["PUT", "POST", "PATCH", "OPTIONS", "POST", "DELETE"], methods


@pytest.mark.timeout(60)
async def test_request_bodies_are_streamed(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    """The origin must see the start of the body before the client has sent the rest."""
    proxy = proxy_factory(fault_origin.url)
    part1, part2 = seeded_bytes(2 * 2**20, 62), seeded_bytes(6 * 2**20, 63)
    seen_early = False

    async def body():
        nonlocal seen_early
        yield part1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not fault_origin.body_progress.get("up.bin"):
            await asyncio.sleep(0.02)
        seen_early = bool(fault_origin.body_progress.get("up.bin"))
        for i in range(0, len(part2), 2**20):
            yield part2[i:i + 2**20]

    out = await fetch(http, proxy.url_for("up.bin"), method="POST", data=body(), timeout=40)
    assert out.status == 200
    echo = json.loads(out.body)
    assert echo["length"] == len(part1) + len(part2)
    assert echo["sha256"] == hashlib.sha256(part1 + part2).hexdigest()
    assert seen_early, "the proxy buffered the request body instead of streaming it"


async def test_large_put_with_content_length(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    proxy = proxy_factory(fault_origin.url)
    body = seeded_bytes(8 * 2**20 + 3, 64)
    out = await fetch(http, proxy.url_for("big-put.bin"), method="PUT", data=body, timeout=40)
    assert out.status == 201
    rec = fault_origin.requests_for("big-put.bin")[-1]
    assert rec.headers.get("Content-Length") == str(len(body)) or rec.headers.get("Transfer-Encoding")
    assert fault_origin.get_object("big-put.bin").data == body
    out = await fetch(http, proxy.url_for("big-put.bin"), headers={"Range": f"bytes={2**20}-{3 * 2**20}"})
    assert out.status == 206 and out.body == body[2**20:3 * 2**20 + 1]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_successful_unsafe_method_invalidates(fault_origin: FaultOrigin, proxy_factory, http,
                                                    method) -> None:
    old = seeded_bytes(3 * S + 9, 65)
    fault_origin.set_object("inv.bin", old, cache_control="max-age=3600")
    proxy = proxy_factory(fault_origin.url, default_ttl=3600)
    url = proxy.url_for("inv.bin")
    assert (await fetch(http, url)).body == old
    gets = len(fault_origin.gets_for("inv.bin"))
    out = await fetch(http, url)
    assert out.body == old
    assert len(fault_origin.gets_for("inv.bin")) == gets, "not served from the cache"

    new = seeded_bytes(3 * S + 9, 66)
    if method == "PUT":
        out = await fetch(http, url, method="PUT", data=new)
        assert out.status == 204
        expected: bytes | None = new
    elif method == "DELETE":
        out = await fetch(http, url, method="DELETE")
        assert out.status == 204
        expected = None
    else:
        out = await fetch(http, url, method=method, data=b"{}")
        assert out.status == 200
        # the origin changed the object behind the proxy's back, as a POST may
        fault_origin.set_object("inv.bin", new, cache_control="max-age=3600")
        expected = new

    out = await fetch(http, url)
    assert len(fault_origin.gets_for("inv.bin")) > gets, "the GET after a 2xx unsafe method was not refetched"
    if expected is None:
        assert out.status == 404
    else:
        assert out.status == 200 and out.complete and out.body == expected
        out = await fetch(http, url, headers={"Range": f"bytes={S}-{2 * S}"})
        assert out.status == 206 and out.body == expected[S:2 * S + 1]


async def test_an_unsafe_method_invalidates_what_its_location_and_content_location_name(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    """RFC 9111 §4.4: the target and the same-origin URLs in Location / Content-Location."""
    for name in ("a.bin", "b.bin", "c.bin"):
        fault_origin.set_object(name, seeded_bytes(S, 67), cache_control="max-age=3600")
    fault_origin.set_object("form", b"", headers=[("Location", "/a.bin"), ("Content-Location", "b.bin")])
    proxy = proxy_factory(fault_origin.url)
    for name in ("a.bin", "b.bin", "c.bin"):
        assert (await fetch(http, proxy.url_for(name))).status == 200
    gets = {n: len(fault_origin.gets_for(n)) for n in ("a.bin", "b.bin", "c.bin")}
    out = await fetch(http, proxy.url_for("form"), method="POST", data=b"{}")
    assert out.status == 200 and out.header("Location") == "/a.bin"
    for name in ("a.bin", "b.bin", "c.bin"):
        assert (await fetch(http, proxy.url_for(name))).status == 200
    assert len(fault_origin.gets_for("a.bin")) > gets["a.bin"] and len(fault_origin.gets_for("b.bin")) > gets["b.bin"]
    assert len(fault_origin.gets_for("c.bin")) == gets["c.bin"]  # named by nobody: still cached


async def test_failed_unsafe_method_is_passed_through(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = seeded_bytes(S, 67)
    fault_origin.set_object("f.bin", data, fail_status=500)
    proxy = proxy_factory(fault_origin.url)
    out = await fetch(http, proxy.url_for("f.bin"), method="POST", data=b"x" * 100)
    assert out.status == 500
    assert fault_origin.requests_for("f.bin")[-1].body_len == 100


async def test_pass_through_says_who_asked_and_appends_its_hop(fault_origin: FaultOrigin, proxy_factory,
                                                              http) -> None:
    fault_origin.set_object("form", b"x")
    proxy = proxy_factory(fault_origin.url)
    out = await fetch(http, proxy.url_for("form"), method="POST", data=b"hello",
                      headers={"X-Forwarded-For": "203.0.113.7", "Via": "1.1 client-side", "X-Trace": "t-1"})
    assert out.status == 200
    assert out.header("Via") == "1.1 rangeproxy"
    rec = [r for r in fault_origin.requests_for("form") if r.method == "POST"][-1]
    h = {k.lower(): v for k, v in rec.headers.items()}
    assert h["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"  # appended, not replaced
    assert h["x-forwarded-proto"] == "http" and h["x-forwarded-host"] == proxy.url.split("//", 1)[1]
    assert h["via"] == "1.1 client-side, 1.1 rangeproxy"
    assert h["x-trace"] == "t-1"  # the client's own end-to-end fields reach the origin
