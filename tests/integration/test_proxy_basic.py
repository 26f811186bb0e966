"""The proxy's HTTP surface: full and range GETs, multipart, 416, the ?range=
query form, conditionals, HEAD, headers, and request-target handling.

Bytes are always compared with the source (the file on disk of the demo
origin, or the fault origin's object)."""

from __future__ import annotations

import email.utils

import pytest

from tests.support.client import content_range, fetch, parse_multipart_byteranges
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.rawhttp import send_raw
from tests.support.servers import DEFAULT_SLICE

pytestmark = pytest.mark.integration

S = DEFAULT_SLICE  # 64 KiB slices in these tests


def assert_proxy_headers(out, *, etag: str | None = None, last_modified: str | None = None) -> None:
    assert out.header("Accept-Ranges") == "bytes", dict(out.headers)
    assert out.header("Via"), "no Via header"
    assert out.header("X-Cache") in ("HIT", "MISS", "PARTIAL"), out.header("X-Cache")
    age = out.header("Age")
    if age is not None:
        assert age.isdigit(), age
    if etag is not None:
        assert out.header("ETag") == etag
    if last_modified is not None:
        assert out.header("Last-Modified") == last_modified


async def test_full_get_from_appserver_then_hit(appserver, proxy_factory, http) -> None:
    proxy = proxy_factory(appserver.url)
    src = appserver.path("big.bin").read_bytes()
    direct = await fetch(http, appserver.url_for("big.bin"), method="HEAD")

    first = await fetch(http, proxy.url_for("big.bin"))
    assert first.status == 200 and first.complete
    assert first.body == src
    assert int(first.header("Content-Length")) == len(src)
    assert_proxy_headers(first, etag=direct.header("ETag"), last_modified=direct.header("Last-Modified"))
    assert first.header("X-Cache") == "MISS"

    second = await fetch(http, proxy.url_for("big.bin"))
    assert second.status == 200 and second.complete and second.body == src
    assert_proxy_headers(second, etag=direct.header("ETag"), last_modified=direct.header("Last-Modified"))
    assert second.header("X-Cache") == "HIT"
    assert second.header("Age") is not None and int(second.header("Age")) >= 0


ODD = 3 * 2**20 + 123


@pytest.mark.parametrize(
    "spec, first, last",
    [
        ("0-0", 0, 0),
        ("20-345", 20, 345),
        (f"{S - 1}-{S}", S - 1, S),  # across a slice boundary
        (f"{S}-{3 * S - 1}", S, 3 * S - 1),  # exactly two slices
        (f"{ODD - 1}-{ODD - 1}", ODD - 1, ODD - 1),  # the last byte (partial last slice)
        ("-500", ODD - 500, ODD - 1),  # suffix
        (f"{ODD - 200}-", ODD - 200, ODD - 1),  # open-ended
        ("1000-99999999", 1000, ODD - 1),  # clipped to the end
        ("-99999999", 0, ODD - 1),  # suffix longer than the object
    ],
)
async def test_single_range_from_appserver(appserver, proxy_factory, http, spec, first, last) -> None:
    proxy = proxy_factory(appserver.url)
    src = appserver.path("odd.bin").read_bytes()
    assert len(src) == ODD
    for attempt in ("cold", "warm"):
        out = await fetch(http, proxy.url_for("odd.bin"), headers={"Range": f"bytes={spec}"})
        assert out.status == 206, (attempt, out.status, out.body[:200])
        assert out.complete, (attempt, out.error)
        assert content_range(out.header("Content-Range")) == (first, last, ODD), attempt
        assert int(out.header("Content-Length")) == last - first + 1
        assert out.body == src[first:last + 1], attempt
        assert_proxy_headers(out)
    assert out.header("X-Cache") == "HIT"


async def test_x_cache_miss_hit_partial(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = seeded_bytes(4 * S + 10, 11)
    fault_origin.set_object("xc.bin", data)
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)  # exact fetch counts
    url = proxy.url_for("xc.bin")
    one = {"Range": f"bytes={S}-{2 * S - 1}"}
    three = {"Range": f"bytes=0-{3 * S - 1}"}

    def upstream(name: str) -> list:
        return [(r.range, r.status) for r in fault_origin.gets_for(name)]

    out = await fetch(http, url, headers=one)
    assert (out.status, out.header("X-Cache")) == (206, "MISS"), upstream("xc.bin")
    assert out.body == data[S:2 * S]
    out = await fetch(http, url, headers=one)
    assert (out.status, out.header("X-Cache")) == (206, "HIT"), upstream("xc.bin")
    assert out.body == data[S:2 * S]
    out = await fetch(http, url, headers=three)
    assert (out.status, out.header("X-Cache")) == (206, "PARTIAL"), upstream("xc.bin")
    assert out.body == data[:3 * S]
    out = await fetch(http, url, headers=three)
    assert (out.status, out.header("X-Cache")) == (206, "HIT"), upstream("xc.bin")
    assert out.body == data[:3 * S]
    out = await fetch(http, url)
    assert (out.status, out.header("X-Cache")) == (200, "PARTIAL"), upstream("xc.bin")
    assert out.body == data
    out = await fetch(http, url)
    assert (out.status, out.header("X-Cache")) == (200, "HIT"), upstream("xc.bin")
    assert out.body == data
    assert fault_origin.count_slice_fetches("xc.bin", S) == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1}


