"""The slice cache engine: a facade over the parts that learn objects, fetch runs and read responses.

It wires the parts together (each gets its collaborators in its constructor) and
keeps the methods the web layer calls. Every upstream answer is verified before
any byte of it is used; a changed validator drops the object and fails every fill
of the old version, so two versions are never spliced into one response.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncGenerator

from proxy.cache.budget import ByteBudget
from proxy.cache.files import UnitFiles
from proxy.cache.flights import FlightRegistry, ObjectFlights
from proxy.cache.hits import HeldBody, HitReader
from proxy.cache.learning import ASK_NOTHING, ObjectLearning
from proxy.cache.metadata import MetaCache
from proxy.cache.origin import Origin
from proxy.cache.pieces import FilePiece, MetaLease, RequestTally
from proxy.cache.plan import CachePlanner
from proxy.cache.readahead import ReadAhead, SequentialReads
from proxy.cache.reader import ResponseReader
from proxy.cache.runs import RunLauncher
from proxy.cache.store import SliceStore
from proxy.cache.sync import SingleProcess, WorkerSync
from proxy.cache.tasks import Jobs
from proxy.cache.upstream import Upstream
from proxy.cache.statuses import StatusAnswers
from proxy.cache.varies import VaryIndex
from proxy.core.conditions import RequestDirectives
from proxy.core.counters import Counters
from proxy.core.fields import Fields
from proxy.core.forwarding import Forwarded
from proxy.core.statuses import StatusAnswer
from proxy.core.variants import ANY, is_variant, target_url, variant_key
from proxy.core.representation import ObjectMeta
from proxy.core.settings import Settings
from proxy.core.slices import SliceGeometry, SlicePlan, Unit, unit_slice
from proxy.http.errors import VersionChanged
from proxy.http.ranges import Span

__all__ = ["Engine"]

log = logging.getLogger("rangeproxy.engine")
STORE_FLUSH_TIMEOUT = 10.0  # seconds a clean stop waits for slice writes under way
INVALIDATION_POLL = 0.2  # seconds between looks at what other workers invalidated
TOUCH_INTERVAL = 5.0  # seconds between LRU updates for hits served from held fds


class Engine:
    """One origin's objects in the cache directory: metadata, runs, hits and response reads."""

    def __init__(self, settings: Settings, store: SliceStore, upstream: Upstream,
                 sync: WorkerSync | None = None, *, counters: Counters | None = None,
                 fill_budget: ByteBudget | None = None) -> None:
        self.settings = settings
        self.store = store
        self.upstream = upstream
        self.sync: WorkerSync = sync if sync is not None else SingleProcess()
        self.geometry = SliceGeometry.of(settings.slice_size, settings.block_size)
        self.slice_size = self.geometry.slice_size
        self.block_size = self.geometry.block_size
        # An origin's counters outlive its engine (a reload makes a new one); the budget is
        # the process's, shared by the engines of all origins.
        self.counters = counters if counters is not None else Counters()
        self.fill_budget = fill_budget if fill_budget is not None else ByteBudget(settings.fill_memory)
        self.jobs = Jobs()
        self.flights = FlightRegistry(self.geometry, self.fill_budget)
        self.files = UnitFiles(store, self.geometry)
        self.metas = MetaCache(store, self.jobs)
        self.runs = RunLauncher(settings, self.flights, self.files, Origin(upstream, self.counters), self.sync,
                                self.jobs, self.invalidate)
        self.runs.known = self.metas.hot
        self.varies = VaryIndex(settings.max_variants)
        self.statuses = StatusAnswers()
        self.learning = ObjectLearning(self.metas, self.runs, self.invalidate, self.varies, self.statuses)
        self.planner = CachePlanner(self.files, self.flights)
        self.hits = HitReader(self.files, self.counters)
        self.ahead = ReadAhead(self.runs, self.flights, SequentialReads())
        self.reader = ResponseReader(self.runs, self.ahead)

    @property
    def storing(self) -> set[asyncio.Task[None]]:
        """Writes to the store under way (verified slices, metadata)."""
        return self.jobs.storing

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        self.jobs.spawn(self._housekeeping())
        self.jobs.spawn(self._probe_cache())
        self.jobs.spawn(self._preload())
        if self.sync.shared:
            self.jobs.spawn(self._follow_invalidations())

    async def close(self) -> None:
        await self.jobs.close(STORE_FLUSH_TIMEOUT)

    async def _preload(self) -> None:
        t0 = time.monotonic()
        try:
            n = await self.metas.preload(self.upstream.base_url + "/")
        except Exception as exc:  # noqa: BLE001 - a cold memory is slower, not wrong
            log.warning("loading the metadata of %s failed: %s", self.upstream.base_url, exc)
            return
        if n:
            log.info("metadata of %d objects of %s in memory in %.1f s", n, self.upstream.base_url,
                     time.monotonic() - t0)

    async def _probe_cache(self) -> None:
        """While the cache directory is not writable, a probe write now and then (one per interval
        for all engines): it recovers by itself when space returns, traffic or not."""
        w = self.store.writability
        while True:
            await asyncio.sleep(w.retry_interval)
            if not w.writable:
                await asyncio.to_thread(w.probe)

    async def _housekeeping(self) -> None:
        """Report fd-served hits to diskcache's LRU now and then."""
        while True:
            await asyncio.sleep(TOUCH_INTERVAL)
            try:
                await self.store.flush_touches()
            except Exception as exc:  # noqa: BLE001 - never let bookkeeping kill the loop
                log.warning("cache LRU update failed: %s", exc)

    async def _follow_invalidations(self) -> None:
        """Apply what other workers invalidated (purge, origin change, unsafe method)."""
        while True:
            await asyncio.sleep(INVALIDATION_POLL)
            for url in self.sync.invalidated_elsewhere():
                self._forget_object(url, "invalidated by another worker")

    # --- objects ----------------------------------------------------------------------

    def fresh_meta(self, url: str) -> ObjectMeta | None:
        """Metadata already in memory and fresh, or None (then ``object_meta``)."""
        return self.learning.fresh(url)

    async def object_meta(self, url: str, hint: list[Unit], asks: RequestDirectives = ASK_NOTHING,
                          asking: Forwarded = Forwarded()) -> MetaLease:
        """Fresh metadata for ``url`` (or stale where allowed); concurrent callers share one
        discovery/revalidation."""
        return await self.learning.lease(url, hint, asks, asking)

    async def stored_meta(self, url: str, asks: RequestDirectives = ASK_NOTHING) -> MetaLease | None:
        """Metadata the cache holds that may answer without asking the origin."""
        return await self.learning.stored(url, asks)

    def _forget_object(self, url: str, reason: str) -> None:
        self.flights.fail_object(url, VersionChanged(f"{url}: {reason}"))
        self.learning.forget(url)
        self.metas.forget(url)
        self.store.forget_fds(url)

    def status_answer(self, key: str) -> StatusAnswer | None:
        """A stored answer other than 200/206 for this key, if fresh (proxy.core.statuses)."""
        return self.statuses.fresh(key)

    def pass_through(self, url: str) -> None:
        """Let ``url`` pass through for a while (proxy.cache.passes), e.g. an object too large to cache."""
        self.learning.passes.note(url, time.monotonic())

    def passing(self, url: str) -> bool:
        """Does ``url`` pass through (its last answer could not be stored)?"""
        return self.learning.passes.passing(url)

    def variant_of(self, url: str, fields: Fields) -> str | None:
        """The key of the variant a request with these fields selects, if ``url`` varies;
        :data:`~proxy.core.variants.ANY` as the key when nothing stored may be used."""
        names = self.varies.names(url)
        if names is None:
            return None
        if names == ANY:
            return ANY[0]
        key = variant_key(url, names, fields)
        for old in self.varies.use(url, key):
            self.jobs.spawn(self.invalidate(old, "more variants than max_variants"))
        return key

    async def invalidate_under(self, prefix: str, reason: str) -> list[str]:
        """Drop every object whose URL starts with ``prefix`` (stored, or in memory); their URLs."""
        keys = {*await self.store.keys_under(prefix), *self.metas.keys_under(prefix), *self.statuses.keys_under(prefix)}
        urls = sorted({target_url(k) for k in keys})
        for url in urls:
            await self.invalidate(url, reason)
        return urls

    async def invalidate(self, url: str, reason: str) -> None:
        """Drop an object: its fills fail, its slices and metadata leave the store. A URL
        (not one variant's key) takes all its variants with it."""
        keys = [url]
        if not is_variant(url):
            keys += {*self.varies.variants(url), *await self.store.variant_keys(url)}
            self.varies.forget(url)
        for key in keys:
            self.statuses.forget(key)
            self._forget_object(key, reason)
            self.sync.announce_invalidation(key)
            await self.metas.evict(key)

    # --- responses -------------------------------------------------------------------

    def held_plan(self, meta: ObjectMeta, spans: tuple[Span, ...]) -> SlicePlan | None:
        return self.planner.held_plan(meta, spans)

    async def plan(self, meta: ObjectMeta, spans: tuple[Span, ...],
                   fetched: tuple[Unit, ...] | None = None) -> SlicePlan:
        return await self.planner.plan(meta, spans, fetched)

    def stream(self, lease: MetaLease, spans: tuple[Span, ...], plan: SlicePlan,
               tally: RequestTally | None = None, files: bool = False,
               fields: Fields = ()) -> AsyncGenerator[bytes | FilePiece, None]:
        return self.reader.stream(lease, spans, plan, tally, files, fields)

    def hit_files(self, meta: ObjectMeta, pieces: tuple[bytes | Span, ...], tally: RequestTally) -> HeldBody | None:
        return self.hits.files_of(meta, pieces, tally)

    def hit_bytes(self, meta: ObjectMeta, pieces: tuple[bytes | Span, ...], tally: RequestTally) -> bytes | None:
        return self.hits.bytes_of(meta, pieces, tally)

    def note_hits(self, meta: ObjectMeta, spans: tuple[Span, ...]) -> None:
        self.ahead.note_hits(meta, spans)

    def release_held(self, lease: MetaLease) -> None:
        """Drop the interest a discovery run held for the response that started it."""
        self.learning.release_held(lease)

    def flights_for(self, meta: ObjectMeta) -> ObjectFlights:
        return self.flights.for_meta(meta)

    # --- what the dashboard and the metrics read ----------------------------------------

    def in_flight(self) -> int:
        """Slices being filled from the origin right now."""
        return self.flights.in_flight()

    def waiting(self) -> int:
        """Responses currently reading slices (from the store or from fills)."""
        return self.reader.active

    async def held_meta(self, url: str) -> ObjectMeta | None:
        """The metadata the cache holds for ``url``, in memory or stored, fresh or not."""
        return self.metas.hot(url) or await self.store.get_meta(url)

    async def slice_map(self, url: str) -> dict[str, object] | None:
        """Which slices of ``url`` are cached, in flight, or missing (for the dashboard)."""
        meta = await self.held_meta(url)
        if meta is None:
            return None
        n = self.geometry.slice_count(meta.length)
        # The fills as they are before the store query (as in CachePlanner.plan): a slice whose
        # write ends during the query leaves the flights and is not yet seen by the query, so
        # read after it, it would be neither cached nor in flight. A complete fill is cached.
        fl = self.flights.current(meta)
        fills = dict(fl.fills) if fl is not None else {}
        cached = await self.store.present(meta.url, meta.validator, range(n))
        cached.update(u for u, f in fills.items() if isinstance(u, int) and f.done and f.error is None)
        flying = sorted({unit_slice(u) for u, f in fills.items() if not f.done} - cached)
        # Slices only partly here, as blocks from small random reads (held files only).
        partial = sorted({u[0] for u in self.store.held_units(url, meta.validator) if not isinstance(u, int)}
                         - cached)
        return {"url": url, "length": meta.length, "slice_size": self.slice_size, "slices": n,
                "cached": sorted(cached), "partial": partial, "in_flight": flying, "etag": meta.etag,
                "content_type": meta.content_type}
