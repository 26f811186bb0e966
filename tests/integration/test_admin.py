"""The proxy's own paths: health, /stats, /stats.json, /metrics, and purge (DELETE /_cache/<path>).

Real proxy processes in front of the fault-injecting origin (which logs every
request it gets, so "the origin is asked again" is checked at the origin) or the
demo origin.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from tests.support.client import fetch
from tests.support.data import seeded_bytes

pytestmark = pytest.mark.integration

MiB = 2**20
S = MiB
TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def idle(http: aiohttp.ClientSession, base: str, headers: dict[str, str] | None = None,
               timeout: float = 5.0) -> None:
    """Wait until no slice is being fetched (slices reach the store in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with http.get(base + "/stats.json", headers=headers or {}) as r:
            s = await r.json()
        if s["gauges"]["slice_fetches_in_flight"] == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("slices still in flight")


# --- exact admin paths -------------------------------------------------------------------


async def test_admin_paths_are_exact_and_the_rest_is_proxied(fault_origin, proxy_factory, http) -> None:
    for name in ("stats", "statsfoo", "metrics2", "stats.jsonx"):
        fault_origin.set_object(name, f"origin's own {name}".encode())
    proxy = proxy_factory(fault_origin.url, slice_size=S)

    out = await fetch(http, proxy.url + "/healthz")
    assert out.status == 200 and out.header("Content-Type").startswith("application/json")
    assert out.header("Cache-Control") == "no-store"
    assert json.loads(out.body) == {"status": "ok", "cache": {"writable": True, "reason": None, "since": None}}
    out = await fetch(http, proxy.url + "/healthz", method="HEAD")
    assert out.status == 200 and out.body == b""

    page = await fetch(http, proxy.url + "/stats")
    assert page.status == 200 and page.header("Content-Type").startswith("text/html")
    assert b"<canvas" in page.body and b"rangeproxy" in page.body
    assert b"http://" not in page.body.replace(b"http://www.w3.org", b"")  # nothing loaded from elsewhere
    assert b"<script src" not in page.body and b"<link rel=\"stylesheet\"" not in page.body
    out = await fetch(http, proxy.url + "/stats.json")
    assert out.status == 200 and out.header("Content-Type").startswith("application/json")
    out = await fetch(http, proxy.url + "/metrics")
    assert out.status == 200 and b"rangeproxy_requests_total" in out.body

    # Near misses go to the origin.
    for name in ("statsfoo", "metrics2", "stats.jsonx"):
        out = await fetch(http, proxy.url + "/" + name)
        assert out.status == 200 and out.body == f"origin's own {name}".encode(), name
    out = await fetch(http, proxy.url + "/stats/")
    assert out.status == 404 and [r.path for r in fault_origin.requests_for("stats/")] == ["/stats/"]
    # The proxy's own /stats never reached the origin.
    assert fault_origin.requests_for("stats") == []
    assert fault_origin.requests_for("metrics") == [] and fault_origin.requests_for("stats.json") == []

    # Admin paths answer GET and HEAD only (a DELETE of /stats is not a purge, nor proxied).
    for path in ("/stats", "/stats.json", "/metrics", "/healthz"):
        out = await fetch(http, proxy.url + path, method="POST", data=b"x")
        assert out.status == 405 and "GET" in out.header("Allow"), path
    out = await fetch(http, proxy.url + "/_cache/statsfoo", method="PUT", data=b"x")
    assert out.status == 405 and out.header("Allow") == "GET, HEAD, DELETE"
    assert [r.method for r in fault_origin.requests if r.method not in ("GET", "HEAD")] == []


async def test_admin_paths_configurable(fault_origin, proxy_factory, http) -> None:
    for name in ("stats", "stats.json", "metrics"):
        fault_origin.set_object(name, f"origin's own {name}".encode())
    data = seeded_bytes(2 * S, 11)
    fault_origin.set_object("a.bin", data)
    # The origin answers /healthz itself, so the harness's health poll is proxied to it.
    proxy = proxy_factory(fault_origin.url, slice_size=S, admin_token=TOKEN, stats_path="/_rp/stats",
                          metrics_path="/_rp/metrics", health_path="/_rp/health", purge_prefix="/_rp/cache/")

    for name in ("stats", "stats.json", "metrics"):
        out = await fetch(http, proxy.url + "/" + name)
        assert out.status == 200 and out.body == f"origin's own {name}".encode(), name
    out = await fetch(http, proxy.url + "/_rp/health")
    assert out.status == 200 and json.loads(out.body)["status"] == "ok"
    out = await fetch(http, proxy.url + "/_rp/stats")
    assert out.status == 200 and b"/_rp/stats.json" in out.body and b"/_rp/cache/" in out.body
    out = await fetch(http, proxy.url + "/_rp/stats.json")
    assert out.status == 200
    out = await fetch(http, proxy.url + "/_rp/metrics")
    assert out.status == 200 and b"rangeproxy_purges_total 0.0" in out.body

    assert (await fetch(http, proxy.url_for("a.bin"))).body == data
    await idle(http, proxy.url + "/_rp")  # its stats are at /_rp/stats.json
    out = await fetch(http, proxy.url + "/_rp/cache/a.bin", method="DELETE", headers=AUTH)
    assert out.status == 200
    # The old prefix is an ordinary path now: the DELETE goes to the origin.
    out = await fetch(http, proxy.url + "/_cache/a.bin", method="DELETE", headers=AUTH)
    assert [r.path for r in fault_origin.requests if r.method == "DELETE"] == ["/_cache/a.bin"]


# --- purge: the token ---------------------------------------------------------------------


async def test_purge_refused_without_a_configured_token(fault_origin, proxy_factory, http) -> None:
    fault_origin.set_object("a.bin", seeded_bytes(S, 12))
    proxy = proxy_factory(fault_origin.url, slice_size=S)
    assert (await fetch(http, proxy.url_for("a.bin"))).status == 200
    for headers in ({}, {"Authorization": "Bearer anything"}):
        out = await fetch(http, proxy.url + "/_cache/a.bin", method="DELETE", headers=headers)
        assert out.status == 403 and b"no admin_token" in out.body
    assert [r.method for r in fault_origin.requests] == ["GET"]  # never forwarded
    out = await fetch(http, proxy.url + "/_cache/a.bin")  # the slice map is still there
    assert out.status == 200


async def test_purge_token_checked(fault_origin, proxy_factory, http) -> None:
    fault_origin.set_object("a.bin", seeded_bytes(S, 13))
    proxy = proxy_factory(fault_origin.url, slice_size=S, admin_token=TOKEN)
    assert (await fetch(http, proxy.url_for("a.bin"))).status == 200
    await idle(http, proxy.url)
    bad = ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
           {"Authorization": "Bearer"}, {"Authorization": f"Bearer {TOKEN}x"})
    for headers in bad:
        out = await fetch(http, proxy.url + "/_cache/a.bin", method="DELETE", headers=headers)
        assert out.status == 401, headers
        assert out.header("WWW-Authenticate").startswith("Bearer")
    out = await fetch(http, proxy.url + f"/_cache/a.bin?token={TOKEN}", method="DELETE")
    assert out.status == 401  # the query form is for the stats page only
    # Stats and metrics stay readable without a token by default.
    assert (await fetch(http, proxy.url + "/stats.json")).status == 200
    assert (await fetch(http, proxy.url + "/metrics")).status == 200
    assert (await fetch(http, proxy.url + "/stats")).status == 200
    out = await fetch(http, proxy.url + "/_cache/a.bin", method="DELETE", headers=AUTH)
    assert out.status == 200