@pytest.mark.parametrize("warm", [False, True])
async def test_multipart_byteranges(appserver, proxy_factory, http, warm) -> None:
    proxy = proxy_factory(appserver.url)
    src = appserver.path("odd.bin").read_bytes()
    url = proxy.url_for("odd.bin")
    if warm:
        assert (await fetch(http, url)).body == src
    spans = [(0, 9), (S - 5, S + 4), (2 * 2**20, 2 * 2**20 + 99), (ODD - 10, ODD - 1)]
    header = "bytes=" + ", ".join(f"{a}-{b}" for a, b in spans[:-1]) + ", -10"
    out = await fetch(http, url, headers={"Range": header})
    assert out.status == 206 and out.complete, (out.status, out.error)
    assert int(out.header("Content-Length")) == len(out.body)
    ctype = out.header("Content-Type")
    assert ctype.startswith("multipart/byteranges"), ctype
    parts = parse_multipart_byteranges(ctype, out.body)
    assert len(parts) == len(spans)
    for (h, body), (a, b) in zip(parts, spans):
        assert content_range(h.get("content-range")) == (a, b, ODD)
        assert body == src[a:b + 1]
        assert "content-type" in h
    assert out.header("Accept-Ranges") == "bytes"


async def test_unsatisfiable_range_is_416(appserver, proxy_factory, http) -> None:
    proxy = proxy_factory(appserver.url)
    size = appserver.path("odd.bin").stat().st_size
    for attempt in ("cold", "warm"):
        out = await fetch(http, proxy.url_for("odd.bin"), headers={"Range": f"bytes={size}-"})
        assert out.status == 416, attempt
        assert out.header("Content-Range") == f"bytes */{size}", attempt
        out = await fetch(http, proxy.url_for("odd.bin"), headers={"Range": f"bytes={size + 10}-{size + 20}"})
        assert out.status == 416, attempt
        assert out.header("Content-Range") == f"bytes */{size}", attempt
    # and the object is still served fine afterwards
    out = await fetch(http, proxy.url_for("odd.bin"), headers={"Range": "bytes=0-99"})
    assert out.status == 206 and out.body == appserver.path("odd.bin").read_bytes()[:100]


async def test_range_query_form_is_a_range_and_never_forwarded(fault_origin: FaultOrigin, proxy_factory,
                                                               http) -> None:
    data = seeded_bytes(3 * S + 7, 12)
    fault_origin.set_object("q.bin", data)
    proxy = proxy_factory(fault_origin.url)

    out = await fetch(http, proxy.url_for("q.bin") + "?range=100-199")
    assert out.status == 206 and out.body == data[100:200]
    assert content_range(out.header("Content-Range")) == (100, 199, len(data))

    out = await fetch(http, proxy.url_for("q.bin") + f"?x=1&range={S - 10}-{S + 9}")
    assert out.status == 206 and out.body == data[S - 10:S + 10]

    out = await fetch(http, proxy.url_for("q.bin") + f"?range={2 * S}-")
    assert out.status == 206 and out.body == data[2 * S:]

    reqs = fault_origin.requests_for("q.bin")
    assert reqs, "the origin saw nothing"
    for r in reqs:
        assert "range=" not in r.query.lower(), r
        assert "range=" not in r.path.lower(), r
    assert any("x=1" in r.query for r in reqs), [r.query for r in reqs]


