"""Vary (RFC 9111 §4.1): a stored answer serves only requests that select the same variant;
variants are stored apart (slices included), bounded per URL, and Vary: * is never served."""

from __future__ import annotations

import aiohttp
import pytest

from tests.support.client import fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.servers import DEFAULT_SLICE

pytestmark = pytest.mark.integration

S = DEFAULT_SLICE


def origin(name: str) -> dict[str, str]:
    return {"Origin": f"https://{name}.example"}


async def test_each_variant_is_answered_with_its_own_fields_and_stored_apart(
        fault_origin: FaultOrigin, proxy_factory, http: aiohttp.ClientSession) -> None:
    data = seeded_bytes(3 * S, 71)
    fault_origin.set_object("v.bin", data, cache_control="max-age=600", vary="Origin")
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)
    url = proxy.url_for("v.bin")
    a = await fetch(http, url, headers=origin("a"))
    assert a.status == 200 and a.body == data and a.header("X-Variant") == "https://a.example"
    assert a.header("Vary") == "Origin"
    b = await fetch(http, url, headers=origin("b"))  # not a's answer
    assert b.status == 200 and b.body == data and b.header("X-Variant") == "https://b.example"
    none = await fetch(http, url, headers={"Range": f"bytes={S}-{S + 9}"})  # no Origin at all: a third
    assert none.status == 206 and none.body == data[S:S + 10] and none.header("X-Variant") == "-"
    asked = len(fault_origin.gets_for("v.bin"))
    for who in ("a", "b"):  # each from its own stored variant, whole and in ranges
        out = await fetch(http, url, headers={**origin(who), "Range": f"bytes=5-{2 * S}"})
        assert out.status == 206 and out.body == data[5:2 * S + 1]
        assert out.header("X-Variant") == f"https://{who}.example" and out.header("X-Cache") == "HIT"
    # Values that differ only in blanks around commas select the same variant.
    fault_origin.set_object("v2.bin", data, cache_control="max-age=600", vary="Accept-Language")
    url2 = proxy.url_for("v2.bin")
    first = await fetch(http, url2, headers={"Accept-Language": "fr, en"})
    again = await fetch(http, url2, headers={"Accept-Language": "fr,en"})
    assert first.header("X-Variant") == "fr, en" and again.header("X-Cache") == "HIT"
    assert len(fault_origin.gets_for("v.bin")) == asked


async def test_collapsed_requests_of_other_variants_get_their_own(fault_origin: FaultOrigin, proxy_factory,
                                                                  http: aiohttp.ClientSession) -> None:
    """Requests waiting on the first discovery of a URL that turns out to vary are not given
    the initiator's variant."""
    import asyncio

    data = seeded_bytes(2 * S, 72)
    fault_origin.set_object("c.bin", data, cache_control="max-age=600", vary="Origin", delay=0.3)
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)
    url = proxy.url_for("c.bin")
    outs = await asyncio.gather(*(fetch(http, url, headers=origin(w)) for w in ("a", "b", "a", "c")))
    for who, out in zip(("a", "b", "a", "c"), outs):
        assert out.status == 200 and out.body == data and out.header("X-Variant") == f"https://{who}.example"


async def test_vary_star_is_never_served_from_the_cache(fault_origin: FaultOrigin, proxy_factory,
                                                        http: aiohttp.ClientSession) -> None:
    data = seeded_bytes(2 * S, 73)
    fault_origin.set_object("s.bin", data, cache_control="max-age=600", vary="*")
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)
    url = proxy.url_for("s.bin")
    for _ in range(3):
        out = await fetch(http, url, headers={"Range": "bytes=3-30"})
        assert out.status == 206 and out.body == data[3:31]
    assert len(fault_origin.gets_for("s.bin")) == 3  # one upstream answer each: nothing reused
    assert not any(p.stat().st_size >= S for p in proxy.cache_dir.rglob("*.val"))


async def test_variants_beyond_max_variants_drop_the_least_recently_used(
        fault_origin: FaultOrigin, proxy_factory, http: aiohttp.ClientSession) -> None:
    data = seeded_bytes(S, 74)
    fault_origin.set_object("m.bin", data, cache_control="max-age=600", vary="Origin")
    proxy = proxy_factory(fault_origin.url, readahead_slices=0, max_variants=2)
    url = proxy.url_for("m.bin")
    for who in ("a", "b", "c"):  # c pushes a out
        assert (await fetch(http, url, headers=origin(who))).body == data
    asked = len(fault_origin.gets_for("m.bin"))
    out = await fetch(http, url, headers=origin("c"))
    assert out.header("X-Cache") == "HIT" and len(fault_origin.gets_for("m.bin")) == asked
    out = await fetch(http, url, headers=origin("a"))
    assert out.body == data and out.header("X-Variant") == "https://a.example" and out.header("X-Cache") == "MISS"
    assert len(fault_origin.gets_for("m.bin")) > asked


async def test_a_purge_drops_every_variant(fault_origin: FaultOrigin, proxy_factory,
                                           http: aiohttp.ClientSession) -> None:
    data = seeded_bytes(S, 75)
    fault_origin.set_object("p.bin", data, cache_control="max-age=600", vary="Origin")
    proxy = proxy_factory(fault_origin.url, readahead_slices=0, admin_token="t0k")
    url = proxy.url_for("p.bin")
    for who in ("a", "b"):
        assert (await fetch(http, url, headers=origin(who))).body == data
    out = await fetch(http, proxy.url_for("_cache/p.bin"), method="DELETE", headers={"Authorization": "Bearer t0k"})
    assert out.status in (200, 204), out.body
    asked = len(fault_origin.gets_for("p.bin"))
    for who in ("a", "b"):
        out = await fetch(http, url, headers=origin(who))
        assert out.body == data and out.header("X-Cache") == "MISS"
    assert len(fault_origin.gets_for("p.bin")) == asked + 2
