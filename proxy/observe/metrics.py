"""Prometheus metrics: one ``CollectorRegistry`` per app, never the global one.

Two kinds of series:

* per-response ones (requests, durations, time to first byte) are prometheus-client
  Counters and Histograms, fed by :meth:`Metrics.observe` (the handler's observer);
* the engine's own counters (``Engine.counters``, the store's tallies, the gauges)
  stay plain Python objects: :class:`EngineCollector` reads them at scrape time,
  so the engine never imports prometheus-client.

Labels have small fixed value sets (method, status class, cache status, source,
result, outcome, the origin's status code); never a URL.

With several worker processes (``workers`` > 1) each has its own registry;
:func:`merge_expositions` adds up their text expositions into one for the whole proxy.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from proxy.observe.series import Histogram, ResponseSeries
from proxy.observe.view import EngineView, StoreView

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
    "merge_expositions",
    "SHARED_STORE_GAUGES",
]

log = logging.getLogger("rangeproxy.metrics")

NS = "rangeproxy"
# An extra family from the app: (kind "counter" or "gauge", help, one value or values by reason),
# or (kind, help, values by label value, the label's name).
Extra = tuple[str, str, float | Mapping[str, float]] | tuple[str, str, Mapping[str, float], str]
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

    ``objects`` and ``evictions`` are None until the first refresh.
    """

    def __init__(self) -> None:
        self.bytes = 0
        self.entries = 0
        self.objects: int | None = None
        self.evictions: int | None = None
        self.updated = 0.0  # time.monotonic() of the last refresh; 0: never

    async def refresh(self, store: StoreView, max_age: float = 0.0) -> "CacheVolume":
        """Ask the store again unless the last answer is younger than ``max_age`` seconds."""
        if self.updated and time.monotonic() - self.updated < max_age:
            return self
        nbytes, entries = await store.volume()
        self.bytes, self.entries = int(nbytes), int(entries)
        self.objects = int(await store.object_count())
        self.evictions = store.evictions
        self.updated = time.monotonic()
        return self


class EngineCollector(Collector):
    """Reads the engine's plain counters at scrape time (the engine is bound after startup)."""

    def __init__(self, get_engine: Callable[[], EngineView | None], volume: CacheVolume, settings: Any,
                 extra: Callable[[], dict[str, Extra]] | None = None) -> None:
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

        yield CounterMetricFamily(f"{NS}_read_ahead_runs", "Read-ahead runs started for sequential readers "
                                  "(their bytes count in upstream bytes, not in response bytes).",
                                  value=c.prefetches)
        yield GaugeMetricFamily(f"{NS}_slice_fetches_in_flight", "Slices being filled from the origin right now.",
                                value=engine.in_flight())
        yield GaugeMetricFamily(f"{NS}_responses_waiting", "Responses currently reading slices (from the store "
                                "or waiting on fills).", value=engine.waiting())
        yield GaugeMetricFamily(f"{NS}_store_writes_pending", "Slices and metadata verified and waiting to be "
                                "written to the cache directory.", value=len(engine.storing))
        budget = engine.fill_budget
        yield GaugeMetricFamily(f"{NS}_fill_memory_bytes", "Bytes of slices held in memory while filled from the "
                                "origin or waiting for the disk (bounded by fill_memory).", value=budget.held)
        yield CounterMetricFamily(f"{NS}_fill_memory_waits", "Times an upstream request waited for room in "
                                  "fill_memory before reading its next slice.", value=budget.waits)

        yield from _per_origin(engine)

        vol = self._volume
        yield GaugeMetricFamily(f"{NS}_cache_size_bytes", "Bytes the cache occupies on disk.", value=vol.bytes)
        yield GaugeMetricFamily(f"{NS}_cache_limit_bytes", "The configured cache size limit (cache_size).",
                                value=self._settings.cache_size)
        yield GaugeMetricFamily(f"{NS}_cache_entries", "Entries in the cache (slices plus metadata records).",
                                value=vol.entries)
        if vol.objects is not None:
            yield GaugeMetricFamily(f"{NS}_cache_objects", "Objects whose metadata is in the cache.",
                                    value=vol.objects)
        yield CounterMetricFamily(f"{NS}_cache_evictions", "Cache entries removed by LRU eviction to stay "
                                  "under cache_size.", value=store.evictions)
        yield CounterMetricFamily(f"{NS}_cache_corrupt_dropped", "Cache entries found damaged (wrong length, "
                                  "unreadable) and dropped instead of being served.", value=store.corrupt_dropped)
        w = store.writability
        yield GaugeMetricFamily(f"{NS}_cache_writable", "1 while the cache directory takes writes; 0 while it does "
                                "not (full, read-only): answers then come from the origin (see /healthz).",
                                value=1.0 if w.writable else 0.0)
        m = CounterMetricFamily(f"{NS}_cache_write_errors", "Cache writes that failed on a disk fault, by reason "
                                "(no_space, read_only, io, other).", labels=["reason"])
        for reason, n in sorted(w.errors.items()):
            m.add_metric([reason], n)
        yield m
        if self._extra is not None:
            for name, (kind, doc, value, *label) in self._extra().items():
                fam = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                if isinstance(value, Mapping):  # by reason (or the label named): one sample per key
                    labelled = fam(f"{NS}_{name}", doc, labels=[label[0] if label else "reason"])
                    for reason, v in sorted(value.items()):
                        labelled.add_metric([reason], v)
                    yield labelled
                else:
                    yield fam(f"{NS}_{name}", doc, value=value)


