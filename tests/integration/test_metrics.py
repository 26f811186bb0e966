"""/metrics, /stats.json and the access log, checked against real traffic.

The real proxy (``python -m proxy``) runs in front of the real demo origin
(``python -m appserver``) or the fault-injecting origin, and every counter must
move by exactly what the test did: a cold 3-slice range is 3 slice misses and
3 MiB from the origin, the same range again is 3 hits and nothing from the origin.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any, Callable

import aiohttp
import pytest

from tests.support.client import fetch
from tests.support.data import seeded_bytes, write_seeded_file
from tests.support.metrics import Samples, samples_of, scrape, settled, total, val
from tests.support.servers import unused_url

pytestmark = pytest.mark.integration

MiB = 2**20
S = MiB  # slice size of every proxy here



def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return val(after, name, **labels) - val(before, name, **labels)


async def stats_json(http: aiohttp.ClientSession, base: str, headers: dict[str, str] | None = None) -> Any:
    async with http.get(base + "/stats.json", headers=headers or {}) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("application/json")
        return await r.json()


# --- exact counters ---------------------------------------------------------------------


async def test_cold_then_warm_range_moves_counters_exactly(appserver, proxy_factory, http) -> None:
    proxy = proxy_factory(appserver.url, slice_size=S, readahead_slices=0)
    data = appserver.path("big.bin").read_bytes()
    rng = {"Range": f"bytes=0-{3 * MiB - 1}"}

    m0 = await scrape(http, proxy.url)
    assert total(m0, "rangeproxy_requests_total") == 0
    assert val(m0, "rangeproxy_slice_lookups_total", result="miss") == 0

    out = await fetch(http, proxy.url_for("big.bin"), headers=rng)
    assert out.status == 206 and out.body == data[: 3 * MiB] and out.header("X-Cache") == "MISS"
    m1 = await settled(http, proxy.url, 1)
    assert delta(m0, m1, "rangeproxy_slice_lookups_total", result="miss") == 3
    assert delta(m0, m1, "rangeproxy_slice_lookups_total", result="hit") == 0
    assert delta(m0, m1, "rangeproxy_slice_lookups_total", result="collapsed") == 0
    assert delta(m0, m1, "rangeproxy_response_bytes_total", source="origin") == 3 * MiB
    assert delta(m0, m1, "rangeproxy_response_bytes_total", source="cache") == 0
    assert delta(m0, m1, "rangeproxy_upstream_bytes_total") == 3 * MiB
    assert total(m1, "rangeproxy_upstream_requests_total") == 1
    assert val(m1, "rangeproxy_upstream_requests_total", status="206", outcome="ok") == 1
    assert delta(m0, m1, "rangeproxy_requests_total", method="GET", status_class="2xx") == 1
    assert delta(m0, m1, "rangeproxy_request_duration_seconds_count", cache_status="miss") == 1
    assert delta(m0, m1, "rangeproxy_time_to_first_byte_seconds_count", cache_status="miss") == 1
    assert val(m1, "rangeproxy_cache_objects") == 1
    assert val(m1, "rangeproxy_cache_entries") == 4  # 3 slices + the object's metadata
    assert val(m1, "rangeproxy_cache_size_bytes") >= 3 * MiB

    out = await fetch(http, proxy.url_for("big.bin"), headers=rng)
    assert out.status == 206 and out.body == data[: 3 * MiB] and out.header("X-Cache") == "HIT"
    m2 = await settled(http, proxy.url, 2)
    assert delta(m1, m2, "rangeproxy_slice_lookups_total", result="hit") == 3
    assert delta(m1, m2, "rangeproxy_slice_lookups_total", result="miss") == 0
    assert delta(m1, m2, "rangeproxy_response_bytes_total", source="cache") == 3 * MiB
    assert delta(m1, m2, "rangeproxy_response_bytes_total", source="origin") == 0
    assert delta(m1, m2, "rangeproxy_upstream_bytes_total") == 0
    assert total(m2, "rangeproxy_upstream_requests_total") == 1
    assert delta(m1, m2, "rangeproxy_request_duration_seconds_count", cache_status="hit") == 1
    assert delta(m1, m2, "rangeproxy_request_duration_seconds_count", cache_status="miss") == 0
    assert val(m2, "rangeproxy_cache_entries") == 4

    # A range that is part cached, part not: 3 hits, 2 misses, 2 MiB more from the origin.
    out = await fetch(http, proxy.url_for("big.bin"), headers={"Range": f"bytes=0-{5 * MiB - 1}"})
    assert out.status == 206 and out.body == data[: 5 * MiB] and out.header("X-Cache") == "PARTIAL"
    m3 = await settled(http, proxy.url, 3)
    assert delta(m2, m3, "rangeproxy_slice_lookups_total", result="hit") == 3
    assert delta(m2, m3, "rangeproxy_slice_lookups_total", result="miss") == 2
    assert delta(m2, m3, "rangeproxy_response_bytes_total", source="cache") == 3 * MiB
    assert delta(m2, m3, "rangeproxy_response_bytes_total", source="origin") == 2 * MiB
    assert delta(m2, m3, "rangeproxy_upstream_bytes_total") == 2 * MiB
    assert delta(m2, m3, "rangeproxy_request_duration_seconds_count", cache_status="partial") == 1
    assert val(m3, "rangeproxy_cache_entries") == 6

    # Gauges are back to zero once nothing is moving; no object's URL ever appears in the metrics,
    # the upstream's only as the label of its health (bounded by the configuration).
    assert val(m3, "rangeproxy_slice_fetches_in_flight") == 0
    assert val(m3, "rangeproxy_responses_waiting") == 0
    text = (await fetch(http, proxy.url + "/metrics")).body.decode()
    assert "big.bin" not in text
    assert [line for line in text.splitlines() if appserver.url in line] == [
        f'rangeproxy_origin_upstream_healthy{{origin="default",upstream="{appserver.url}"}} 1.0']


async def test_concurrent_cold_requests_collapse_onto_one_fetch(appserver, proxy_factory, http) -> None:
    proxy = proxy_factory(appserver.url, slice_size=S, readahead_slices=0)
    data = appserver.path("big.bin").read_bytes()
    rng = {"Range": f"bytes={2 * MiB}-{5 * MiB - 1}"}
    outs = await asyncio.gather(*(fetch(http, proxy.url_for("big.bin"), headers=rng) for _ in range(4)))
    for out in outs:
        assert out.status == 206 and out.body == data[2 * MiB: 5 * MiB]
    m = await settled(http, proxy.url, 4)
    hit = val(m, "rangeproxy_slice_lookups_total", result="hit")
    miss = val(m, "rangeproxy_slice_lookups_total", result="miss")
    collapsed = val(m, "rangeproxy_slice_lookups_total", result="collapsed")
    # One fetch of the 3 slices, whoever asked first; the others joined it or read what it stored.
    assert miss == 3
    assert hit + miss + collapsed == 12
    assert val(m, "rangeproxy_upstream_bytes_total") == 3 * MiB
    assert total(m, "rangeproxy_upstream_requests_total") == 1
    assert val(m, "rangeproxy_response_bytes_total", source="origin") + \
        val(m, "rangeproxy_response_bytes_total", source="cache") == 12 * MiB


async def test_origin_errors_and_statuses_are_counted(appserver, proxy_factory, http) -> None:
    proxy = proxy_factory(appserver.url, slice_size=S, readahead_slices=0)
    out = await fetch(http, proxy.url_for("nope.bin"), headers={"Range": "bytes=0-9"})
    assert out.status == 404
    m = await settled(http, proxy.url, 1)
    assert val(m, "rangeproxy_requests_total", method="GET", status_class="4xx") == 1
    assert total(m, "rangeproxy_upstream_requests_total", status="404") == 1

    dead = proxy_factory(unused_url(), slice_size=S, readahead_slices=0)
    out = await fetch(http, dead.url_for("x.bin"))
    assert out.status == 502
    m = await settled(http, dead.url, 1)
    assert val(m, "rangeproxy_requests_total", method="GET", status_class="5xx") == 1
    assert val(m, "rangeproxy_upstream_requests_total", status="none", outcome="error") == 1
    assert val(m, "rangeproxy_request_duration_seconds_count", cache_status="error") == 1


async def test_upstream_timeout_counted(fault_origin, proxy_factory, http) -> None:
    fault_origin.set_object("slow.bin", seeded_bytes(2 * S, 5), delay=3.0)
    proxy = proxy_factory(fault_origin.url, slice_size=S, readahead_slices=0, upstream_read_timeout="300ms")
    out = await fetch(http, proxy.url_for("slow.bin"), headers={"Range": "bytes=0-99"})
    assert out.status == 504
    m = await settled(http, proxy.url, 1)
    assert total(m, "rangeproxy_upstream_requests_total", outcome="timeout") == 1
    assert total(m, "rangeproxy_upstream_requests_total", outcome="ok") == 0


async def test_validator_change_counted(fault_origin, proxy_factory, http) -> None:
    v1, v2 = seeded_bytes(2 * S, 6), seeded_bytes(2 * S, 7)
    fault_origin.set_object("ch.bin", v1, cache_control="max-age=0")
    proxy = proxy_factory(fault_origin.url, slice_size=S, readahead_slices=0)
    out = await fetch(http, proxy.url_for("ch.bin"))
    assert out.status == 200 and out.body == v1
    fault_origin.set_object("ch.bin", v2, cache_control="max-age=0")
    out = await fetch(http, proxy.url_for("ch.bin"))
    assert out.status == 200 and out.body == v2
    m = await settled(http, proxy.url, 2)
    assert val(m, "rangeproxy_origin_version_changes_total") == 1


async def test_cache_size_and_evictions(appserver, proxy_factory, http) -> None:
    write_seeded_file(appserver.media_dir / "huge.bin", 24 * MiB, 9)
    proxy = proxy_factory(appserver.url, slice_size=S, readahead_slices=0, cache_size=16 * MiB)
    out = await fetch(http, proxy.url_for("huge.bin"))
    assert out.status == 200 and len(out.body) == 24 * MiB
    await settled(http, proxy.url, 1)
    m = await settled(http, proxy.url, 1)  # again: its volume is read after every store write ended
    assert val(m, "rangeproxy_cache_limit_bytes") == 16 * MiB
    # diskcache evicts least recently used slices once the volume passes the limit
    assert 0 < val(m, "rangeproxy_cache_size_bytes") <= 16 * MiB + 2 * S
    assert val(m, "rangeproxy_cache_entries") < 25
    # 24 slices and one metadata record went in; what is not there any more was evicted.
    assert ("rangeproxy_cache_evictions_total", frozenset()) in m
    assert val(m, "rangeproxy_cache_evictions_total") == 24 + 1 - val(m, "rangeproxy_cache_entries") > 0


# --- one registry per app -----------------------------------------------------------------


def test_each_app_has_its_own_registry() -> None:
    from proxy.app import METRICS, build_app
    from proxy.core.settings import settings_from_mapping

    settings = settings_from_mapping({"upstream": "http://127.0.0.1:9", "cache_dir": "unused"})
    a, b = build_app(settings), build_app(settings)
    assert a[METRICS].registry is not b[METRICS].registry
    a[METRICS].observe("GET", 200, "HIT", 0.001, 0.0005, aborted=False)
    text_a, text_b = a[METRICS].render().decode(), b[METRICS].render().decode()
    assert 'rangeproxy_requests_total{method="GET",status_class="2xx"} 1.0' in text_a
    assert 'rangeproxy_requests_total{method="GET",status_class="2xx"} 0.0' in text_b
    assert 'rangeproxy_request_duration_seconds_bucket{cache_status="hit",le="0.001"} 1.0' in text_a
    assert 'rangeproxy_request_duration_seconds_bucket{cache_status="hit",le="0.0005"} 0.0' in text_a
    assert 'rangeproxy_time_to_first_byte_seconds_bucket{cache_status="hit",le="0.0005"} 1.0' in text_a
    # before startup (no engine yet) the engine's series are simply absent
    assert "rangeproxy_slice_lookups_total" not in text_a


# --- /stats.json ------------------------------------------------------------------------------


async def test_stats_json_snapshot(appserver, proxy_factory, http) -> None:
    proxy = proxy_factory(appserver.url, slice_size=S, readahead_slices=0)
    rng = {"Range": f"bytes=0-{3 * MiB - 1}"}
    empty = await stats_json(http, proxy.url)
    assert empty["totals"]["requests"] == 0
    assert empty["ratios"]["hit_ratio_bytes"] is None and empty["offload"]["bytes"] is None
    assert empty["top_objects"] == []

    for n, expect in enumerate(("MISS", "HIT"), 1):
        out = await fetch(http, proxy.url_for("big.bin"), headers=rng)
        assert out.status == 206 and out.header("X-Cache") == expect
        await settled(http, proxy.url, n)
    await asyncio.sleep(1.2)  # at least one per-second sample after the traffic
    s = await stats_json(http, proxy.url)

    t = s["totals"]
    assert t["requests"] == 2
    assert t["requests_by_cache_status"] == {"MISS": 1, "HIT": 1}
    assert t["requests_by_status_class"] == {"2xx": 2}
    assert t["requests_by_source"] == {"cache": 1, "origin": 1, "error": 0}
    assert t["response_bytes"] == {"cache": 3 * MiB, "origin": 3 * MiB, "total": 6 * MiB}
    assert t["slice_lookups"] == {"hit": 3, "miss": 3, "collapsed": 0}
    assert t["upstream_requests"] == 1 and t["upstream_bytes"] == 3 * MiB
    assert t["upstream_requests_by_outcome"] == {"ok": 1, "mismatch": 0, "error": 0, "timeout": 0}
    assert s["ratios"] == {"hit_ratio_bytes": 0.5, "hit_ratio_requests": 0.5, "slice_hit_ratio": 0.5}
    assert s["offload"]["bytes"] == 0.5
    assert s["offload"]["requests"] == 0.5

    lat = s["latency"]
    assert lat["samples"] == 2
    assert 0 < lat["duration_seconds"]["p50"] <= lat["duration_seconds"]["p95"] <= lat["duration_seconds"]["p99"]
    assert set(lat["by_cache_status"]) == {"HIT", "MISS"}
    assert lat["by_cache_status"]["HIT"]["samples"] == 1

    r = s["rates"]
    assert r["window_seconds"] > 0
    assert r["cache_bytes_per_second"] * r["window_seconds"] == pytest.approx(3 * MiB, rel=0.01)
    assert r["requests_per_second"] * r["window_seconds"] == pytest.approx(2, rel=0.01)

    se = s["series"]
    assert len(se["t"]) == len(se["cache_bytes"]) == len(se["origin_bytes"]) >= 1
    assert max(se["cache_bytes"]) > 0 and max(se["origin_bytes"]) > 0 and max(se["upstream_bytes"]) > 0
    assert max(se["cache_requests"]) > 0 and max(se["origin_requests"]) > 0

    assert s["cache"]["objects"] == 1 and s["cache"]["entries"] == 4 and s["cache"]["evictions"] == 0
    assert s["cache"]["limit_bytes"] > 0 and s["cache"]["bytes"] >= 3 * MiB
    assert s["gauges"] == {"slice_fetches_in_flight": 0, "responses_waiting": 0}

    [top] = s["top_objects"]
    assert top["path"] == "/big.bin" and top["url"] == appserver.url + "/big.bin"
    assert top["bytes_served"] == 6 * MiB and top["cache_bytes"] == 3 * MiB and top["requests"] == 2
    assert top["in_cache"] is True and top["length"] == 8 * MiB
    assert top["slices"] == 8 and top["cached_slices"] == 3 and top["cached"] == [[0, 3]]
    assert top["in_flight"] == [] and top["cached_fraction"] == 3 / 8

    # One process: no "workers" field, and nothing published for other workers.
    assert "workers" not in s
    assert not (proxy.cache_dir / ".rangeproxy" / "workers").exists()


async def test_top_objects_ranked_by_bytes_with_cached_fraction(appserver, proxy_factory, http) -> None:
    proxy = proxy_factory(appserver.url, slice_size=S, readahead_slices=0, block_size=S)  # whole slices
    await fetch(http, proxy.url_for("odd.bin"))  # 3 MiB + 123: all 4 slices
    await fetch(http, proxy.url_for("big.bin"), headers={"Range": f"bytes={MiB}-{MiB + 9}"})
    await settled(http, proxy.url, 2)
    await fetch(http, proxy.url_for("big.bin"), headers={"Range": f"bytes={6 * MiB}-{6 * MiB + 9}"})
    await settled(http, proxy.url, 3)
    s = await stats_json(http, proxy.url)
    odd, big = s["top_objects"]
    assert odd["path"] == "/odd.bin" and odd["bytes_served"] == 3 * MiB + 123
    assert odd["cached_fraction"] == 1.0 and odd["cached"] == [[0, 4]] and odd["slices"] == 4
    assert big["path"] == "/big.bin" and big["bytes_served"] == 20
    assert big["cached"] == [[1, 2], [6, 7]] and big["cached_fraction"] == 2 / 8


async def test_slice_map_shows_partly_cached_slices(appserver, proxy_factory, http) -> None:
    # Default block_size (smaller than a slice): a small read caches only a block of slice 1.
    proxy = proxy_factory(appserver.url, slice_size=S, readahead_slices=0)
    out = await fetch(http, proxy.url_for("big.bin"), headers={"Range": f"bytes={MiB}-{MiB + 9}"})
    assert out.status == 206
    await settled(http, proxy.url, 1)
    [big] = (await stats_json(http, proxy.url))["top_objects"]
    assert big["cached"] == [] and big["partial"] == [[1, 2]] and big["partial_slices"] == 1
    assert big["cached_fraction"] == 0.0 and big["in_flight"] == []
    out = await fetch(http, proxy.url + "/_cache/big.bin")
    assert out.status == 200 and b'"partial": [[1, 2]]' in out.body


# --- several workers: whichever answers reports the whole proxy --------------------------------


async def on_fresh_connection(url: str) -> tuple[int, Any, bytes]:
    """One request on a connection of its own (the kernel picks a worker per connection)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                     auto_decompress=False) as s:
        async with s.get(url) as r:
            return r.status, r.headers, await r.read()


