"""What the client's cache directives and preconditions get (RFC 9111 §5.2.1, RFC 9110 §13)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.support.client import fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.servers import DEFAULT_SLICE

pytestmark = pytest.mark.integration

S = DEFAULT_SLICE


async def test_no_cache_and_max_age_0_revalidate_a_fresh_object(fault_origin: FaultOrigin, proxy_factory,
                                                                 http: aiohttp.ClientSession) -> None:
    data = seeded_bytes(S, 81)
    fault_origin.set_object("a.bin", data, cache_control="max-age=600")
    proxy = proxy_factory(fault_origin.url)
    url = proxy.url_for("a.bin")
    assert (await fetch(http, url)).body == data
    assert (await fetch(http, url)).body == data  # fresh: the origin is not asked
    asked = len(fault_origin.requests_for("a.bin"))
    for directive in ({"Cache-Control": "no-cache"}, {"Cache-Control": "max-age=0"}, {"Pragma": "no-cache"}):
        out = await fetch(http, url, headers=directive)
        assert out.status == 200 and out.body == data
        conditional = fault_origin.requests_for("a.bin")[asked:]
        assert len(conditional) == 1 and conditional[0].if_none_match is not None, directive  # one revalidation
        asked += 1


async def test_only_if_cached_answers_504_unless_the_cache_holds_the_bytes(
        fault_origin: FaultOrigin, proxy_factory, http: aiohttp.ClientSession) -> None:
    data = seeded_bytes(4 * S, 82)
    fault_origin.set_object("b.bin", data, cache_control="max-age=600")
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)
    url = proxy.url_for("b.bin")
    only = {"Cache-Control": "only-if-cached"}
    out = await fetch(http, url, headers=only)
    assert out.status == 504 and fault_origin.requests_for("b.bin") == []  # never asked the origin
    assert (await fetch(http, url, headers={"Range": f"bytes=0-{S - 1}"})).body == data[:S]
    asked = len(fault_origin.requests_for("b.bin"))
    hit = await fetch(http, url, headers={**only, "Range": "bytes=10-99"})
    assert hit.status == 206 and hit.body == data[10:100]
    cold = await fetch(http, url, headers={**only, "Range": f"bytes={2 * S}-{2 * S + 9}"})  # slice 2 not cached
    assert cold.status == 504
    assert len(fault_origin.requests_for("b.bin")) == asked


async def test_failed_if_match_and_if_unmodified_since_answer_412(fault_origin: FaultOrigin, proxy_factory,
                                                                   http: aiohttp.ClientSession) -> None:
    data = seeded_bytes(S, 83)
    fault_origin.set_object("c.bin", data, cache_control="max-age=600")
    proxy = proxy_factory(fault_origin.url)
    url = proxy.url_for("c.bin")
    first = await fetch(http, url)
    etag, lm = first.header("ETag"), first.header("Last-Modified")
    assert (await fetch(http, url, headers={"If-Match": etag})).status == 200
    assert (await fetch(http, url, headers={"If-Match": '"someone-else"'})).status == 412
    assert (await fetch(http, url, headers={"If-Unmodified-Since": lm})).status == 200
    assert (await fetch(http, url, headers={"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})).status == 412
    assert (await fetch(http, url, headers={"If-None-Match": etag, "Range": "bytes=0-9"})).status == 304


async def test_a_clients_max_age_revalidates_an_answer_older_than_it_asks(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    """RFC 9111 §5.2.1.1: max-age=N wants an answer at most N seconds old."""
    data = seeded_bytes(S, 93)
    fault_origin.set_object("old.bin", data, cache_control="max-age=600")
    proxy = proxy_factory(fault_origin.url)
    url = proxy.url_for("old.bin")
    assert (await fetch(http, url)).body == data
    await asyncio.sleep(2.1)  # now two seconds old
    out = await fetch(http, url, headers={"Cache-Control": "max-age=100"})
    assert out.body == data and out.header("X-Cache") == "HIT" and len(fault_origin.gets_for("old.bin")) == 1
    out = await fetch(http, url, headers={"Cache-Control": "max-age=1"})
    assert out.status == 200 and out.body == data
    gets = fault_origin.gets_for("old.bin")
    assert len(gets) == 2 and gets[1].if_none_match is not None  # asked the origin first, conditionally
    assert int(out.header("Age")) < 2  # and the answer is as young as it asked