def _per_origin(engine: EngineView) -> Iterator[Metric]:
    """The origin's share of the upstream and response counters, and its upstreams' health
    (label values bounded by the configuration: origin names and their upstream URLs)."""
    states = engine.origin_states()
    req = CounterMetricFamily(f"{NS}_origin_upstream_requests", "Requests to each origin's upstreams, by status "
                              "(none: no answer) and outcome (ok, mismatch, error, timeout).",
                              labels=["origin", "status", "outcome"])
    up_bytes = CounterMetricFamily(f"{NS}_origin_upstream_bytes", "Body bytes received from each origin.",
                                   labels=["origin"], unit="bytes")
    resp = CounterMetricFamily(f"{NS}_origin_response_bytes", "Body bytes sent to clients per origin, by where "
                               "they came from (cache, origin).", labels=["origin", "source"], unit="bytes")
    healthy = GaugeMetricFamily(f"{NS}_origin_upstream_healthy", "1 while an upstream URL of an origin is in its "
                                "failover order, 0 while it cools down after a failure.", labels=["origin", "upstream"])
    for name, c, health in states:
        for (status, outcome), n in sorted(c.upstream.items()):
            req.add_metric([name, str(status), str(outcome)], n)
        up_bytes.add_metric([name], c.upstream_bytes)
        for source in ("cache", "origin"):
            resp.add_metric([name, source], c.response_bytes.get(source, 0))
        for h in health:
            healthy.add_metric([name, str(h["base"])], 1.0 if h["healthy"] else 0.0)
    yield from (req, up_bytes, resp, healthy)


