"""Self-tests of the proxy test harness (no proxy involved): the fault origin
really injects the faults the proxy tests rely on, and the helpers parse what
they claim to. A proxy test failing while these pass points at the proxy."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import urllib.error
import urllib.request

import pytest

from tests.support.client import content_range, fetch, parse_multipart_byteranges
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin, parse_single_range

pytestmark = pytest.mark.integration

S = 64 * 1024
DATA = seeded_bytes(3 * S + 100, 7)


def test_parse_single_range() -> None:
    assert parse_single_range("bytes=0-9", 100) == (0, 9)
    assert parse_single_range("bytes=90-200", 100) == (90, 99)
    assert parse_single_range("bytes=-10", 100) == (90, 99)
    assert parse_single_range("bytes=95-", 100) == (95, 99)
    assert parse_single_range("bytes=100-", 100) == (100, -1)
    assert parse_single_range("bytes=0-1,5-6", 100) is None
    assert parse_single_range("bytes=5-9") == (5, 9)


def test_parse_multipart() -> None:
    body = (
        b"--XyZ\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-2/10\r\n\r\nabc\r\n"
        b"--XyZ\r\nContent-Type: text/plain\r\nContent-Range: bytes 7-9/10\r\n\r\nhij\r\n--XyZ--\r\n"
    )
    parts = parse_multipart_byteranges("multipart/byteranges; boundary=XyZ", body)
    assert [(h["content-range"], b) for h, b in parts] == [("bytes 0-2/10", b"abc"), ("bytes 7-9/10", b"hij")]
    with pytest.raises(AssertionError):
        parse_multipart_byteranges("multipart/byteranges; boundary=XyZ", body[:-12])


async def test_fault_origin_serves_ranges_and_validators(fault_origin: FaultOrigin, http) -> None:
    fault_origin.set_object("a.bin", DATA, cache_control="max-age=5")
    url = fault_origin.url_for("a.bin")
    full = await fetch(http, url)
    assert full.status == 200 and full.body == DATA and full.complete
    assert full.header("ETag") == '"v1-a.bin"'
    assert full.header("Cache-Control") == "max-age=5"
    assert full.header("Accept-Ranges") == "bytes"
    r = await fetch(http, url, headers={"Range": "bytes=10-20"})
    assert r.status == 206 and r.body == DATA[10:21]
    assert content_range(r.header("Content-Range")) == (10, 20, len(DATA))
    assert (await fetch(http, url, headers={"Range": f"bytes={len(DATA)}-"})).header("Content-Range") == (
        f"bytes */{len(DATA)}"
    )
    assert (await fetch(http, url, headers={"If-None-Match": '"v1-a.bin"'})).status == 304
    lm = full.header("Last-Modified")
    assert (await fetch(http, url, headers={"If-Modified-Since": lm})).status == 304
    ir = await fetch(http, url, headers={"Range": "bytes=0-9", "If-Range": '"nope"'})
    assert ir.status == 200 and ir.body == DATA
    head = await fetch(http, url, method="HEAD")
    assert head.status == 200 and head.body == b"" and head.header("Content-Length") == str(len(DATA))
    # a new version: new ETag, newer Last-Modified
    fault_origin.set_object("a.bin", DATA[::-1])
    r2 = await fetch(http, url)
    assert r2.body == DATA[::-1] and r2.header("ETag") == '"v2-a.bin"'
    assert r2.header("Last-Modified") != lm
    assert (await fetch(http, fault_origin.url_for("nope"))).status == 404


async def test_fault_origin_faults(fault_origin: FaultOrigin, http) -> None:
    fault_origin.set_object("f.bin", DATA)
    url = fault_origin.url_for("f.bin")
    rng = {"Range": f"bytes={S}-{2 * S - 1}"}

    fault_origin.set_fault("f.bin", short_body=1000)
    r = await fetch(http, url, headers=rng)
    assert r.status == 206 and not r.complete and r.body == DATA[S:S + 1000]

    fault_origin.set_fault("f.bin", short_body=None, reset_after=2000)
    r = await fetch(http, url, headers=rng)
    assert r.status == 206 and not r.complete and len(r.body) <= 2000

    fault_origin.set_fault("f.bin", reset_after=None, shift_content_range=100)
    r = await fetch(http, url, headers=rng)
    assert r.status == 206 and r.complete
    assert content_range(r.header("Content-Range")) == (S + 100, 2 * S + 99, len(DATA))
    assert r.body == DATA[S + 100:2 * S + 100]

    fault_origin.set_fault("f.bin", shift_content_range=0, ignore_range=True)
    r = await fetch(http, url, headers=rng)
    assert r.status == 200 and r.body == DATA

    fault_origin.set_fault("f.bin", ignore_range=False, fail_status=503, fault_times=1)
    assert (await fetch(http, url, headers=rng)).status == 503
    r = await fetch(http, url, headers=rng)  # fault_times=1: cleared now
    assert r.status == 206 and r.body == DATA[S:2 * S]

    fault_origin.set_fault("f.bin", change_etag_every_request=True)
    e1 = (await fetch(http, url, headers=rng)).header("ETag")
    e2 = (await fetch(http, url, headers=rng)).header("ETag")
    assert e1 != e2

    fault_origin.set_fault("f.bin", change_etag_every_request=False, delay=0.3)
    t0 = time.monotonic()
    await fetch(http, url, headers=rng)
    assert time.monotonic() - t0 >= 0.3

    fault_origin.set_fault("f.bin", delay=0.0, chunk_size=8192, chunk_delay=0.02)
    t0 = time.monotonic()
    r = await fetch(http, url, headers=rng)
    assert r.body == DATA[S:2 * S] and time.monotonic() - t0 >= 0.1


async def test_fault_origin_counters(fault_origin: FaultOrigin, http) -> None:
    fault_origin.set_object("c.bin", DATA)
    url = fault_origin.url_for("c.bin")
    await fetch(http, url, headers={"Range": f"bytes=0-{2 * S - 1}"})
    await fetch(http, url, headers={"Range": f"bytes={S}-{len(DATA) - 1}"})
    await fetch(http, url + "?x=1")
    await fetch(http, url, method="HEAD")
    counts = fault_origin.count_slice_fetches("c.bin", S)
    assert counts == {0: 2, 1: 3, 2: 2, 3: 2}
    assert len(fault_origin.range_requests_for("c.bin")) == 2
    reqs = fault_origin.requests_for("c.bin")
    assert [tuple(r) for r in reqs][0] == ("GET", "/c.bin", f"bytes=0-{2 * S - 1}", None, 206)
    assert reqs[2].query == "x=1"
    fault_origin.reset_counters()
    assert fault_origin.requests_for("c.bin") == []


async def test_fault_origin_other_methods(fault_origin: FaultOrigin, http) -> None:
    url = fault_origin.url_for("m.bin")
    assert (await fetch(http, url, method="PUT", data=DATA)).status == 201
    assert fault_origin.get_object("m.bin").data == DATA
    r = await fetch(http, url, method="POST", data=b"hello")
    assert r.status == 200
    assert json.loads(r.body)["sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert (await fetch(http, url, method="OPTIONS")).header("Allow")
    assert (await fetch(http, url, method="DELETE")).status == 204
    assert (await fetch(http, url)).status == 404


async def test_fault_origin_streams_request_bodies(fault_origin: FaultOrigin, http) -> None:
    seen_early = False

    async def body():
        nonlocal seen_early
        yield b"x" * 65536
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not fault_origin.body_progress.get("s.bin"):
            await asyncio.sleep(0.01)
        seen_early = bool(fault_origin.body_progress.get("s.bin"))
        yield b"y" * 65536

    r = await fetch(http, fault_origin.url_for("s.bin"), method="POST", data=body())
    assert r.status == 200 and seen_early


async def test_appserver_fixture_serves_media(appserver, http) -> None:
    big = appserver.path("big.bin").read_bytes()
    assert len(big) == 8 * 2**20
    r = await fetch(http, appserver.url_for("big.bin"), headers={"Range": "bytes=100-199"})
    assert r.status == 206 and r.body == big[100:200]
    odd = appserver.path("odd.bin").read_bytes()
    assert len(odd) == 3 * 2**20 + 123
    r = await fetch(http, appserver.url_for("odd.bin"))
    assert r.status == 200 and r.body == odd


def test_fault_origin_usable_without_an_event_loop() -> None:
    with FaultOrigin() as o:
        o.set_object("x", b"0123456789")
        req = urllib.request.Request(o.url_for("x"), headers={"Range": "bytes=2-4"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 206 and r.read() == b"234"
        assert o.range_requests_for("x")[0].status == 206
    with pytest.raises(OSError):  # stopped: nothing listens any more
        urllib.request.urlopen(o.url_for("x"), timeout=2)
