"""Prometheus metrics: one ``CollectorRegistry`` per app, never the global one.

Two kinds of series:

* per-response ones (requests, durations, time to first byte) are prometheus-client
  Counters and Histograms, fed by :meth:`Metrics.observe` (the handler's observer);
* the engine's own counters (``Engine.counters``, the store's tallies, the gauges)
  stay plain Python objects: :class:`EngineCollector` reads them at scrape time,
  so the engine never imports prometheus-client.

Labels have small fixed value sets (method, status class, cache status, source,
result, outcome, the origin's status code); never a URL.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

__all__ = [
    "Metrics",
    "EngineCollector",
    "CacheVolume",
    "CONTENT_TYPE_LATEST",
    "METHODS",
    "CACHE_STATUSES",
    "method_label",
    "status_class",
    "cache_label",
]

NS = "rangeproxy"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# ResponseInfo.cache_status values, as label values ("-": answered without a body from the
# cache path, e.g. 304, 416, a rejected request).
CACHE_STATUSES = ("HIT", "MISS", "PARTIAL", "PASS", "ERROR", "-")
# Seconds: from a sendfile hit (well under 1 ms) to a slow cold fetch of a big range.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0, float("inf"))


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


def cache_label(cache_status: str) -> str:
    return cache_status.lower() if cache_status in CACHE_STATUSES and cache_status != "-" else "none"


class CacheVolume:
    """The store's size, refreshed (off the event loop) before a scrape and read by the collector.

    ``objects`` and ``evictions`` are None while the store cannot tell them.
    """

    def __init__(self) -> None:
        self.bytes = 0
        self.entries = 0
        self.objects: int | None = None
        self.evictions: int | None = None
        self.updated = 0.0  # time.monotonic() of the last refresh; 0: never

    async def refresh(self, store: Any, max_age: float = 0.0) -> "CacheVolume":
        """Ask the store again unless the last answer is younger than ``max_age`` seconds."""
        if self.updated and time.monotonic() - self.updated < max_age:
            return self
        vol = await store.volume()
        self.bytes, self.entries = int(vol[0]), int(vol[1])
        if len(vol) > 2:  # a store that also counts objects
            self.objects = int(vol[2])
        else:
            self.objects = await _object_count(store)
        ev = getattr(store, "evictions", None)
        self.evictions = ev if isinstance(ev, int) and not isinstance(ev, bool) else None
        self.updated = time.monotonic()
        return self


async def _object_count(store: Any) -> int | None:
    """Objects (metadata records) in the store.

    Uses ``store.object_count()`` when the store has it. Until then: one indexed
    COUNT over the metadata keys (``m\\x00<url>``, see proxy/store.py), on the
    store's own thread pool; None if that is not possible.
    """
    fn = getattr(store, "object_count", None)
    if fn is not None:
        return int(await fn())
    cache = getattr(store, "_cache", None)
    run = getattr(store, "_run", None)
    if cache is None or run is None or not hasattr(cache, "_sql"):
        return None

    def count() -> int:
        row = cache._sql("SELECT COUNT(*) FROM Cache WHERE key >= ? AND key < ?", ("m\x00", "m\x01")).fetchone()
        return int(row[0])

    try:
        return await run(count)
    except Exception:  # noqa: BLE001 - a different store layout: say "unknown", never fail a scrape
        return None


class EngineCollector(Collector):
    """Reads the engine's plain counters at scrape time (the engine is bound after startup)."""

    def __init__(self, get_engine: Callable[[], Any], volume: CacheVolume, settings: Any,
                 extra: Callable[[], dict[str, tuple[str, str, float]]] | None = None) -> None:
        self._engine = get_engine
        self._volume = volume
        self._settings = settings
        self._extra = extra

    def describe(self) -> list[Metric]:
        return []  # dynamic: do not let the registry call collect() at registration

    def collect(self) -> Iterator[Metric]:
        engine = self._engine()
        if engine is None:
            return
        c = engine.counters
        store = engine.store

        m = CounterMetricFamily(f"{NS}_response_bytes", "Body bytes sent to clients, by where they came from "
                                "(cache: stored slices; origin: fetched for this response or joined in flight).",
                                labels=["source"], unit="bytes")
        for source in ("cache", "origin"):
            m.add_metric([source], c.response_bytes.get(source, 0))
        yield m

        m = CounterMetricFamily(f"{NS}_slice_lookups", "Slices a response needed, by result (hit: stored; miss: "
                                "fetched by this response; collapsed: joined a fetch already in flight).",
                                labels=["result"])
        for result in ("hit", "miss", "collapsed"):
            m.add_metric([result], c.slice_lookups.get(result, 0))
        yield m

        m = CounterMetricFamily(f"{NS}_upstream_requests", "Requests the proxy made to the origin, by the origin's "
                                "status code (none: no answer) and outcome (ok, mismatch, error, timeout).",
                                labels=["status", "outcome"])
        for (status, outcome), n in sorted(c.upstream.items()):
            m.add_metric([str(status), str(outcome)], n)
        yield m

        yield CounterMetricFamily(f"{NS}_upstream_bytes", "Body bytes received from the origin.",
                                  value=c.upstream_bytes, unit="bytes")
        yield CounterMetricFamily(f"{NS}_upstream_seconds", "Seconds spent in requests to the origin "
                                  "(summed over concurrent requests).", value=c.upstream_seconds, unit="seconds")
        yield CounterMetricFamily(f"{NS}_origin_version_changes", "Times the origin's validator (ETag / "
                                  "Last-Modified / length) changed for a cached object.", value=c.version_changes)

        prefetches = getattr(c, "prefetches", None)
        if prefetches is not None:
            yield CounterMetricFamily(f"{NS}_read_ahead_runs", "Read-ahead runs started for sequential readers "
                                      "(their bytes count in upstream bytes, not in response bytes).",
                                      value=prefetches)
        yield GaugeMetricFamily(f"{NS}_slice_fetches_in_flight", "Slices being filled from the origin right now.",
                                value=engine.in_flight())
        yield GaugeMetricFamily(f"{NS}_responses_waiting", "Responses currently reading slices (from the store "
                                "or waiting on fills).", value=engine.waiting())

        vol = self._volume
        yield GaugeMetricFamily(f"{NS}_cache_size_bytes", "Bytes the cache occupies on disk.", value=vol.bytes)
        yield GaugeMetricFamily(f"{NS}_cache_limit_bytes", "The configured cache size limit (cache_size).",
                                value=self._settings.cache_size)
        yield GaugeMetricFamily(f"{NS}_cache_entries", "Entries in the cache (slices plus metadata records).",
                                value=vol.entries)
        if vol.objects is not None:
            yield GaugeMetricFamily(f"{NS}_cache_objects", "Objects whose metadata is in the cache.",
                                    value=vol.objects)
        if vol.evictions is not None:
            yield CounterMetricFamily(f"{NS}_cache_evictions", "Cache entries removed by LRU eviction to stay "
                                      "under cache_size.", value=vol.evictions)
        yield CounterMetricFamily(f"{NS}_cache_corrupt_dropped", "Cache entries found damaged (wrong length, "
                                  "unreadable) and dropped instead of being served.",
                                  value=getattr(store, "corrupt_dropped", 0))
        if self._extra is not None:
            for name, (kind, doc, value) in self._extra().items():
                fam = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                yield fam(f"{NS}_{name}", doc, value=value)