class Metrics:
    """The registry of one app and the per-response series."""

    def __init__(self, settings: Any, get_engine: Callable[[], EngineView | None],
                 extra: Callable[[], dict[str, Extra]] | None = None,
                 process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.volume = CacheVolume()
        self._children: dict[tuple[str, str, str], tuple[tuple[str, str], Histogram, Histogram]] = {}
        self.series = ResponseSeries(NS, DURATION_BUCKETS, ("hit", "miss", "partial", "pass", "error"),
                                     [(m, sc) for m in ("GET", "HEAD") for sc in ("2xx", "3xx", "4xx", "5xx")])
        r.register(self.series)
        r.register(EngineCollector(get_engine, self.volume, settings, extra))
        if process:
            ProcessCollector(namespace="", registry=r)

    def observe(self, method: str, status: int, cache_status: str, duration: float, ttfb: float | None,
                aborted: bool, sclass: str | None = None) -> None:
        """One finished response (``sclass``: ``status_class(status)`` when the caller has it already)."""
        # The labels of each (method, status, cache status) are worked out once.
        key = (method, sclass if sclass is not None else status_class(status), cache_status)
        children = self._children.get(key)
        if children is None:
            if len(self._children) > 4096:  # unknown methods are one label ("other"), not one key each
                self._children.clear()
            children = self._children[key] = ((method_label(method), key[1]),
                                              *self.series.histograms(cache_label(cache_status)))
        series = self.series
        series.requests[children[0]] = series.requests.get(children[0], 0) + 1
        children[1].observe(max(0.0, duration))
        if ttfb is not None:
            children[2].observe(max(0.0, ttfb))
        if aborted:
            series.aborted += 1

    def render(self) -> bytes:
        return generate_latest(self.registry)


# --- several workers: one exposition for the whole proxy --------------------------------------

# Gauges that describe the cache directory all workers share (not a worker's own share): one
# reading, never a sum. The first exposition's (the answering worker's, refreshed just before
# the scrape) wins; the others only fill in when it lacks the series (they may be old: a worker
# refreshes these only when it answers a scrape itself, so their max could predate a purge).
SHARED_STORE_GAUGES = frozenset({f"{NS}_cache_size_bytes", f"{NS}_cache_limit_bytes", f"{NS}_cache_entries",
                                 f"{NS}_cache_objects"})
# Per-process values that do not add up: the earliest start (the lowest), the largest limit.
_MIN_SAMPLES = frozenset({"process_start_time_seconds", f"{NS}_cache_writable"})  # writable: 0 if any worker is not
_MAX_SAMPLES = frozenset({"process_max_fds"})


def _combine(name: str, values: list[float]) -> float:
    """The proxy-wide value of sample ``name`` from its per-worker ``values`` (the answering worker's first)."""
    if name in SHARED_STORE_GAUGES:
        return values[0]
    if name.endswith("_created") or name in _MIN_SAMPLES:
        return min(values)
    if name in _MAX_SAMPLES:
        return max(values)
    return sum(values)


def merge_expositions(texts: Sequence[str], *, shared_from_first: bool = True) -> bytes:
    """Add up the text expositions of several workers into one (Prometheus text format 0.0.4).

    Samples with the same name and labels are summed (counters, histogram buckets, sums and
    counts, in-flight gauges, ``process_*`` memory/CPU/fds), except: the shared store's gauges
    (:data:`SHARED_STORE_GAUGES`: the value of ``texts[0]``, the answering worker's live
    registry, when it has the series; else the largest), ``*_created`` and the process start
    time (the earliest), ``process_max_fds`` (the largest). With ``shared_from_first=False``
    the shared gauges are the largest value everywhere. A text that does not parse is skipped.
    Families and samples keep the order in which they first appear.
    """
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], list[float]]] = {}
    labels_of: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, str]] = {}
    firsts: dict[tuple[str, tuple[tuple[str, str], ...]], bool] = {}
    for i, text in enumerate(texts):
        try:
            parsed = list(text_string_to_metric_families(text))
        except Exception as exc:  # noqa: BLE001 - one damaged file must not take the scrape down
            log.warning("skipping an exposition that does not parse: %s", exc)
            continue
        for fam in parsed:
            if fam.name not in families:
                families[fam.name] = Metric(fam.name, fam.documentation, fam.type)
                values[fam.name] = {}
            elif families[fam.name].type != fam.type:
                continue
            per = values[fam.name]
            for smp in fam.samples:
                key = (smp.name, tuple(sorted(smp.labels.items())))
                if key not in per:
                    per[key] = []
                    labels_of[key] = dict(smp.labels)
                    firsts[key] = i == 0
                per[key].append(float(smp.value))
    out: list[Metric] = []
    for name, fam in families.items():
        for key, vs in values[name].items():
            sname = key[0]
            if sname in SHARED_STORE_GAUGES and not (shared_from_first and firsts[key]):
                v = max(vs)
            else:
                v = _combine(sname, vs)
            fam.samples.append(Sample(sname, labels_of[key], v))
        out.append(fam)
    return generate_latest(_Families(out))


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)
