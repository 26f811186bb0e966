"""Several workers, one set of numbers: the merge of expositions and stats, and the worker files.

No servers: registries and ``Stats`` fed by hand, files in a temporary ``run_dir``.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.cache.budget import ByteBudget
from proxy.cache.writability import CacheWritability
from proxy.cache.pieces import RequestTally
from proxy.core.counters import Counters
from proxy.web.sending import ResponseInfo
from proxy.observe.metrics import Metrics, merge_expositions
from proxy.workers.peers import Peers, parse_prom_header, pid_alive, process_start, prom_header
from proxy.observe.stats import Sample, Stats, merge_series, series_of
from proxy.workers.info import WorkerInfo

from tests.support.metrics import samples_of, val

MiB = 2**20
S = MiB

def settings_ns() -> SimpleNamespace:
    return SimpleNamespace(slice_size=S, upstream="http://o", node_name="node-a", cache_size=64 * MiB,
                           purge_prefix="/_cache/", admin_token="", protect_stats=False, cache_dir="unused")


class FakeStore:
    def __init__(self, evictions: int = 0, corrupt: int = 0) -> None:
        self.evictions = evictions
        self.corrupt_dropped = corrupt
        self.writability = CacheWritability("unused")


class FakeEngine:
    """What Metrics and Stats read of an engine."""

    def __init__(self, evictions: int = 0, corrupt: int = 0, in_flight: int = 0, waiting: int = 0) -> None:
        self.counters = Counters()
        self.store = FakeStore(evictions, corrupt)
        self._in_flight = in_flight
        self._waiting = waiting
        self.maps: dict[str, dict[str, Any]] = {}
        self.fill_budget = ByteBudget(32 * 2**20)
        self.storing: set[object] = set()

    def in_flight(self) -> int:
        return self._in_flight

    def origin_states(self) -> list[tuple[str, Counters, list[dict[str, object]]]]:
        return [("default", self.counters, [{"base": "http://o", "healthy": True, "failures": 0,
                                               "cool_until": None}])]

    def origin_of(self, url: str) -> tuple[str, str]:
        return ("default", "http://o") if url.startswith("http://o") else ("", "")

    def waiting(self) -> int:
        return self._waiting

    async def slice_map(self, url: str) -> dict[str, Any] | None:
        return self.maps.get(url)


class Worker:
    """One worker's Metrics + Stats over a fake engine, fed like the app's observer does."""

    def __init__(self, **engine: int) -> None:
        self.engine = FakeEngine(**engine)
        self.metrics = Metrics(settings_ns(), lambda: self.engine)
        self.stats = Stats(settings_ns())
        self.stats.bind(self.engine)

    def response(self, url: str, status: str, cache: int = 0, origin: int = 0, duration: float = 0.01,
                 code: int = 206, method: str = "GET") -> None:
        c = self.engine.counters
        info = ResponseInfo(url=url, origin="default", cache_status=status, object_length=8 * S,
                            tally=RequestTally(cache_bytes=cache, origin_bytes=origin))
        info.finished = info.started + duration
        info.first_byte = info.started + duration / 2
        c.response_bytes["cache"] += cache
        c.response_bytes["origin"] += origin
        if origin:
            c.upstream[("206", "ok")] += 1
            c.upstream_bytes += origin
            c.slice_lookups["miss"] += 1
        if cache:
            c.slice_lookups["hit"] += 1
        self.metrics.observe(method, code, status, duration, duration / 2, False)
        self.stats.observe(method, code, info)


# --- /metrics ------------------------------------------------------------------------------------


def test_per_origin_series_add_up_across_workers() -> None:
    a, b = Worker(), Worker()
    a.response("http://o/a", "HIT", cache=S)
    b.response("http://o/a", "MISS", origin=2 * S)
    b.engine.counters.upstream[("none", "error")] += 1
    m = samples_of(merge_expositions([a.metrics.render().decode(), b.metrics.render().decode()]))
    assert val(m, "rangeproxy_origin_response_bytes_total", origin="default", source="cache") == S
    assert val(m, "rangeproxy_origin_response_bytes_total", origin="default", source="origin") == 2 * S
    assert val(m, "rangeproxy_origin_upstream_bytes_total", origin="default") == 2 * S
    assert val(m, "rangeproxy_origin_upstream_requests_total", origin="default", status="none", outcome="error") == 1
    assert val(m, "rangeproxy_origin_upstream_healthy", origin="default", upstream="http://o") == 2  # both workers


async def test_cache_writable_is_0_when_any_worker_cannot_write() -> None:
    a, b = Worker(), Worker()
    both = samples_of(merge_expositions([a.metrics.render().decode(), b.metrics.render().decode()]))
    assert val(both, "rangeproxy_cache_writable") == 1  # not 2: the lowest, not the sum
    assert b.engine.store.writability.failed(OSError(errno.ENOSPC, "No space left on device"))
    m = samples_of(merge_expositions([a.metrics.render().decode(), b.metrics.render().decode()]))
    assert val(m, "rangeproxy_cache_writable") == 0
    assert val(m, "rangeproxy_cache_write_errors_total", reason="no_space") == 1
    assert val(m, "rangeproxy_cache_write_errors_total", reason="read_only") == 0
    peer = json.loads(json.dumps(b.stats.export()))
    peer.update(index=1, pid=2, age=0.1)
    volume = SimpleNamespace(bytes=0, entries=0, objects=0, evictions=0)
    doc = await a.stats.snapshot(volume, peers=[peer], worker=WorkerInfo(index=0, count=2, run_dir=Path("unused")))
    assert doc["cache"]["writable"] is False and doc["cache"]["write_errors"] == 1
    assert doc["cache"]["write_reason"] == "ENOSPC: No space left on device"


async def test_stats_json_groups_requests_and_bytes_per_origin() -> None:
    a, b = Worker(), Worker()
    a.response("http://o/a", "HIT", cache=S)
    b.response("http://o/a", "MISS", origin=2 * S)
    b.engine.counters.upstream[("none", "timeout")] += 1
    b.engine.counters.upstream[("404", "error")] += 1  # an answer, not a failure
    peer = json.loads(json.dumps(b.stats.export()))  # as it travels through the file
    peer.update(index=1, pid=2, age=0.1)
    volume = SimpleNamespace(bytes=3 * S, entries=4, objects=1, evictions=0)
    doc = await a.stats.snapshot(volume, peers=[peer], worker=WorkerInfo(index=0, count=2, run_dir=Path("unused")))
    (o,) = doc["origins"]
    assert o["name"] == "default"
    assert o["requests"] == {"cache": 1, "origin": 1, "error": 0}
    assert o["response_bytes"] == {"cache": S, "origin": 2 * S}
    assert o["upstream_bytes"] == 2 * S and o["upstream_requests"] == 3 and o["upstream_failures"] == 1
    assert o["hit_ratio_bytes"] == pytest.approx(1 / 3, abs=1e-3)
    assert o["upstreams"] == [{"base": "http://o", "healthy": True, "failures": 0, "cool_until": None}]


def test_merge_sums_counters_and_histograms_and_keeps_shared_gauges_single() -> None:
    a, b = Worker(evictions=2, corrupt=1, in_flight=1), Worker(evictions=3, corrupt=0, in_flight=2, waiting=1)
    for _ in range(3):
        a.response("http://o/a", "HIT", cache=S, duration=0.002)
    for _ in range(2):
        b.response("http://o/a", "MISS", origin=S, duration=0.3)
    b.response("http://o/b", "HIT", cache=10, code=404)
    a.metrics.volume.bytes, a.metrics.volume.entries, a.metrics.volume.objects = 5 * MiB, 6, 1
    b.metrics.volume.bytes, b.metrics.volume.entries, b.metrics.volume.objects = 9 * MiB, 9, 2  # an older reading
    a.metrics.volume.evictions, b.metrics.volume.evictions = 2, 3
    ta, tb = a.metrics.render().decode(), b.metrics.render().decode()

    merged = merge_expositions([ta, tb])
    m, sa, sb = samples_of(merged), samples_of(ta), samples_of(tb)
    assert set(m) == set(sa) | set(sb)
    assert val(m, "rangeproxy_requests_total", method="GET", status_class="2xx") == 5
    assert val(m, "rangeproxy_requests_total", method="GET", status_class="4xx") == 1
    assert val(m, "rangeproxy_request_duration_seconds_count", cache_status="hit") == 4
    assert val(m, "rangeproxy_request_duration_seconds_count", cache_status="miss") == 2
    assert val(m, "rangeproxy_request_duration_seconds_bucket", cache_status="hit", le="0.0025") == 3
    assert val(m, "rangeproxy_request_duration_seconds_bucket", cache_status="miss", le="0.5") == 2
    assert val(m, "rangeproxy_request_duration_seconds_bucket", cache_status="hit", le="+Inf") == 4
    assert val(m, "rangeproxy_request_duration_seconds_sum", cache_status="miss") == pytest.approx(0.6)
    assert val(m, "rangeproxy_response_bytes_total", source="cache") == 3 * S + 10
    assert val(m, "rangeproxy_response_bytes_total", source="origin") == 2 * S
    assert val(m, "rangeproxy_upstream_requests_total", status="206", outcome="ok") == 2
    assert val(m, "rangeproxy_slice_fetches_in_flight") == 3
    assert val(m, "rangeproxy_responses_waiting") == 1
    assert val(m, "rangeproxy_cache_evictions_total") == 5
    assert val(m, "rangeproxy_cache_corrupt_dropped_total") == 1
    # the shared store: the answering worker's (first) reading, not a sum
    assert val(m, "rangeproxy_cache_size_bytes") == 5 * MiB
    assert val(m, "rangeproxy_cache_entries") == 6
    assert val(m, "rangeproxy_cache_objects") == 1
    assert val(m, "rangeproxy_cache_limit_bytes") == 64 * MiB
    # ... or the largest when no answering worker is singled out
    m2 = samples_of(merge_expositions([ta, tb], shared_from_first=False))
    assert val(m2, "rangeproxy_cache_size_bytes") == 9 * MiB and val(m2, "rangeproxy_cache_entries") == 9
    # creation times and the start time: the earliest; per-process limits: not added up
    assert val(m, "rangeproxy_requests_created", method="GET", status_class="2xx") == min(
        val(sa, "rangeproxy_requests_created", method="GET", status_class="2xx"),
        val(sb, "rangeproxy_requests_created", method="GET", status_class="2xx"))
    if ("process_start_time_seconds", frozenset()) in sa:  # Linux: the process collector has /proc
        assert val(m, "process_start_time_seconds") == val(sa, "process_start_time_seconds")
        assert val(m, "process_max_fds") == val(sa, "process_max_fds")
        assert val(m, "process_resident_memory_bytes") == val(sa, "process_resident_memory_bytes") + val(
            sb, "process_resident_memory_bytes")
    # valid exposition: the types survive
    types = {f.name: f.type for f in text_string_to_metric_families(merged.decode())}
    assert types["rangeproxy_requests"] == "counter"
    assert types["rangeproxy_request_duration_seconds"] == "histogram"
    assert types["rangeproxy_slice_fetches_in_flight"] == "gauge"


def test_merge_of_one_exposition_is_that_exposition() -> None:
    w = Worker(evictions=1)
    w.response("http://o/a", "MISS", origin=S)
    w.metrics.volume.evictions = 1
    text = w.metrics.render()
    assert merge_expositions([text.decode()]) == text


def test_merge_skips_a_damaged_exposition_and_adds_series_only_some_have() -> None:
    a, b = Worker(), Worker()
    a.response("http://o/a", "HIT", cache=1)
    extra = "# HELP rangeproxy_extra_total x\n# TYPE rangeproxy_extra_total counter\nrangeproxy_extra_total 4.0\n"
    merged = samples_of(merge_expositions([a.metrics.render().decode(), "garbage{{{ 1\n",
                                           b.metrics.render().decode() + extra]))
    assert val(merged, "rangeproxy_requests_total", method="GET", status_class="2xx") == 1
    assert val(merged, "rangeproxy_extra_total") == 4


# --- /stats.json -----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.mono = 1000.0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return 1.7e9 + self.mono


async def test_snapshot_adds_up_the_other_workers_exports(monkeypatch: pytest.MonkeyPatch) -> None:
    import proxy.observe.stats

    clock = Clock()
    monkeypatch.setattr(proxy.observe.stats, "time", clock)
    a, b = Worker(evictions=1, corrupt=1, in_flight=1), Worker(evictions=2, in_flight=0, waiting=3)
    a.engine.maps["http://o/big"] = {"length": 8 * S, "slice_size": S, "slices": 8, "cached": [0, 1, 2],
                                     "in_flight": [], "partial": [], "content_type": "application/x"}
    for _ in range(3):
        a.response("http://o/big", "HIT", cache=S, duration=0.001)
    a.response("http://o/small", "MISS", origin=100, duration=0.2)
    for _ in range(4):
        b.response("http://o/big", "MISS", origin=S, duration=0.1)
    b.response("http://o/other", "HIT", cache=5 * S, duration=0.003)
    b.stats.purges = 2
    clock.mono += 10.0
    for w in (a, b):
        w.stats.tick()
    peer = json.loads(json.dumps(b.stats.export()))  # as it travels through the file
    peer.update(index=1, pid=4242, age=0.4)
    volume = SimpleNamespace(bytes=3 * S, entries=4, objects=1, evictions=1)
    worker = WorkerInfo(index=0, count=2, run_dir=Path("unused"))

    s = await a.stats.snapshot(volume, peers=[peer], worker=worker)
    t = s["totals"]
    assert t["requests"] == 9
    assert t["requests_by_cache_status"] == {"HIT": 4, "MISS": 5}
    assert t["requests_by_source"] == {"cache": 4, "origin": 5, "error": 0}
    assert t["response_bytes"] == {"cache": 8 * S, "origin": 4 * S + 100, "total": 12 * S + 100}
    assert t["slice_lookups"] == {"hit": 4, "miss": 5, "collapsed": 0}
    assert t["upstream_requests"] == 5 and t["upstream_bytes"] == 4 * S + 100
    assert t["upstream_requests_by_outcome"]["ok"] == 5 and t["upstream_requests_by_status"] == {"206": 5}
    assert t["purges"] == 2
    assert s["ratios"]["hit_ratio_bytes"] == pytest.approx(8 * S / (12 * S + 100))
    assert s["ratios"]["hit_ratio_requests"] == pytest.approx(4 / 9)
    assert s["ratios"]["slice_hit_ratio"] == pytest.approx(4 / 9)
    assert s["offload"]["bytes"] == pytest.approx(1 - (4 * S + 100) / (12 * S + 100))
    assert s["offload"]["requests"] == pytest.approx(1 - 5 / 9)
    lat = s["latency"]
    assert lat["samples"] == 9
    assert lat["by_cache_status"]["HIT"]["samples"] == 4 and lat["by_cache_status"]["MISS"]["samples"] == 5
    assert lat["by_cache_status"]["MISS"]["duration_seconds"]["p50"] == pytest.approx(0.1)
    assert lat["duration_seconds"]["p99"] == pytest.approx(0.2)
    assert s["gauges"] == {"slice_fetches_in_flight": 1, "responses_waiting": 3}
    assert s["cache"]["bytes"] == 3 * S and s["cache"]["entries"] == 4 and s["cache"]["objects"] == 1
    assert s["cache"]["evictions"] == 3 and s["cache"]["corrupt_dropped"] == 1
    top = {o["path"]: o for o in s["top_objects"]}
    assert [o["path"] for o in s["top_objects"]] == ["/big", "/other", "/small"]
    assert top["/big"]["bytes_served"] == 7 * S and top["/big"]["requests"] == 7
    assert top["/big"]["cache_bytes"] == 3 * S and top["/big"]["origin_bytes"] == 4 * S
    assert top["/big"]["cached_fraction"] == 3 / 8 and top["/big"]["in_cache"] is True  # the shared store's map
    assert top["/other"]["in_cache"] is False
    assert s["workers"] == {"count": 2, "reporting": 2, "answered_by": 0, "per_worker": [
        {"index": 0, "pid": os.getpid(), "requests": 4, "age_seconds": 0.0},
        {"index": 1, "pid": 4242, "requests": 5, "age_seconds": 0.4}]}
    # rates: each worker's over its last minute, summed
    assert s["rates"]["window_seconds"] == 10.0
    assert s["rates"]["requests_per_second"] == pytest.approx(0.9)
    assert s["rates"]["cache_bytes_per_second"] == pytest.approx(0.8 * S)
    assert s["series"]["cache_requests"] == pytest.approx([0.4])  # a's 3 HITs + b's 1 over the 10 s
    assert s["uptime_seconds"] == 10.0

    # Without peers: this worker alone, and no "workers" field (as with a single process).
    alone = await a.stats.snapshot(volume)
    assert alone["totals"]["requests"] == 4 and "workers" not in alone
    assert alone["cache"]["evictions"] == 1


def ring(start: float, counts: list[int], step_bytes: int = 0) -> list[Sample]:
    """Cumulative samples one second apart from monotonic ``start``; ``counts`` cumulative cache requests."""
    return [Sample(1.7e9 + start + i, start + i, c, 0, 0, step_bytes * i, 0, 0) for i, c in enumerate(counts)]


def test_merge_series_adds_up_second_by_second() -> None:
    a = ring(100.0, [0, 2, 4, 6, 8])
    b = ring(102.001, [0, 10, 30])  # started later, ticks at the same whole seconds
    m = merge_series([a, b], history=300)
    assert m["cache_requests"] == pytest.approx([2, 2, 12, 22])
    assert m["t"] == [round(1.7e9 + 101.0, 3), round(1.7e9 + 102.0, 3), round(1.7e9 + 103.001, 3),
                      round(1.7e9 + 104.001, 3)]
    # a ring one second behind (its file not rewritten yet) cuts the last second off
    m = merge_series([a, ring(102.0, [0, 10])], history=300)
    assert m["cache_requests"] == pytest.approx([2, 2, 12])
    # one ring: the same numbers as a single worker's series; history bounds the length
    assert merge_series([a], history=300)["cache_requests"] == series_of(a, 300)["cache_requests"]
    assert len(merge_series([a], history=2)["t"]) == 2


# --- the files ----------------------------------------------------------------------------------


def test_prom_header_roundtrip() -> None:
    line = prom_header(1, 2, 1234, 1700000000.25, 5678)
    assert parse_prom_header(line) == {"index": 1, "count": 2, "pid": 1234, "start": 5678, "written": 1700000000.25}
    assert parse_prom_header("# HELP x y\n") is None


def test_pid_alive() -> None:
    me = os.getpid()
    assert pid_alive(me)
    start = process_start(me)
    if Path("/proc/self/stat").exists():
        assert start > 0
        assert pid_alive(me, start)
        assert not pid_alive(me, start + 1)  # the pid now belongs to another process than the one recorded
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert not pid_alive(p.pid)
    assert not pid_alive(0)


async def test_workers_publish_and_read_each_other(tmp_path: Path) -> None:
    run_dir = tmp_path / "cache" / ".rangeproxy"
    ws = [Worker(), Worker()]
    peers = [Peers(WorkerInfo(i, 2, run_dir), w.stats, w.metrics, lambda w=w: w.engine) for i, w in enumerate(ws)]
    ws[0].response("http://o/a", "HIT", cache=S)
    ws[1].response("http://o/a", "MISS", origin=S)
    ws[1].response("http://o/b", "MISS", origin=S)
    assert peers[0].read_metrics() == [] and peers[0].read_stats() == []  # nothing published yet
    for p in peers:
        await p.publish()
    d = run_dir / "workers"
    assert sorted(f.name for f in d.iterdir()) == ["0.json", "0.prom", "1.json", "1.prom"]  # no temporary left

    [text] = peers[0].read_metrics()  # the other worker's only, never its own
    assert parse_prom_header(text.partition("\n")[0])["index"] == 1
    assert val(samples_of(text), "rangeproxy_requests_total", method="GET", status_class="2xx") == 2
    [exp] = peers[0].read_stats()
    assert exp["index"] == 1 and exp["pid"] == os.getpid() and exp["requests"] == 2 and 0 <= exp["age"] < 5
    merged = samples_of(merge_expositions([ws[0].metrics.render().decode(), *peers[0].read_metrics()]))
    assert val(merged, "rangeproxy_requests_total", method="GET", status_class="2xx") == 3
    vol = SimpleNamespace(bytes=0, entries=0, objects=0, evictions=0)
    snap = await ws[0].stats.snapshot(vol, peers=peers[0].read_stats(), worker=peers[0].worker)
    assert snap["totals"]["requests"] == 3
    assert [w["requests"] for w in snap["workers"]["per_worker"]] == [1, 2]

    # A later publication replaces the earlier one.
    ws[1].response("http://o/b", "HIT", cache=S)
    peers[1].publish_now()
    assert peers[0].read_stats()[0]["requests"] == 3

    # Another run's files (a different worker count) are not this run's.
    other = Worker()
    await Peers(WorkerInfo(2, 3, run_dir), other.stats, other.metrics, lambda: other.engine).publish()
    assert [e["index"] for e in peers[0].read_stats()] == [1]

    # Gone workers: no update for STALE_AFTER seconds (mtime or the written time), or the process exited.
    old = time.time() - 10
    for name in ("1.prom", "1.json"):
        os.utime(d / name, (old, old))
    assert peers[0].read_metrics() == [] and peers[0].read_stats() == []
    peers[1].publish_now()
    assert len(peers[0].read_stats()) == 1
    doc = json.loads((d / "1.json").read_bytes())
    doc["written"] = old
    (d / "1.json").write_text(json.dumps(doc))
    assert peers[0].read_stats() == []
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    doc.update(written=time.time(), pid=dead.pid)
    (d / "1.json").write_text(json.dumps(doc))
    text = (d / "1.prom").read_text()
    (d / "1.prom").write_text(prom_header(1, 2, dead.pid, time.time()) + text.partition("\n")[2])
    assert peers[0].read_metrics() == [] and peers[0].read_stats() == []
    if process_start(os.getpid()):  # a live pid that is not the process that wrote the file
        doc.update(pid=os.getpid(), start=process_start(os.getpid()) + 1)
        (d / "1.json").write_text(json.dumps(doc))
        (d / "1.prom").write_text(prom_header(1, 2, os.getpid(), time.time(), doc["start"]) + text.partition("\n")[2])
        assert peers[0].read_metrics() == [] and peers[0].read_stats() == []

    # Damaged files are skipped, not fatal.
    (d / "1.json").write_text("{not json")
    (d / "1.prom").write_text("no header\n")
    assert peers[0].read_metrics() == [] and peers[0].read_stats() == []


async def test_publishing_failure_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")  # run_dir below a regular file: mkdir fails
    w = Worker()
    p = Peers(WorkerInfo(0, 2, blocker / "run"), w.stats, w.metrics, lambda: w.engine)
    await p.publish_or_log()
    await p.publish_or_log()
    assert sum("publishing its stats" in r.getMessage() for r in caplog.records) == 1
