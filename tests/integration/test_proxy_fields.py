"""The origin's header fields reach clients as RFC 9111 says: stored with the object and
replayed on every answer from the cache (200, 206, multipart, HEAD, 304), Via appended,
Cache-Status beside X-Cache; encodings kept; errors passed through whole; targets byte for byte."""

from __future__ import annotations

import asyncio
import gzip

import aiohttp
import pytest
from yarl import URL

from tests.support.client import fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.servers import DEFAULT_SLICE

pytestmark = pytest.mark.integration

S = DEFAULT_SLICE
ORIGIN_FIELDS = [
    ("Access-Control-Allow-Origin", "https://player.example"),
    ("Access-Control-Expose-Headers", "Content-Range, Content-Length, Accept-Ranges"),
    ("Timing-Allow-Origin", "*"),
    ("Content-Disposition", 'attachment; filename="movie.mp4"'),
    ("Content-Language", "en"),
    ("Link", "<https://cdn.example/a.vtt>; rel=preload"),
    ("Link", "<https://cdn.example/b.vtt>; rel=preload"),
    ("X-Custom", "kept"),
    ("Expires", "Wed, 21 Oct 2099 07:28:00 GMT"),
    ("Via", "1.1 origin-edge"),
]


def _check_replayed(out: object) -> None:
    h = out.headers  # type: ignore[attr-defined]
    for name, value in ORIGIN_FIELDS:
        if name in ("Link", "Via"):
            continue
        assert h.get(name) == value, (name, h.get(name))
    assert h.getall("Link") == ["<https://cdn.example/a.vtt>; rel=preload", "<https://cdn.example/b.vtt>; rel=preload"]
    assert h.get("Cache-Control") == "max-age=600"
    assert h.get("Via") == "1.1 origin-edge, 1.1 rangeproxy"  # RFC 9110 §7.6.3: appended, not replaced


async def test_origin_fields_are_replayed_on_miss_hit_range_multipart_and_head(
        fault_origin: FaultOrigin, proxy_factory, http: aiohttp.ClientSession) -> None:
    data = seeded_bytes(3 * S + 7, 71)
    fault_origin.set_object("movie.mp4", data, cache_control="max-age=600", content_type="video/mp4",
                            headers=ORIGIN_FIELDS)
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)
    url = proxy.url_for("movie.mp4")

    miss = await fetch(http, url, headers={"Range": f"bytes=10-{S + 20}"})
    assert miss.status == 206 and miss.body == data[10:S + 21]
    _check_replayed(miss)
    assert miss.header("Cache-Status", ).startswith("rangeproxy; fwd=")
    assert miss.header("Content-Type") == "video/mp4"

    whole = await fetch(http, url)
    assert whole.status == 200 and whole.body == data
    _check_replayed(whole)

    hit = await fetch(http, url, headers={"Range": "bytes=10-20"})
    assert hit.status == 206 and hit.body == data[10:21] and hit.header("X-Cache") == "HIT"
    assert hit.header("Cache-Status").startswith("rangeproxy; hit")
    _check_replayed(hit)

    multi = await fetch(http, url, headers={"Range": "bytes=0-9,500-509"})
    assert multi.status == 206 and multi.header("Content-Type").startswith("multipart/byteranges")
    _check_replayed(multi)
    assert b"Content-Type: video/mp4" in multi.body and data[500:510] in multi.body

    head = await fetch(http, url, method="HEAD")
    assert head.status == 200 and head.body == b""
    _check_replayed(head)


async def test_a_304_carries_the_fields_rfc9110_lists(fault_origin: FaultOrigin, proxy_factory,
                                                      http: aiohttp.ClientSession) -> None:
    data = seeded_bytes(S, 72)
    fault_origin.set_object("a.bin", data, cache_control="max-age=600",
                            headers=[("Vary", "Accept-Encoding"), ("X-Custom", "not in a 304")])
    proxy = proxy_factory(fault_origin.url)
    url = proxy.url_for("a.bin")
    first = await fetch(http, url)
    out = await fetch(http, url, headers={"If-None-Match": first.header("ETag")})
    assert out.status == 304
    assert out.header("ETag") == first.header("ETag")
    assert out.header("Cache-Control") == "max-age=600" and out.header("Vary") == "Accept-Encoding"
    assert out.header("X-Custom") is None  # RFC 9110 §15.4.5: only the listed fields