async def test_if_range(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = seeded_bytes(2 * S + 3, 13)
    fault_origin.set_object("ir.bin", data)
    proxy = proxy_factory(fault_origin.url)
    url = proxy.url_for("ir.bin")
    etag = fault_origin.get_object("ir.bin").etag

    for attempt in ("cold", "warm"):
        out = await fetch(http, url, headers={"Range": "bytes=5-9", "If-Range": etag})
        assert out.status == 206 and out.body == data[5:10], attempt
        out = await fetch(http, url, headers={"Range": "bytes=5-9", "If-Range": '"some-other-tag"'})
        assert out.status == 200 and out.body == data, attempt
        out = await fetch(http, url, headers={"Range": "bytes=5-9", "If-Range": "W/" + etag})
        assert out.status == 200 and out.body == data, attempt  # weak never matches


async def test_conditional_requests_304(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = seeded_bytes(S + 3, 14)
    fault_origin.set_object("c.bin", data)
    proxy = proxy_factory(fault_origin.url)
    url = proxy.url_for("c.bin")
    first = await fetch(http, url)
    assert first.status == 200 and first.body == data
    etag, lm = first.header("ETag"), first.header("Last-Modified")
    assert etag == fault_origin.get_object("c.bin").etag
    assert lm

    out = await fetch(http, url, headers={"If-None-Match": etag})
    assert out.status == 304 and out.body == b""
    assert out.header("ETag") == etag
    out = await fetch(http, url, headers={"If-None-Match": f'"nope", {etag}'})
    assert out.status == 304
    out = await fetch(http, url, headers={"If-None-Match": "*"})
    assert out.status == 304
    out = await fetch(http, url, headers={"If-None-Match": '"nope"'})
    assert out.status == 200 and out.body == data

    out = await fetch(http, url, headers={"If-Modified-Since": lm})
    assert out.status == 304 and out.body == b""
    ts = email.utils.parsedate_to_datetime(lm).timestamp()
    older = email.utils.formatdate(ts - 3600, usegmt=True)
    out = await fetch(http, url, headers={"If-Modified-Since": older})
    assert out.status == 200 and out.body == data
    out = await fetch(http, url, headers={"If-Modified-Since": older, "Range": "bytes=0-9"})
    assert out.status == 206 and out.body == data[:10]


async def test_head(appserver, proxy_factory, http) -> None:
    proxy = proxy_factory(appserver.url)
    size = appserver.path("odd.bin").stat().st_size
    direct = await fetch(http, appserver.url_for("odd.bin"), method="HEAD")
    for attempt in ("cold", "warm"):
        out = await fetch(http, proxy.url_for("odd.bin"), method="HEAD")
        assert out.status == 200, attempt
        assert out.body == b""
        assert int(out.header("Content-Length")) == size
        assert out.header("ETag") == direct.header("ETag")
        assert out.header("Accept-Ranges") == "bytes"
    # a GET after the HEAD still serves the whole, right body
    out = await fetch(http, proxy.url_for("odd.bin"))
    assert out.status == 200 and out.body == appserver.path("odd.bin").read_bytes()


async def test_content_type_and_validators_come_from_the_origin(fault_origin: FaultOrigin, proxy_factory,
                                                                http) -> None:
    data = seeded_bytes(S // 2, 15)
    fault_origin.set_object("v.mp4", data, content_type="video/mp4")
    proxy = proxy_factory(fault_origin.url)
    obj = fault_origin.get_object("v.mp4")
    direct = await fetch(http, fault_origin.url_for("v.mp4"), method="HEAD")
    for hdrs in ({}, {"Range": "bytes=1-2"}):
        out = await fetch(http, proxy.url_for("v.mp4"), headers=hdrs)
        assert out.header("Content-Type") == "video/mp4"
        assert_proxy_headers(out, etag=obj.etag, last_modified=direct.header("Last-Modified"))


async def test_host_header_never_chooses_the_upstream(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = seeded_bytes(1000, 16)
    fault_origin.set_object("h.bin", data)
    proxy = proxy_factory(fault_origin.url)
    out = await fetch(http, proxy.url_for("h.bin"), headers={"Host": "evil.example:1"})
    assert out.status == 200 and out.body == data
    out = await fetch(http, proxy.url_for("h.bin"), headers={"Host": "127.0.0.1:1", "Range": "bytes=1-3"})
    assert out.status == 206 and out.body == data[1:4]
    assert fault_origin.requests_for("h.bin"), "the request did not reach the configured upstream"


async def test_absolute_form_request_target_is_refused(fault_origin: FaultOrigin, proxy_factory) -> None:
    fault_origin.set_object("x", b"0123456789")
    proxy = proxy_factory(fault_origin.url)
    for target in (f"http://evil.example/x", f"{fault_origin.url}/x", "https://evil.example/x"):
        raw = await send_raw(
            proxy.port, f"GET {target} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n".encode()
        )
        status_line = raw.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.1 400") or status_line.startswith(b"HTTP/1.0 400"), (target, raw[:300])
    assert fault_origin.requests_for("x") == []
    # the normal origin-form still works on a raw connection
    raw = await send_raw(proxy.port, b"GET /x HTTP/1.1\r\nHost: whatever\r\nConnection: close\r\n\r\n")
    assert raw.split(b"\r\n", 1)[0].split()[1] == b"200"
    assert raw.endswith(b"0123456789")


async def test_path_and_query_are_forwarded(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = seeded_bytes(5000, 17)
    fault_origin.set_object("dir/sub/o.bin", data)
    proxy = proxy_factory(fault_origin.url)
    out = await fetch(http, proxy.url_for("dir/sub/o.bin") + "?a=1&b=two")
    assert out.status == 200 and out.body == data
    reqs = fault_origin.requests_for("dir/sub/o.bin")
    assert reqs and all(r.path == "/dir/sub/o.bin" for r in reqs)
    assert all(r.query == "a=1&b=two" for r in reqs), [r.query for r in reqs]
    assert (await fetch(http, proxy.url_for("dir/sub/missing.bin"))).status == 404


async def test_empty_object(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    fault_origin.set_object("empty.bin", b"")
    proxy = proxy_factory(fault_origin.url)
    url = proxy.url_for("empty.bin")
    for attempt in ("cold", "warm"):
        out = await fetch(http, url)
        assert out.status == 200 and out.body == b"" and out.header("Content-Length") == "0", (attempt, out.status)
        out = await fetch(http, url, headers={"Range": "bytes=0-10"})
        # nothing is satisfiable in an empty representation: 416, or the Range ignored (200, empty)
        if out.status == 416:
            assert out.header("Content-Range") == "bytes */0", attempt
        else:
            assert out.status == 200 and out.body == b"", (attempt, out.status)
        out = await fetch(http, url, method="HEAD")
        assert out.status == 200 and out.header("Content-Length") == "0"


async def test_one_byte_and_exact_slice_objects(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    one, exact = b"Z", seeded_bytes(2 * S, 18)
    fault_origin.set_object("one.bin", one)
    fault_origin.set_object("exact.bin", exact)
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)  # exact fetch counts
    out = await fetch(http, proxy.url_for("one.bin"), headers={"Range": "bytes=0-"})
    assert out.status == 206 and out.body == one and out.header("Content-Range") == "bytes 0-0/1"
    assert (await fetch(http, proxy.url_for("one.bin"))).body == one
    out = await fetch(http, proxy.url_for("exact.bin"), headers={"Range": f"bytes={S}-"})
    assert out.status == 206 and out.body == exact[S:]
    for r in fault_origin.gets_for("exact.bin"):  # aligned (the size was not known yet: no clipping needed)
        a, b = (int(x) for x in r.range.split("=")[1].split("-"))
        assert a % S == 0 and (b + 1) % S == 0, r.range
    assert fault_origin.count_slice_fetches("exact.bin", S) == {1: 1}
    out = await fetch(http, proxy.url_for("exact.bin"), headers={"Range": f"bytes={2 * S}-"})
    assert out.status == 416 and out.header("Content-Range") == f"bytes */{2 * S}"
    assert (await fetch(http, proxy.url_for("exact.bin"))).body == exact


async def test_age_grows_on_hits(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    import asyncio

    data = seeded_bytes(100, 19)
    fault_origin.set_object("age.bin", data, cache_control="max-age=600")
    proxy = proxy_factory(fault_origin.url)
    url = proxy.url_for("age.bin")
    assert (await fetch(http, url)).body == data
    await asyncio.sleep(1.6)
    out = await fetch(http, url)
    assert out.body == data and out.header("X-Cache") == "HIT"
    assert int(out.header("Age")) >= 1


async def test_many_random_ranges_concurrently(appserver, proxy_factory, http) -> None:
    import asyncio
    import random

    proxy = proxy_factory(appserver.url)
    src = appserver.path("big.bin").read_bytes()
    rnd = random.Random(4242)
    reqs = []
    for _ in range(60):
        a = rnd.randrange(len(src))
        b = min(len(src) - 1, a + rnd.choice([0, 1, 100, S - 1, S, 3 * S + 7, 2**20]))
        reqs.append((a, b))
    outs = await asyncio.gather(
        *(fetch(http, proxy.url_for("big.bin"), headers={"Range": f"bytes={a}-{b}"}) for a, b in reqs)
    )
    for out, (a, b) in zip(outs, reqs):
        assert out.status == 206 and out.complete, (a, b, out.status, out.error)
        assert content_range(out.header("Content-Range")) == (a, b, len(src))
        assert out.body == src[a:b + 1], (a, b)