async def test_two_workers_metrics_and_stats_count_every_request_once(appserver, proxy_factory) -> None:
    proxy = proxy_factory(appserver.url, slice_size=S, readahead_slices=0, workers=2)
    data = appserver.path("big.bin").read_bytes()

    async def ranged(i: int) -> int:
        a = (i * 211 * 1024) % (8 * MiB - 100 * 1024)
        b = a + 1024 * (1 + i % 50) - 1
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            async with s.get(proxy.url_for("big.bin"), headers={"Range": f"bytes={a}-{b}"}) as r:
                body = await r.read()
                assert r.status == 206 and body == data[a: b + 1]
                return len(body)

    async def stats() -> tuple[Any, str]:
        status, headers, body = await on_fresh_connection(proxy.url + "/stats.json")
        assert status == 200, body[:300]
        return json.loads(body), headers["X-Rangeproxy-Worker"]

    async def metrics() -> tuple[Samples, str]:
        status, headers, body = await on_fresh_connection(proxy.url + "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain"), body[:300]
        return samples_of(body), headers["X-Rangeproxy-Worker"]

    async def settle(made: int) -> Any:
        deadline = time.monotonic() + 10
        while True:
            s, _ = await stats()
            if s["totals"]["requests"] == made or time.monotonic() > deadline:
                return s
            await asyncio.sleep(0.1)

    # Traffic on fresh connections until both workers have served some (bounded).
    made, sent = 0, 0
    for _round in range(6):
        sizes = await asyncio.gather(*(ranged(made + i) for i in range(24)))
        made += len(sizes)
        sent += sum(sizes)
        s = await settle(made)
        per = {w["index"]: w["requests"] for w in s["workers"]["per_worker"]}
        if len(per) == 2 and min(per.values()) > 0:
            break
    assert s["workers"]["count"] == 2 and s["workers"]["reporting"] == 2
    assert sorted(per) == [0, 1] and min(per.values()) > 0, f"one worker served everything: {per}"
    assert sum(per.values()) == made
    await asyncio.sleep(1.5)  # every worker has published once more since the last request

    # Asked again and again, on fresh connections (either worker answers): the same, exact totals.
    answered_stats: set[str] = set()
    answered_metrics: set[str] = set()
    for i in range(40):
        if i >= 8 and len(answered_stats) == 2 and len(answered_metrics) == 2:
            break
        s, who = await stats()
        answered_stats.add(who)
        assert s["workers"]["answered_by"] == int(who)
        t = s["totals"]
        assert t["requests"] == made and t["requests_by_status_class"] == {"2xx": made}
        assert t["response_bytes"]["total"] == sent
        assert sum(w["requests"] for w in s["workers"]["per_worker"]) == made
        assert s["latency"]["samples"] == made
        assert sum(o["requests"] for o in s["top_objects"]) == made and len(s["top_objects"]) == 1
        assert s["gauges"] == {"slice_fetches_in_flight": 0, "responses_waiting": 0}
        assert s["cache"]["objects"] == 1
        m, who = await metrics()
        answered_metrics.add(who)
        assert total(m, "rangeproxy_requests_total") == made
        assert val(m, "rangeproxy_requests_total", method="GET", status_class="2xx") == made
        assert total(m, "rangeproxy_request_duration_seconds_count") == made
        assert val(m, "rangeproxy_response_bytes_total", source="cache") + \
            val(m, "rangeproxy_response_bytes_total", source="origin") == sent
        assert val(m, "rangeproxy_upstream_bytes_total") == t["upstream_bytes"]
        assert total(m, "rangeproxy_upstream_requests_total") == t["upstream_requests"]
        assert val(m, "rangeproxy_cache_objects") == 1
        assert val(m, "rangeproxy_cache_entries") == s["cache"]["entries"]
        assert val(m, "rangeproxy_slice_fetches_in_flight") == 0
    assert answered_stats == {"0", "1"} and answered_metrics == {"0", "1"}, (answered_stats, answered_metrics)