async def test_a_revalidation_304_freshens_the_stored_fields(fault_origin: FaultOrigin, proxy_factory,
                                                             http: aiohttp.ClientSession) -> None:
    data = seeded_bytes(S, 73)
    fault_origin.set_object("a.bin", data, cache_control="max-age=0", headers=[("X-Release", "1")])
    proxy = proxy_factory(fault_origin.url)
    url = proxy.url_for("a.bin")
    assert (await fetch(http, url)).header("X-Release") == "1"
    fault_origin.set_object("a.bin", data, cache_control="max-age=0", headers=[("X-Release", "2")])  # same bytes
    out = await fetch(http, url)  # stale: revalidated with If-None-Match, answered 304
    assert out.status == 200 and out.body == data
    assert any(r.status == 304 for r in fault_origin.requests_for("a.bin"))
    assert out.header("X-Release") == "2"  # RFC 9111 §3.2: the 304's fields replace the stored ones


async def test_a_precompressed_file_keeps_its_content_encoding(fault_origin: FaultOrigin, proxy_factory,
                                                               http: aiohttp.ClientSession) -> None:
    text = b"".join(b"line %d of a log file that compresses well\n" % i for i in range(20000))
    gz = gzip.compress(text, mtime=0)
    fault_origin.set_object("log.txt", gz, content_type="text/plain",
                            headers=[("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")])
    proxy = proxy_factory(fault_origin.url)
    url = proxy.url_for("log.txt")
    for _ in range(2):  # miss, then hit
        out = await fetch(http, url)
        assert out.status == 200 and out.header("Content-Encoding") == "gzip"
        assert out.body == gz and gzip.decompress(out.body) == text
    # RFC 9110 §14.1.2: a range of an encoded representation is a range of the encoded bytes.
    part = await fetch(http, url, headers={"Range": "bytes=100-199"})
    assert part.status == 206 and part.body == gz[100:200] and part.header("Content-Encoding") == "gzip"
    multi = await fetch(http, url, headers={"Range": "bytes=0-9,1000-1009"})
    assert multi.status == 206 and multi.header("Content-Encoding") is None  # the multipart body is not gzip
    assert multi.body.count(b"Content-Encoding: gzip\r\n") == 2  # each part says what its bytes are


async def test_the_target_reaches_the_origin_byte_for_byte(fault_origin: FaultOrigin, proxy_factory,
                                                           http: aiohttp.ClientSession) -> None:
    data = seeded_bytes(1000, 74)
    fault_origin.set_object("signed.bin", data)
    proxy = proxy_factory(fault_origin.url)
    target = "/signed.bin?sig=ab%2Fcd%2B%3D&Expires=1&range=0-9"
    out = await fetch(http, URL(proxy.url + target, encoded=True))  # yarl would decode %2F itself
    assert out.status == 206 and out.body == data[:10]
    got = [r.raw_path for r in fault_origin.requests_for("signed.bin")]
    assert got and all(p == "/signed.bin?sig=ab%2Fcd%2B%3D&Expires=1" for p in got), got  # ?range= is ours


async def test_an_origin_error_passes_through_with_its_fields_and_whole_body(
        fault_origin: FaultOrigin, proxy_factory, http: aiohttp.ClientSession) -> None:
    body = seeded_bytes(200 * 1024, 75)  # more than the 64 KiB that used to be kept
    fault_origin.set_object("down.bin", b"x" * 100, fail_status=503, fail_body=body,
                            headers=[("Retry-After", "7"), ("X-Error-Id", "e-1"), ("Content-Language", "en")])
    proxy = proxy_factory(fault_origin.url)
    out = await fetch(http, proxy.url_for("down.bin"))
    assert out.status == 503 and out.complete and out.body == body
    assert out.header("Retry-After") == "7" and out.header("X-Error-Id") == "e-1"
    assert out.header("Content-Language") == "en" and out.header("Via") == "1.1 rangeproxy"


