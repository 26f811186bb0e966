"""Usage statistics for ``/stats.json`` (and the ``/stats`` page that draws it).

Everything is bounded, whatever the traffic:

* a ring of one sample per second (cumulative counts, ``HISTORY`` seconds): the
  charts and the last-minute rates are differences between samples;
* reservoirs of the most recent response durations / times to first byte
  (``RESERVOIR`` each, overall and per cache status) for p50/p95/p99;
* bytes served per object in a dict of at most ``2 * TRACKED`` URLs, cut back to the
  ``TRACKED`` biggest when it grows past that (so the top list is exact while fewer
  than ``TRACKED`` objects are served, and approximate beyond).

The engine's own counters (``Engine.counters``, the store's tallies) are read
when a sample or a snapshot is taken; this module only adds what a response tells
(through the handler's observer).

With several worker processes, each one publishes :meth:`Stats.export` (its counts,
per-second samples, reservoirs and its top objects) and the worker answering
``/stats.json`` passes the others' exports to :meth:`Stats.snapshot`, which adds them up
(see ``proxy.workers.peers``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from proxy.observe.metrics import status_class
from proxy.observe.view import EngineView

__all__ = ["Stats", "percentiles", "to_ranges", "map_indices", "cached_bytes", "series_of", "rates_of",
           "merge_series", "merge_rates", "timings", "HISTORY", "RATE_WINDOW"]

log = logging.getLogger("rangeproxy.stats")
HISTORY = 300  # seconds of per-second samples (the charts)
RATE_WINDOW = 60  # seconds the "rates" cover
RESERVOIR = 2048  # most recent durations kept for percentiles (overall; per cache status the same)
TRACKED = 1000  # objects whose bytes served are tracked exactly
TOP = 10  # objects in the snapshot
MAP_TTL = 2.0  # seconds a top object's slice map is reused by later snapshots (see _slice_map)
QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
LATENCY_STATUSES = ("HIT", "MISS", "PARTIAL", "PASS")
PUBLISHED_OBJECTS = 100  # objects (the most bytes served) a worker's export carries for the merged top list
SOURCES = ("cache", "origin", "error")
LOOKUPS = ("hit", "miss", "collapsed")


def percentiles(values: Iterable[float]) -> dict[str, float | None]:
    """Nearest-rank p50/p95/p99 of ``values`` (None when there are none)."""
    xs = sorted(values)
    n = len(xs)
    if not n:
        return {name: None for name, _ in QUANTILES}
    return {name: xs[max(0, math.ceil(q * n) - 1)] for name, q in QUANTILES}


def to_ranges(indices: Iterable[int]) -> list[list[int]]:
    """Sorted slice indices as ``[[start, stop), ...]`` runs: ``[0, 1, 2, 5]`` -> ``[[0, 3], [5, 6]]``."""
    out: list[list[int]] = []
    for i in sorted(set(indices)):
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out


def map_indices(items: Iterable[Any]) -> list[int]:
    """Slice indices from a slice map list: ints, or (slice, part) units of a slice."""
    out = set()
    for x in items:
        out.add(int(x[0]) if isinstance(x, (tuple, list)) else int(x))
    return sorted(out)


def cached_bytes(indices: Sequence[int], length: int, slice_size: int) -> int:
    """Bytes held by the given slices of an object of ``length`` bytes (the last slice may be short)."""
    total = 0
    for i in indices:
        start = i * slice_size
        total += max(0, min(slice_size, length - start))
    return total


def _ratio(num: float, den: float) -> float | None:
    return None if den <= 0 else num / den


@dataclass
class ObjStat:
    bytes: int = 0
    cache_bytes: int = 0
    origin_bytes: int = 0
    requests: int = 0
    length: int | None = None
    last_seen: float = 0.0


@dataclass(frozen=True, slots=True)
class Sample:
    """Cumulative counts at one moment."""

    wall: float
    mono: float
    req_cache: int
    req_origin: int
    req_error: int
    bytes_cache: int
    bytes_origin: int
    bytes_upstream: int


def _row(s: Sample) -> list[float]:
    """A sample as a JSON list (``Sample(*row)`` makes it again)."""
    return [s.wall, s.mono, s.req_cache, s.req_origin, s.req_error, s.bytes_cache, s.bytes_origin, s.bytes_upstream]


SERIES_KEYS = ("t", "cache_requests", "origin_requests", "error_requests", "cache_bytes", "origin_bytes",
               "upstream_bytes")


def series_of(ring: Sequence[Sample], history: int) -> dict[str, Any]:
    """The per-second chart series from a ring of cumulative samples."""
    out: dict[str, list[float]] = {k: [] for k in SERIES_KEYS}
    for a, b in zip(ring, ring[1:]):
        dt = b.mono - a.mono
        if dt <= 0:
            continue
        out["t"].append(round(b.wall, 3))
        out["cache_requests"].append((b.req_cache - a.req_cache) / dt)
        out["origin_requests"].append((b.req_origin - a.req_origin) / dt)
        out["error_requests"].append((b.req_error - a.req_error) / dt)
        out["cache_bytes"].append((b.bytes_cache - a.bytes_cache) / dt)
        out["origin_bytes"].append((b.bytes_origin - a.bytes_origin) / dt)
        out["upstream_bytes"].append((b.bytes_upstream - a.bytes_upstream) / dt)
    return {"interval_seconds": 1, "history_seconds": history, **out}


def merge_series(rings: Sequence[Sequence[Sample]], history: int) -> dict[str, Any]:
    """The chart series of several workers' rings, added up second by second.

    Every worker takes its sample at the same whole second of the (system-wide) monotonic
    clock, so a point is keyed by that second; points after the last second every ring has
    reached are left out (a worker's published ring may be a moment behind the live one).
    """
    per_second: dict[int, list[float]] = {}  # key -> [wall, 6 rates summed over workers]
    cut: int | None = None
    for ring in rings:
        if not ring:
            continue
        last = round(ring[-1].mono)
        cut = last if cut is None else min(cut, last)
        acc: dict[int, list[float]] = {}  # this ring: key -> [wall, dt, 6 deltas]
        for a, b in zip(ring, ring[1:]):
            dt = b.mono - a.mono
            if dt <= 0:
                continue
            row = acc.setdefault(round(b.mono), [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
            row[0] = max(row[0], b.wall)
            row[1] += dt
            for j, d in enumerate((b.req_cache - a.req_cache, b.req_origin - a.req_origin,
                                   b.req_error - a.req_error, b.bytes_cache - a.bytes_cache,
                                   b.bytes_origin - a.bytes_origin, b.bytes_upstream - a.bytes_upstream)):
                row[2 + j] += d
        for key, row in acc.items():
            tot = per_second.setdefault(key, [0.0] * 7)
            tot[0] = max(tot[0], row[0])
            for j in range(6):
                tot[1 + j] += row[2 + j] / row[1]
    out: dict[str, list[float]] = {k: [] for k in SERIES_KEYS}
    keys = sorted(k for k in per_second if cut is None or k <= cut)[-history:]
    for key in keys:
        tot = per_second[key]
        out["t"].append(round(tot[0], 3))
        for j, name in enumerate(SERIES_KEYS[1:]):
            out[name].append(tot[1 + j])
    return {"interval_seconds": 1, "history_seconds": history, **out}


def rates_of(ring: Iterable[Sample], now: Sample) -> dict[str, Any]:
    """Rates over the last ``RATE_WINDOW`` seconds: ``now`` against the oldest sample within it."""
    base = None
    for s in ring:  # the oldest sample within the window (the ring is in time order)
        if now.mono - s.mono <= RATE_WINDOW + 0.5:
            base = s
            break
    if base is None or now.mono - base.mono <= 0:
        span = 0.0
        base = now
    else:
        span = now.mono - base.mono
    per = (lambda x: x / span) if span > 0 else (lambda x: 0.0)
    cache_r, origin_r, error_r = (now.req_cache - base.req_cache, now.req_origin - base.req_origin,
                                  now.req_error - base.req_error)
    return {
        "window_seconds": round(span, 3),
        "requests_per_second": per(cache_r + origin_r + error_r),
        "cache_requests_per_second": per(cache_r),
        "origin_requests_per_second": per(origin_r),
        "error_requests_per_second": per(error_r),
        "cache_bytes_per_second": per(now.bytes_cache - base.bytes_cache),
        "origin_bytes_per_second": per(now.bytes_origin - base.bytes_origin),
        "upstream_bytes_per_second": per(now.bytes_upstream - base.bytes_upstream),
    }


def merge_rates(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several workers' rates: per-second rates summed, the window the longest of theirs."""
    out: dict[str, Any] = {"window_seconds": max((p["window_seconds"] for p in parts), default=0.0)}
    for key in ("requests_per_second", "cache_requests_per_second", "origin_requests_per_second",
                "error_requests_per_second", "cache_bytes_per_second", "origin_bytes_per_second",
                "upstream_bytes_per_second"):
        out[key] = sum(p[key] for p in parts)
    return out


def latency_of(durations: Sequence[float], ttfbs: Sequence[float],
               by_status: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> dict[str, Any]:
    by = {}
    for cs, (d, t) in by_status.items():
        if d:
            by[cs] = {"samples": len(d), "duration_seconds": percentiles(d), "ttfb_seconds": percentiles(t)}
    return {"samples": len(durations), "duration_seconds": percentiles(durations),
            "ttfb_seconds": percentiles(ttfbs), "by_cache_status": by}


def timings(info: Any) -> tuple[float, float | None]:
    """(duration, time to first byte) of a finished response (``info``: handlers.ResponseInfo, whose
    ``finished`` the handler always sets before calling its observer), neither below 0."""
    duration = max(0.0, info.finished - info.started)
    ttfb = info.ttfb()
    return duration, (None if ttfb is None else max(0.0, ttfb))


def _ranked(objects: Mapping[str, ObjStat], n: int | None, *, served_only: bool = True) -> list[tuple[str, ObjStat]]:
    """The ``n`` objects (None: all) with the most bytes served, the most recently seen first on a tie;
    ``served_only``: only those with body bytes served."""
    items = [(u, o) for u, o in objects.items() if o.bytes > 0] if served_only else objects.items()
    return sorted(items, key=lambda kv: (kv[1].bytes, kv[1].last_seen), reverse=True)[:n]


def request_class(status: int, cache_status: str) -> str:
    """Where a response came from, for the request-rate chart: cache, origin or error."""
    if cache_status == "ERROR" or status >= 500:
        return "error"
    if cache_status in ("MISS", "PARTIAL", "PASS"):
        return "origin"
    return "cache"  # HIT, or answered from metadata alone (304, 416, HEAD of a known object)


def origins_export(engine: EngineView | None, requests: Mapping[str, Counter[str]]) -> list[dict[str, Any]]:
    """This worker's numbers per origin: requests by class, bytes, upstream outcomes, health."""
    out = []
    for name, c, health in engine.origin_states() if engine is not None else []:
        by = requests.get(name, Counter())
        out.append({
            "name": name,
            "requests": {k: by.get(k, 0) for k in SOURCES},
            "response_bytes": {k: c.response_bytes.get(k, 0) for k in ("cache", "origin")},
            "upstream_bytes": c.upstream_bytes,
            "upstream_requests": sum(c.upstream.values()),
            # No answer, or a 5xx: what moves a request to the next upstream (an origin's 404 is an answer).
            "upstream_failures": sum(n for (status, _), n in c.upstream.items() if status == "none" or status[:1] == "5"),
            "upstreams": health,
        })
    return out


def merge_origins(parts: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The workers' per-origin numbers added up; the health is the first worker's (this one's)
    view, as each worker keeps its own passive health."""
    merged: dict[str, dict[str, Any]] = {}
    for part in parts:
        for o in part:
            m = merged.get(o["name"])
            if m is None:
                merged[o["name"]] = {**o, "requests": dict(o["requests"]), "response_bytes": dict(o["response_bytes"])}
                continue
            for field in ("requests", "response_bytes"):
                for k, v in o[field].items():
                    m[field][k] = m[field].get(k, 0) + v
            for field in ("upstream_bytes", "upstream_requests", "upstream_failures"):
                m[field] += o[field]
    for m in merged.values():
        served = sum(m["response_bytes"].values())
        m["hit_ratio_bytes"] = _ratio(m["response_bytes"]["cache"], served)
    return sorted(merged.values(), key=lambda m: m["name"])


class Stats:
    """Per-app statistics: fed by the observer, sampled every second, snapshotted for /stats.json."""

    def __init__(self, settings: Any, *, history: int = HISTORY, reservoir: int = RESERVOIR,
                 tracked: int = TRACKED, top: int = TOP) -> None:
        self.settings = settings
        self.started_wall = time.time()
        self.started_mono = time.monotonic()
        self.history = history
        self.tracked = tracked
        self.top = top
        self.engine: EngineView | None = None
        self.requests = 0
        self.by_cache_status: Counter[str] = Counter()
        self.by_status_class: Counter[str] = Counter()
        self.by_class: Counter[str] = Counter()  # cache | origin | error
        self.by_origin: dict[str, Counter[str]] = {}  # origin name -> requests by class
        self.aborted = 0
        self.purges = 0
        self.scrub: Callable[[], dict[str, int]] = dict  # the scrubber's counts (proxy.cache.scrubber), set by the app
        self.feeds: Callable[[], dict[str, Any]] = dict  # each origin's change feed (proxy.cache.changefeed), by the app
        self._durations: deque[float] = deque(maxlen=reservoir)
        self._ttfbs: deque[float] = deque(maxlen=reservoir)
        self._by_status_lat: dict[str, tuple[deque[float], deque[float]]] = {
            cs: (deque(maxlen=reservoir), deque(maxlen=reservoir)) for cs in LATENCY_STATUSES
        }
        self.objects: dict[str, ObjStat] = {}
        self._ring: deque[Sample] = deque(maxlen=history + 1)
        self._maps: dict[str, tuple[float, dict[str, Any] | None]] = {}

    # --- feeding ---------------------------------------------------------------------

    def bind(self, engine: EngineView) -> None:
        """Start counting against ``engine`` (called once the app has started)."""
        self.engine = engine
        self._ring.clear()
        self.tick()

    def observe(self, method: str, status: int, info: Any, duration: float | None = None,
                ttfb: float | None = None, sclass: str | None = None) -> None:
        """One finished proxied response (``info``: handlers.ResponseInfo).

        The app's observer passes what it has already worked out for the metrics: ``duration``
        and ``ttfb`` (from :func:`timings`) and ``sclass`` (``metrics.status_class(status)``);
        without ``duration`` they are taken from ``info`` here.
        """
        cs = info.cache_status
        if duration is None:
            duration, ttfb = timings(info)
        self.requests += 1
        self.by_cache_status[cs] += 1
        self.by_status_class[sclass if sclass is not None else status_class(status)] += 1
        rc = request_class(status, cs)
        self.by_class[rc] += 1
        if info.origin:
            self.by_origin.setdefault(info.origin, Counter())[rc] += 1
        if info.aborted:
            self.aborted += 1
        self._durations.append(duration)
        if ttfb is not None:
            self._ttfbs.append(ttfb)
        lat = self._by_status_lat.get(cs)
        if lat is not None:
            lat[0].append(duration)
            if ttfb is not None:
                lat[1].append(ttfb)
        tally = info.tally
        sent = tally.cache_bytes + tally.origin_bytes
        self._maps.pop(info.url, None)
        if info.url and method in ("GET", "HEAD") and (sent or info.object_length is not None):
            obj = self.objects.get(info.url)
            if obj is None:
                obj = self.objects[info.url] = ObjStat()
                if len(self.objects) > 2 * self.tracked:
                    self._prune()
                    obj = self.objects.setdefault(info.url, obj)
            obj.bytes += sent
            obj.cache_bytes += tally.cache_bytes
            obj.origin_bytes += tally.origin_bytes
            obj.requests += 1
            if info.object_length is not None:
                obj.length = info.object_length
            obj.last_seen = time.time()

    def _prune(self) -> None:
        self.objects = dict(_ranked(self.objects, self.tracked, served_only=False))

    def forget_map(self, url: str) -> None:
        """Drop the cached slice map of ``url`` (after a purge: the next snapshot asks again)."""
        self._maps.pop(url, None)

    def _cumulative(self) -> Sample:
        c = self.engine.counters if self.engine is not None else None
        return Sample(
            time.time(), time.monotonic(),
            self.by_class["cache"], self.by_class["origin"], self.by_class["error"],
            c.response_bytes.get("cache", 0) if c else 0,
            c.response_bytes.get("origin", 0) if c else 0,
            c.upstream_bytes if c else 0,
        )

    def tick(self) -> None:
        """Take the per-second sample (the app calls this once a second)."""
        self._ring.append(self._cumulative())

    # --- reading -----------------------------------------------------------------------

    def _series(self) -> dict[str, Any]:
        return series_of(list(self._ring), self.history)

    def _rates(self, now: Sample) -> dict[str, Any]:
        return rates_of(self._ring, now)

    def _latency(self) -> dict[str, Any]:
        return latency_of(self._durations, self._ttfbs, self._by_status_lat)

    async def _slice_map(self, url: str) -> dict[str, Any] | None:
        # A map is reused for MAP_TTL seconds unless a response for the object came in meanwhile
        # (observe() drops it) or it had slices in flight (those are about to change).
        hit = self._maps.get(url)
        now = time.monotonic()
        if hit is not None and now - hit[0] < MAP_TTL:
            return hit[1]
        try:
            sm = await self.engine.slice_map(url) if self.engine is not None else None
        except Exception:  # noqa: BLE001 - one object's map must not take the whole snapshot down
            log.exception("slice map of %s failed", url)
            sm = None
        if sm is None or not sm.get("in_flight"):
            self._maps[url] = (now, sm)
        return sm

    async def _top_objects(self, objects: Mapping[str, ObjStat] | None = None) -> list[dict[str, Any]]:
        objects = self.objects if objects is None else objects
        ranked = _ranked(objects, self.top)
        shown = {u for u, _ in ranked}
        for url in [u for u in self._maps if u not in shown]:
            del self._maps[url]
        S = self.settings.slice_size
        out = []
        for url, o in ranked:
            sm = await self._slice_map(url)
            origin, base = self.engine.origin_of(url) if self.engine is not None else ("", "")
            path = url[len(base):] if base and url.startswith(base) else url
            entry: dict[str, Any] = {
                "path": path or "/", "url": url, "origin": origin, "bytes_served": o.bytes, "cache_bytes": o.cache_bytes,
                "origin_bytes": o.origin_bytes, "requests": o.requests, "last_seen": round(o.last_seen, 3),
                "hit_ratio_bytes": _ratio(o.cache_bytes, o.bytes),
            }
            length: int | None  # None (and so the slice count) while nobody knows the length
            n: int | None
            if sm is not None:
                length, slice_size, n = int(sm["length"]), int(sm["slice_size"]), int(sm["slices"])
                cached = map_indices(sm["cached"])
                held = set(cached)
                flying = [i for i in map_indices(sm["in_flight"]) if i not in held]
                partial = [i for i in map_indices(sm.get("partial", ())) if i not in held]
                entry.update({
                    "in_cache": True, "length": length, "slice_size": slice_size, "slices": n,
                    "cached_slices": len(cached), "in_flight_slices": len(flying),
                    "cached_fraction": 1.0 if length == 0 else cached_bytes(cached, length, slice_size) / length,
                    "partial_slices": len(partial),
                    "cached": to_ranges(cached), "partial": to_ranges(partial), "in_flight": to_ranges(flying),
                    "content_type": sm.get("content_type"),
                })
            else:  # not (or no longer) in the cache: purged, evicted, or never storable
                length = o.length
                n = None if length is None else (length + S - 1) // S
                entry.update({
                    "in_cache": False, "length": length, "slice_size": S, "slices": n, "cached_slices": 0,
                    "in_flight_slices": 0, "partial_slices": 0, "cached_fraction": 0.0 if length else None,
                    "cached": [], "partial": [], "in_flight": [], "content_type": None,
                })
            out.append(entry)
        return out

    def export(self, objects: int | None = PUBLISHED_OBJECTS) -> dict[str, Any]:
        """This worker's raw material for a snapshot of the whole proxy (plain JSON types).

        Counts, the gauges, the per-second ring and the current cumulative sample, the latency
        reservoirs, and the ``objects`` objects with the most bytes served (all with None).
        """
        engine = self.engine
        c = engine.counters if engine is not None else None
        store = engine.store if engine is not None else None
        ranked = _ranked(self.objects, objects) if objects is None or objects > 0 else []
        return {
            "started": self.started_wall,
            "started_mono": self.started_mono,
            "requests": self.requests,
            "by_cache_status": dict(self.by_cache_status),
            "by_status_class": dict(self.by_status_class),
            "by_class": {k: self.by_class[k] for k in SOURCES},
            "aborted": self.aborted,
            "purges": self.purges,
            "scrub": self.scrub(),
            "feeds": self.feeds(),
            "slice_lookups": {k: (c.slice_lookups.get(k, 0) if c else 0) for k in LOOKUPS},
            "upstream": [[str(status), str(outcome), n] for (status, outcome), n in c.upstream.items()] if c else [],
            "upstream_seconds": c.upstream_seconds if c else 0.0,
            "version_changes": c.version_changes if c else 0,
            "read_ahead_runs": c.prefetches if c else 0,
            "corrupt_dropped": store.corrupt_dropped if store is not None else 0,
            "cache_writable": store.writability.state() if store is not None else None,
            "write_errors": sum(store.writability.errors.values()) if store is not None else 0,
            "evictions": store.evictions if store is not None else None,
            "in_flight": engine.in_flight() if engine is not None else 0,
            "waiting": engine.waiting() if engine is not None else 0,
            "now": _row(self._cumulative()),
            "ring": [_row(x) for x in self._ring],
            "durations": list(self._durations),
            "ttfbs": list(self._ttfbs),
            "latency_by_cache_status": {cs: [list(d), list(t)] for cs, (d, t) in self._by_status_lat.items()},
            "origins": origins_export(engine, self.by_origin),
            "objects": [[u, o.bytes, o.cache_bytes, o.origin_bytes, o.requests, o.length, o.last_seen]
                        for u, o in ranked],
        }

    async def snapshot(self, volume: Any, peers: Sequence[Mapping[str, Any]] | None = None,
                       worker: Any = None) -> dict[str, Any]:
        """The /stats.json document (see the README for every field).

        ``peers``: the other workers' :meth:`export` (each with ``"index"``, ``"pid"`` and
        ``"age"``: seconds since it was published); counts are then those of the whole proxy,
        and ``worker`` (this one's ``WorkerInfo``) adds the ``workers`` field. Without
        ``peers`` the document is this process's alone.
        """
        local = self.export(objects=0)
        exports = [local, *(peers or ())]
        multi = peers is not None
        now = Sample(*local["now"])
        if not multi:
            resp_cache, resp_origin, bytes_upstream = now.bytes_cache, now.bytes_origin, now.bytes_upstream
        else:
            nows = [Sample(*e["now"]) for e in exports]
            resp_cache = sum(n.bytes_cache for n in nows)
            resp_origin = sum(n.bytes_origin for n in nows)
            bytes_upstream = sum(n.bytes_upstream for n in nows)
        served = resp_cache + resp_origin
        requests = sum(e["requests"] for e in exports)
        by_cache_status: Counter[str] = Counter()
        by_status_class: Counter[str] = Counter()
        by_class: Counter[str] = Counter()
        upstream_by_outcome: Counter[str] = Counter()
        upstream_by_status: Counter[str] = Counter()
        lookups = {k: 0 for k in LOOKUPS}
        for e in exports:
            by_cache_status.update(e["by_cache_status"])
            by_status_class.update(e["by_status_class"])
            by_class.update(e["by_class"])
            for status, outcome, n in e["upstream"]:
                upstream_by_outcome[outcome] += n
                upstream_by_status[status] += n
            for k in LOOKUPS:
                lookups[k] += e["slice_lookups"].get(k, 0)
        upstream_requests = sum(upstream_by_outcome.values())
        hit_req = by_cache_status["HIT"]
        cacheable = hit_req + by_cache_status["MISS"] + by_cache_status["PARTIAL"]
        if not multi:
            started, uptime = self.started_wall, now.mono - self.started_mono
            rates, latency, series = self._rates(now), self._latency(), self._series()
            evictions = volume.evictions
            top = await self._top_objects()
        else:
            started = min(e["started"] for e in exports)
            uptime = now.mono - min(e["started_mono"] for e in exports)
            rates = merge_rates([rates_of([Sample(*r) for r in e["ring"]], Sample(*e["now"])) for e in exports])
            by_status = {cs: ([x for e in exports for x in e["latency_by_cache_status"].get(cs, ((), ()))[0]],
                              [x for e in exports for x in e["latency_by_cache_status"].get(cs, ((), ()))[1]])
                         for cs in LATENCY_STATUSES}
            latency = latency_of([x for e in exports for x in e["durations"]],
                                 [x for e in exports for x in e["ttfbs"]], by_status)
            series = merge_series([list(self._ring)] + [[Sample(*r) for r in e["ring"]] for e in exports[1:]],
                                  self.history)
            evs = [e["evictions"] for e in exports if e["evictions"] is not None]
            evictions = sum(evs) if evs else volume.evictions
            top = await self._top_objects(self._merged_objects(exports[1:]))
        doc: dict[str, Any] = {
            "version": 1,
            "now": round(now.wall, 3),
            "started": round(started, 3),
            "uptime_seconds": round(uptime, 3),
            "node": self.settings.node_name,  # the fleet's name for this node (X-Cache-Node)
            "upstream": self.settings.upstream,
            "origins": merge_origins([e.get("origins", []) for e in exports]),
            # Each origin's change feed, as the worker that subscribes it sees it (proxy.web.feeds).
            "change_feeds": {name: f for e in exports for name, f in sorted(e.get("feeds", {}).items())},
            "slice_size": self.settings.slice_size,
            "totals": {
                "requests": requests,
                "requests_by_cache_status": dict(by_cache_status),
                "requests_by_status_class": dict(by_status_class),
                "requests_by_source": {k: by_class[k] for k in SOURCES},
                "responses_aborted": sum(e["aborted"] for e in exports),
                "response_bytes": {"cache": resp_cache, "origin": resp_origin, "total": served},
                "slice_lookups": lookups,
                "upstream_requests": upstream_requests,
                "upstream_requests_by_outcome": {k: upstream_by_outcome.get(k, 0)
                                                 for k in ("ok", "mismatch", "error", "timeout")},
                "upstream_requests_by_status": dict(upstream_by_status),
                "upstream_bytes": bytes_upstream,
                "upstream_seconds": round(sum(e["upstream_seconds"] for e in exports), 6),
                "origin_version_changes": sum(e["version_changes"] for e in exports),
                "read_ahead_runs": sum(e["read_ahead_runs"] for e in exports),
                "purges": sum(e["purges"] for e in exports),
            },
            "rates": rates,
            "ratios": {
                "hit_ratio_bytes": _ratio(resp_cache, served),
                "hit_ratio_requests": _ratio(hit_req, cacheable),
                "slice_hit_ratio": _ratio(lookups["hit"], sum(lookups.values())),
            },
            "offload": {
                "bytes": None if served <= 0 else 1.0 - bytes_upstream / served,
                "requests": None if requests <= 0 else 1.0 - upstream_requests / requests,
            },
            "latency": latency,
            "gauges": {
                "slice_fetches_in_flight": sum(e["in_flight"] for e in exports),
                "responses_waiting": sum(e["waiting"] for e in exports),
            },
            "cache": {  # bytes, entries, objects: the one store all workers share, as this worker reads it
                "bytes": volume.bytes,
                "limit_bytes": self.settings.cache_size,
                "entries": volume.entries,
                "objects": volume.objects,
                "evictions": evictions,
                "corrupt_dropped": sum(e["corrupt_dropped"] for e in exports),
                # This worker's (each writes its own files); False when any worker's writes fail.
                "writable": all((e.get("cache_writable") or {}).get("writable", True) for e in exports),
                "write_reason": next((w["reason"] for w in (e.get("cache_writable") for e in exports)
                                      if w and not w["writable"]), None),
                "write_errors": sum(e.get("write_errors", 0) for e in exports),
                # The scrubber's (one worker's): files read back, and those found damaged.
                "scrubbed": sum(e.get("scrub", {}).get("slices", 0) for e in exports),
                "scrub_corrupt": sum(e.get("scrub", {}).get("corrupt", 0) for e in exports),
                "orphans_removed": sum(e.get("scrub", {}).get("orphans", 0) for e in exports),
            },
            "series": series,
            "top_objects": top,
            "admin": {
                "purge_prefix": self.settings.purge_prefix,
                "purge_enabled": bool(self.settings.admin_token),
                "stats_protected": bool(self.settings.protect_stats),
            },
        }
        if worker is not None:
            doc["workers"] = {
                "count": worker.count,
                "reporting": len(exports),
                "answered_by": worker.index,
                "per_worker": sorted(({"index": e.get("index", worker.index), "pid": e.get("pid", worker.pid),
                                       "requests": e["requests"], "age_seconds": round(e.get("age", 0.0), 3)}
                                      for e in exports), key=lambda w: w["index"]),
            }
        return doc

    def _merged_objects(self, peers: Sequence[Mapping[str, Any]]) -> dict[str, ObjStat]:
        """Bytes served per object, this worker's added to what the others published."""
        merged = {u: ObjStat(o.bytes, o.cache_bytes, o.origin_bytes, o.requests, o.length, o.last_seen)
                  for u, o in self.objects.items()}
        for e in peers:
            for url, nbytes, cache_b, origin_b, reqs, length, last_seen in e["objects"]:
                o = merged.get(url)
                if o is None:
                    o = merged[url] = ObjStat()
                o.bytes += nbytes
                o.cache_bytes += cache_b
                o.origin_bytes += origin_b
                o.requests += reqs
                if length is not None and (o.length is None or last_seen >= o.last_seen):
                    o.length = length
                o.last_seen = max(o.last_seen, last_seen)
        return merged