# --- purge: what it does ----------------------------------------------------------------------


async def test_purge_drops_the_object_and_the_origin_is_asked_again(fault_origin, proxy_factory, http) -> None:
    data = seeded_bytes(4 * S + 17, 14)
    fault_origin.set_object("p.bin", data, cache_control="max-age=3600")
    fault_origin.set_object("other.bin", seeded_bytes(S, 15), cache_control="max-age=3600")
    proxy = proxy_factory(fault_origin.url, slice_size=S, admin_token=TOKEN, readahead_slices=0)
    url = proxy.url_for("p.bin")

    out = await fetch(http, url)
    assert out.status == 200 and out.body == data and out.header("X-Cache") == "MISS"
    assert (await fetch(http, proxy.url_for("other.bin"))).status == 200
    await idle(http, proxy.url)
    out = await fetch(http, url)
    assert out.body == data and out.header("X-Cache") == "HIT"
    gets = len(fault_origin.gets_for("p.bin"))

    sm = await fetch(http, proxy.url + "/_cache/p.bin")
    assert sm.status == 200
    m = json.loads(sm.body)
    assert m["in_cache"] is True and m["slices"] == 5 and m["cached"] == [[0, 5]] and m["length"] == len(data)

    out = await fetch(http, proxy.url + "/_cache/p.bin", method="DELETE", headers=AUTH)
    assert out.status == 200
    body = json.loads(out.body)
    assert body == {"purged": True, "path": "/p.bin", "url": fault_origin.url + "/p.bin", "was_cached": True,
                    "cached_slices_before": 5}
    assert len(fault_origin.gets_for("p.bin")) == gets  # a purge does not touch the origin

    out = await fetch(http, proxy.url + "/_cache/p.bin")
    assert out.status == 404 and json.loads(out.body)["in_cache"] is False
    s = await (await http.get(proxy.url + "/stats.json")).json()
    assert s["totals"]["purges"] == 1
    assert s["cache"]["objects"] == 1  # other.bin is untouched
    top = {o["path"]: o for o in s["top_objects"]}
    assert top["/p.bin"]["in_cache"] is False and top["/p.bin"]["cached_fraction"] == 0.0
    assert top["/other.bin"]["cached_fraction"] == 1.0
    metrics = (await fetch(http, proxy.url + "/metrics")).body.decode()
    assert "rangeproxy_purges_total 1.0" in metrics

    # The next request is a miss and goes to the origin again, for every slice.
    out = await fetch(http, url)
    assert out.status == 200 and out.body == data and out.header("X-Cache") == "MISS"
    assert len(fault_origin.gets_for("p.bin")) > gets
    assert (await fetch(http, proxy.url_for("other.bin"))).header("X-Cache") == "HIT"
    # Purging something never cached is fine too.
    out = await fetch(http, proxy.url + "/_cache/never.bin", method="DELETE", headers=AUTH)
    assert out.status == 200 and json.loads(out.body)["was_cached"] is False
    out = await fetch(http, proxy.url + "/_cache/", method="DELETE", headers=AUTH)
    assert out.status == 400