# --- access log ---------------------------------------------------------------------------------


COMBINED = re.compile(
    r'^(?P<remote>\S+) - - \[(?P<time>[^\]]+)\] "(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) '
    r'"(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)" cache=(?P<cache>\S+) origin=(?P<origin_name>\S+) upstream_time=(?P<up>\S+) '
    r"origin_bytes=(?P<origin>\d+) time=(?P<t>[0-9.]+)$"
)


async def wait_for(pred: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)


async def test_access_log_lines(appserver, proxy_factory, http) -> None:
    proxy = proxy_factory(appserver.url, slice_size=S, readahead_slices=0, admin_token="s3cret", protect_stats=True)
    auth = {"Authorization": "Bearer s3cret"}
    rng = {"Range": f"bytes=0-{2 * MiB - 1}", "User-Agent": 'tester "quoted"', "Referer": "http://example.test/"}
    await fetch(http, proxy.url_for("big.bin"), headers=rng)
    await settled(http, proxy.url, 1, headers=auth)
    await fetch(http, proxy.url_for("big.bin"), headers=rng)
    await fetch(http, proxy.url + "/stats?token=s3cret")

    def lines() -> list[re.Match[str]]:
        found = [COMBINED.match(line) for line in proxy.stdout_text().splitlines()]
        return [m for m in found if m and "/metrics" not in m["request"] and "/healthz" not in m["request"]]

    got = await wait_for(lambda: len(lines()) >= 3 and lines())
    assert got, proxy.stdout_text()[-2000:]
    miss, hit, page = got
    assert miss["request"] == "GET /big.bin HTTP/1.1" and miss["status"] == "206"
    assert miss["bytes"] == str(2 * MiB) and miss["cache"] == "MISS" and miss["origin"] == str(2 * MiB)
    assert miss["origin_name"] == hit["origin_name"] == "default" and page["origin_name"] == "-"
    assert miss["agent"] == 'tester \\"quoted\\"' and miss["referer"] == "http://example.test/"
    assert miss["up"] == "-" or float(miss["up"]) >= 0  # "-" while the engine does not report it
    assert hit["cache"] == "HIT" and hit["origin"] == "0" and hit["bytes"] == str(2 * MiB)
    assert hit["up"] == "0.000000"
    assert float(hit["t"]) >= 0
    assert page["request"] == "GET /stats?token=*** HTTP/1.1" and page["status"] == "200"
    assert page["cache"] == "-"
    assert "s3cret" not in proxy.stdout_text() and "s3cret" not in proxy.stderr_text()