class Metrics:
    """The registry of one app and the per-response series."""

    def __init__(self, settings: Any, get_engine: Callable[[], Any],
                 extra: Callable[[], dict[str, tuple[str, str, float]]] | None = None,
                 process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.volume = CacheVolume()
        self.requests = Counter("requests", "Client requests proxied (admin paths excluded), by method and "
                                "status class.", ["method", "status_class"], namespace=NS, registry=r)
        self.duration = Histogram("request_duration_seconds", "Time from the request to the last body byte "
                                  "sent, by cache status.", ["cache_status"], namespace=NS, registry=r,
                                  buckets=DURATION_BUCKETS)
        self.ttfb = Histogram("time_to_first_byte_seconds", "Time from the request to the first body byte "
                              "(or the headers of a body-less answer), by cache status.", ["cache_status"],
                              namespace=NS, registry=r, buckets=DURATION_BUCKETS)
        self.aborted = Counter("responses_aborted", "Responses cut short (client gone, or origin fault after the "
                               "headers).", namespace=NS, registry=r)
        for cs in ("hit", "miss", "partial", "pass", "error"):
            self.duration.labels(cs)
            self.ttfb.labels(cs)
        for method in ("GET", "HEAD"):
            for sc in ("2xx", "3xx", "4xx", "5xx"):
                self.requests.labels(method, sc)
        r.register(EngineCollector(get_engine, self.volume, settings, extra))
        if process:
            ProcessCollector(namespace="", registry=r)

    def observe(self, method: str, status: int, cache_status: str, duration: float, ttfb: float | None,
                aborted: bool) -> None:
        self.requests.labels(method_label(method), status_class(status)).inc()
        cs = cache_label(cache_status)
        self.duration.labels(cs).observe(max(0.0, duration))
        if ttfb is not None:
            self.ttfb.labels(cs).observe(max(0.0, ttfb))
        if aborted:
            self.aborted.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