async def test_purge_keys_on_the_query_string(fault_origin, proxy_factory, http) -> None:
    fault_origin.set_object("q.bin", seeded_bytes(S, 16), cache_control="max-age=3600")
    proxy = proxy_factory(fault_origin.url, slice_size=S, admin_token=TOKEN)
    for target in ("q.bin?v=1", "q.bin"):
        assert (await fetch(http, proxy.url_for(target))).status == 200
    await idle(http, proxy.url)
    out = await fetch(http, proxy.url + "/_cache/q.bin?v=1", method="DELETE", headers=AUTH)
    assert out.status == 200 and b'"path":"/q.bin?v=1"' in out.body.replace(b" ", b"")
    assert (await fetch(http, proxy.url + "/_cache/q.bin?v=1")).status == 404
    assert (await fetch(http, proxy.url + "/_cache/q.bin")).status == 200
    assert (await fetch(http, proxy.url_for("q.bin?v=1"))).header("X-Cache") == "MISS"
    assert (await fetch(http, proxy.url_for("q.bin"))).header("X-Cache") == "HIT"


# --- protect_stats ------------------------------------------------------------------------------


async def test_protect_stats_needs_the_token(fault_origin, proxy_factory, http) -> None:
    fault_origin.set_object("a.bin", seeded_bytes(S, 17))
    proxy = proxy_factory(fault_origin.url, slice_size=S, admin_token=TOKEN, protect_stats=True)
    for path in ("/stats.json", "/metrics", "/_cache/a.bin"):
        out = await fetch(http, proxy.url + path)
        assert out.status == 401 and out.header("WWW-Authenticate").startswith("Bearer"), path
        out = await fetch(http, proxy.url + path, headers={"Authorization": "Bearer nope"})
        assert out.status == 401, path
        out = await fetch(http, proxy.url + path, headers=AUTH)
        assert out.status in (200, 404), path  # 404: a.bin is not cached yet
    # The page: a token form without the token, the dashboard with it (header or ?token=).
    out = await fetch(http, proxy.url + "/stats")
    assert out.status == 401 and b"<form" in out.body and b"<canvas" not in out.body
    out = await fetch(http, proxy.url + "/stats?token=nope")
    assert out.status == 401 and b"not right" in out.body
    out = await fetch(http, proxy.url + f"/stats?token={TOKEN}")
    assert out.status == 200 and b"<canvas" in out.body
    out = await fetch(http, proxy.url + "/stats", headers=AUTH)
    assert out.status == 200
    # /stats.json takes the header only (the page's script sends it).
    assert (await fetch(http, proxy.url + f"/stats.json?token={TOKEN}")).status == 401
    # Health and proxied traffic are not affected.
    assert (await fetch(http, proxy.url + "/healthz")).status == 200
    assert (await fetch(http, proxy.url_for("a.bin"))).status == 200


async def test_purge_by_prefix_drops_everything_under_it(fault_origin, proxy_factory, http) -> None:
    """DELETE <purge_prefix>videos/* drops every object whose path starts with /videos/."""
    names = ["videos/a.bin", "videos/b.bin", "videos/deep/c.bin", "videos-other.bin", "docs/d.bin"]
    for k, name in enumerate(names):
        fault_origin.set_object(name, seeded_bytes(S + k, 30 + k), cache_control="max-age=3600")
    fault_origin.set_object("videos/gone", b"", fail_status=404, headers=[("Cache-Control", "max-age=3600")])
    proxy = proxy_factory(fault_origin.url, slice_size=S, admin_token=TOKEN, readahead_slices=0)
    for name in [*names, "videos/gone"]:
        await fetch(http, proxy.url_for(name))
    await idle(http, proxy.url)
    gets = {n: len(fault_origin.gets_for(n)) for n in [*names, "videos/gone"]}
    out = await fetch(http, proxy.url + "/_cache/videos/*", method="DELETE")
    assert out.status == 401  # the token, as for one object
    out = await fetch(http, proxy.url + "/_cache/videos/*", method="DELETE", headers=AUTH)
    assert out.status == 200, out.body
    body = json.loads(out.body)
    assert body["purged"] == 4 and body["prefix"] == "/videos/"
    assert sorted(body["urls"]) == sorted(fault_origin.url + "/" + n for n in
                                          ["videos/a.bin", "videos/b.bin", "videos/deep/c.bin", "videos/gone"])
    for name in [*names, "videos/gone"]:
        out = await fetch(http, proxy.url_for(name))
        asked_again = len(fault_origin.gets_for(name)) > gets[name]
        assert asked_again is name.startswith("videos/"), name