async def test_access_log_off(appserver, proxy_factory, http) -> None:
    proxy = proxy_factory(appserver.url, slice_size=S, readahead_slices=0, access_log=False)
    await fetch(http, proxy.url_for("big.bin"), headers={"Range": "bytes=0-9"})
    await settled(http, proxy.url, 1)
    await asyncio.sleep(0.2)
    assert "big.bin" not in proxy.stdout_text()


# --- config/ for people who run Prometheus and Grafana -------------------------------------------


async def test_grafana_dashboard_and_prometheus_config_use_real_metrics(appserver, proxy_factory, http) -> None:
    import json
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / "config"
    proxy = proxy_factory(appserver.url, slice_size=S, readahead_slices=0)
    await fetch(http, proxy.url_for("big.bin"), headers={"Range": "bytes=0-9"})
    m = await settled(http, proxy.url, 1)
    exported = {name for name, _ in m}  # sample names: _total, _bucket, _count, ... included

    dash = json.loads((config / "grafana-dashboard.json").read_text())
    [ds] = [v for v in dash["templating"]["list"] if v["type"] == "datasource"]
    assert ds["query"] == "prometheus" and ds["name"] == "datasource"
    exprs = []
    for panel in dash["panels"]:
        if panel["type"] in ("row", "text"):
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
            exprs.append(t["expr"])
    names = set(re.findall(r"\brangeproxy_[a-z_]+", " ".join(exprs)))
    assert names, "no queries"
    missing = names - exported
    assert not missing, f"the dashboard queries metrics the proxy does not export: {sorted(missing)}"
    # No URL-like label anywhere in the dashboard's queries.
    assert "url" not in " ".join(exprs).lower()

    prom = (config / "prometheus.yml").read_text()
    assert re.search(r"job_name:\s*rangeproxy\b", prom)
    assert re.search(r"metrics_path:\s*/metrics\b", prom)
    assert '"localhost:8080"' in prom