async def test_an_error_body_too_long_to_keep_is_cut_not_ended_cleanly(
        fault_origin: FaultOrigin, proxy_factory, http: aiohttp.ClientSession) -> None:
    body = seeded_bytes(1024 * 1024 + 100, 76)
    fault_origin.set_object("huge-error.bin", b"x", fail_status=500, fail_body=body)
    proxy = proxy_factory(fault_origin.url)
    out = await fetch(http, proxy.url_for("huge-error.bin"))
    assert out.status == 500 and not out.complete
    assert out.body == body[:len(out.body)]  # what came is right, and it is not presented as all


async def test_a_cookie_goes_to_the_client_that_caused_it_and_the_answer_is_not_shared(
        fault_origin: FaultOrigin, proxy_factory, http: aiohttp.ClientSession) -> None:
    data = seeded_bytes(2 * S, 77)
    fault_origin.set_object("me.bin", data, cache_control="max-age=600",
                            headers=[("Set-Cookie", "session=ann; HttpOnly"), ("Set-Cookie", "tier=gold")])
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)
    url = proxy.url_for("me.bin")
    first = await fetch(http, url, headers={"Range": "bytes=0-99"})
    assert first.status == 206 and first.body == data[:100]
    assert first.headers.getall("Set-Cookie") == ["session=ann; HttpOnly", "tier=gold"]
    asked = len(fault_origin.gets_for("me.bin"))
    # Not stored (RFC 9111 §7.4 as this proxy applies it): the next requests, at once or
    # later, are each answered by the origin itself, cookies and all, never from the first.
    others = await asyncio.gather(*(fetch(http, url, headers={"Range": "bytes=0-99", "Cookie": f"n={n}"})
                                    for n in range(3)))
    for other in others:
        assert other.status == 206 and other.body == data[:100] and other.header("X-Cache") is None
    gets = fault_origin.gets_for("me.bin")[asked:]
    assert sorted(r.headers.get("Cookie", "") for r in gets) == ["n=0", "n=1", "n=2"]
    assert all(r.range == "bytes=0-99" for r in gets)  # each client's own request


async def test_age_counts_the_age_the_origin_gave(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    """RFC 9111 §4.2.3: an answer that arrives 100 s old is at least 100 s old from the cache;
    its freshness lifetime is used up by as much."""
    fault_origin.set_object("aged.bin", seeded_bytes(S, 68), cache_control="max-age=3600", headers=[("Age", "100")])
    proxy = proxy_factory(fault_origin.url)
    first = await fetch(http, proxy.url_for("aged.bin"))
    second = await fetch(http, proxy.url_for("aged.bin"))
    assert second.header("X-Cache") == "HIT" and len(fault_origin.gets_for("aged.bin")) == 1
    for out in (first, second):
        assert 100 <= int(out.header("Age")) < 110 and out.headers.getall("Age") == [out.header("Age")]


async def test_a_redirect_or_a_404_is_stored_only_as_long_as_its_freshness_says(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    """RFC 9111 §3, §4.2: stored whole, status, fields and body; reused while fresh, then asked again."""
    fault_origin.set_object("moved", b"", fail_status=301, fail_body=b"see elsewhere\n",
                            headers=[("Location", "/there"), ("Cache-Control", "max-age=1")])
    fault_origin.set_object("nope", b"", fail_status=404, fail_body=b"no such thing\n")  # no freshness
    proxy = proxy_factory(fault_origin.url, negative_ttl=0)  # (else a 404 without freshness is kept for it)
    for _ in range(3):
        out = await fetch(http, proxy.url_for("moved"))
        assert out.status == 301 and out.header("Location") == "/there" and out.body == b"see elsewhere\n"
    assert len(fault_origin.gets_for("moved")) == 1 and out.header("X-Cache") == "HIT"
    head = await fetch(http, proxy.url_for("moved"), method="HEAD")
    assert head.status == 301 and head.body == b"" and head.header("Location") == "/there"
    assert head.header("Content-Length") == str(len(b"see elsewhere\n"))
    await asyncio.sleep(1.2)  # its max-age=1 is over
    out = await fetch(http, proxy.url_for("moved"))
    assert out.status == 301 and len(fault_origin.gets_for("moved")) == 2
    for _ in range(2):  # nothing said about freshness: never reused
        out = await fetch(http, proxy.url_for("nope"))
        assert out.status == 404 and out.body == b"no such thing\n"
    assert len(fault_origin.gets_for("nope")) == 2