# --- the bounded bookkeeping behind /stats.json (in-process, no servers) ------------------------


def test_stats_bookkeeping_is_bounded_and_exact() -> None:
    from types import SimpleNamespace

    from proxy.cache.pieces import RequestTally
    from proxy.core.counters import Counters
    from proxy.web.sending import ResponseInfo
    from proxy.observe.stats import Stats, cached_bytes, percentiles, to_ranges

    assert percentiles([]) == {"p50": None, "p95": None, "p99": None}
    assert percentiles(range(1, 101)) == {"p50": 50, "p95": 95, "p99": 99}
    assert percentiles([7.0]) == {"p50": 7.0, "p95": 7.0, "p99": 7.0}
    assert to_ranges([5, 0, 1, 2, 2, 9, 6]) == [[0, 3], [5, 7], [9, 10]]
    assert cached_bytes([0, 3], 3 * S + 10, S) == S + 10

    settings = SimpleNamespace(slice_size=S, upstream="http://o", cache_size=64 * MiB, purge_prefix="/_cache/",
                               admin_token="", protect_stats=False)
    engine = SimpleNamespace(counters=Counters())
    st = Stats(settings, tracked=3, reservoir=4, history=5)
    st.bind(engine)

    def response(url: str, cache: int, origin: int, status: str = "HIT", duration: float = 0.01) -> None:
        info = ResponseInfo(url=url, cache_status=status, object_length=10 * S,
                            tally=RequestTally(cache_bytes=cache, origin_bytes=origin))
        info.finished = info.started + duration
        info.first_byte = info.started + duration / 2
        engine.counters.response_bytes["cache"] += cache
        engine.counters.response_bytes["origin"] += origin
        st.observe("GET", 206, info)

    for i in range(10):
        response(f"http://o/{i}", cache=i * 100, origin=0, duration=0.001 * (i + 1))
    assert len(st.objects) <= 2 * 3  # pruned back to the biggest
    assert {"http://o/9", "http://o/8", "http://o/7"} <= set(st.objects)
    assert len(st._durations) == 4 and max(st._durations) == pytest.approx(0.010)
    for _ in range(20):
        st.tick()
    assert len(st._ring) == 6  # history + 1 samples
    assert st.requests == 10 and st.by_class["cache"] == 10
    response("http://o/x", cache=0, origin=S, status="MISS")
    assert st.by_class["origin"] == 1 and st.by_cache_status == {"HIT": 10, "MISS": 1}
