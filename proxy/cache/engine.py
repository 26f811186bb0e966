"""The slice cache engine: object metadata, upstream runs, and the byte stream of a response.

Glue between the pure planner (``slices``), the store (diskcache, off-loop), the
origin (``upstream``) and the in-flight fills (``flights``). Every upstream answer
is verified (``representation.check_piece``) before any byte of it is used; a
changed validator drops the object and fails every fill of the old version, so
two versions are never spliced into one response.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from proxy.cache.assemble import Assembly, FilePiece, RequestTally, close_pieces
from proxy.cache.budget import ByteBudget
from proxy.core.settings import Settings
from proxy.core.counters import Counters
from proxy.workers.claims import UnitClaims
from proxy.http.errors import (
    RangeNotSatisfiable,
    UpstreamError,
    UpstreamMismatch,
    VersionChanged,
)
from proxy.cache.fetching import CLAIM_POLL, Fetching
from proxy.cache.flights import ObjectFlights, SliceFill
from proxy.http.ranges import Span, parse_content_range
from proxy.core.representation import (
    ObjectMeta,
    freshness,
    meta_from_response,
    same_version,
)
from proxy.core.slices import (
    Unit,
    slice_count,
    unit_slice,
    unit_span,
)
from proxy.cache.store import SliceStore
from proxy.cache.upstream import Upstream
from proxy.workers.info import RUN_DIR_NAME

__all__ = ["Engine", "MetaLease", "Counters", "RequestTally", "FilePiece", "close_pieces"]

log = logging.getLogger("rangeproxy.engine")
STORE_FLUSH_TIMEOUT = 10.0  # seconds a clean stop waits for slice writes under way
INVALIDATION_POLL = 0.2  # seconds between looks at what other workers invalidated
TOUCH_INTERVAL = 5.0  # seconds between LRU updates for hits served from held fds
META_MEMORY = 10_000  # objects whose metadata is kept in memory (the store has all of them)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MetaLease:
    """An object's metadata, plus interest the discovery run holds for the initiator."""

    meta: ObjectMeta
    held: tuple[Unit, ...] | None = None  # units the initiator's discovery run is fetching


def _register_until_done(tasks: dict[str, asyncio.Task[T]], url: str, task: asyncio.Task[T]) -> None:
    """Keep ``task`` in ``tasks`` under ``url`` until it is done (unless replaced meanwhile)."""
    tasks[url] = task

    def done(t: asyncio.Task[T]) -> None:
        if tasks.get(url) is t:
            del tasks[url]
    task.add_done_callback(done)

class Engine(Fetching, Assembly):
    """Objects' metadata (learn once, revalidate once), invalidation, and the shared state
    the fetching and assembling halves work on."""

    def __init__(self, settings: Settings, store: SliceStore, upstream: Upstream) -> None:
        self.settings = settings
        self.store = store
        self.upstream = upstream
        self.slice_size = settings.slice_size
        self.block_size = min(settings.block_size, settings.slice_size)
        self.counters = Counters()
        self.fill_budget = ByteBudget(settings.fill_memory)
        self._meta: OrderedDict[str, ObjectMeta] = OrderedDict()  # hot metadata, LRU-bounded
        self._meta_futs: dict[str, asyncio.Future[MetaLease]] = {}
        self._meta_reads: dict[str, asyncio.Task[ObjectMeta | None]] = {}
        self._meta_writes: dict[str, asyncio.Task[None]] = {}  # background metadata writes
        self._flights: dict[str, ObjectFlights] = {}
        self._evicting: dict[str, asyncio.Future[None]] = {}
        # Several worker processes share the cache directory: claims keep one origin fetch
        # per unit across them, and a log tells the others what one of them invalidated.
        self.claims: UnitClaims | None = None
        self._inval_log: Path | None = None
        self._inval_seen = 0
        if settings.workers > 1:
            run_dir = Path(settings.cache_dir) / RUN_DIR_NAME
            self.claims = UnitClaims(run_dir)
            self._inval_log = run_dir / "invalidations"
            self._inval_log.touch()
            self._inval_seen = self._inval_log.stat().st_size
        self._tasks: set[asyncio.Task[None]] = set()
        self.active_streams = 0
        self.storing: set[asyncio.Task[None]] = set()
        self._reading: OrderedDict[str, tuple[int, int]] = OrderedDict()  # url -> (end of last cut, bytes in a row)

    # --- bookkeeping ---------------------------------------------------------------

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def flights_for(self, meta: ObjectMeta) -> ObjectFlights:
        fl = self._flights.get(meta.url)
        if fl is None or fl.validator != meta.validator or fl.dead:
            fl = ObjectFlights(meta.validator, meta.url)
            self._flights[meta.url] = fl
        return fl

    def release_held(self, meta: ObjectMeta, units: tuple[Unit, ...]) -> None:
        """Drop the interest a discovery run held for the response that started it."""
        fl = self._flights.get(meta.url)
        if fl is not None and fl.validator == meta.validator:
            fl.release(units)
            self._forget_idle(meta.url, fl)

    def in_flight(self) -> int:
        """Slices being filled from the origin right now."""
        return sum(len(f.fills) for f in self._flights.values())

    def waiting(self) -> int:
        """Responses currently reading slices (from the store or from fills)."""
        return self.active_streams

    async def slice_map(self, url: str) -> dict[str, object] | None:
        """Which slices of ``url`` are cached, in flight, or missing (for the dashboard)."""
        meta = self._meta.get(url) or await self.store.get_meta(url)
        if meta is None:
            return None
        n = slice_count(meta.length, self.slice_size)
        cached = await self.store.present(url, meta.validator, range(n))
        fl = self._flights.get(url)
        flying = sorted({unit_slice(u) for u in fl.fills}) if fl is not None and fl.validator == meta.validator else []
        # Slices only partly here, as blocks from small random reads (held files only).
        partial = sorted({u[0] for u in self.store.held_units(url, meta.validator) if not isinstance(u, int)}
                         - cached)
        return {"url": url, "length": meta.length, "slice_size": self.slice_size, "slices": n,
                "cached": sorted(cached), "partial": partial, "in_flight": flying, "etag": meta.etag,
                "content_type": meta.content_type}

    async def start(self) -> None:
        self._spawn(self._housekeeping())
        if self._inval_log is not None:
            self._spawn(self._follow_invalidations())

    async def _follow_invalidations(self) -> None:
        """Apply what other workers invalidated (purge, origin change, unsafe method)."""
        assert self._inval_log is not None
        me = f"{os.getpid()} "
        while True:
            await asyncio.sleep(INVALIDATION_POLL)
            try:
                size = self._inval_log.stat().st_size
                if size <= self._inval_seen:
                    continue
                with open(self._inval_log, "rb") as f:
                    f.seek(self._inval_seen)
                    data = f.read(size - self._inval_seen)
                end = data.rfind(b"\n") + 1
                self._inval_seen += end
                for line in data[:end].decode("utf-8", "surrogateescape").splitlines():
                    if line.startswith(me) or " " not in line:
                        continue
                    self._forget_object(line.split(" ", 1)[1], "invalidated by another worker")
            except OSError as exc:
                log.warning("cannot read the invalidation log: %s", exc)

    def _forget_object(self, url: str, reason: str) -> None:
        fl = self._flights.pop(url, None)
        if fl is not None:
            fl.fail_all(VersionChanged(f"{url}: {reason}"))
        self._meta.pop(url, None)
        self.store.forget_fds(url)

    async def _housekeeping(self) -> None:
        """Report fd-served hits to diskcache's LRU now and then."""
        while True:
            await asyncio.sleep(TOUCH_INTERVAL)
            try:
                await self.store.flush_touches()
            except Exception as exc:  # noqa: BLE001 - never let bookkeeping kill the loop
                log.warning("cache LRU update failed: %s", exc)

    async def close(self) -> None:
        # Slices already verified are worth keeping: let their writes finish (bounded).
        if self.storing:
            await asyncio.wait(list(self.storing), timeout=STORE_FLUSH_TIMEOUT)
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def invalidate(self, url: str, reason: str) -> None:
        """Drop an object: its fills fail, its slices and metadata leave the store."""
        self._forget_object(url, reason)
        if self._inval_log is not None:
            with open(self._inval_log, "ab") as f:  # one O_APPEND write per line: no interleaving
                f.write(f"{os.getpid()} {url}\n".encode("utf-8", "surrogateescape"))
        # Until the store has dropped it, nobody may read the old metadata back from disk.
        done = asyncio.get_running_loop().create_future()
        self._evicting[url] = done
        try:
            pending = self._meta_writes.get(url)
            if pending is not None:  # a write landing after the eviction would bring it back
                await asyncio.wait([pending])
            await self.store.evict_object(url)
        finally:
            done.set_result(None)
            if self._evicting.get(url) is done:
                del self._evicting[url]

    # --- metadata: learn once, revalidate once per object ---------------------------------

    def fresh_meta(self, url: str) -> ObjectMeta | None:
        """Metadata already in memory and fresh, or None (then ``object_meta``)."""
        meta = self._meta.get(url)
        if meta is not None and meta.is_fresh(time.time()):
            return meta
        return None

    async def object_meta(self, url: str, hint: list[Unit]) -> MetaLease:
        """Fresh metadata for ``url``; concurrent callers share one discovery/revalidation."""
        meta = self._meta.get(url)
        if meta is None and url not in self._meta_futs:
            evicting = self._evicting.get(url)
            if evicting is not None:
                await asyncio.shield(evicting)
            stored = await self._read_meta(url)
            # A discovery here may have learnt it (and not written it yet) during the await.
            meta = self._meta.get(url) or stored
            if meta is not None:
                self._cache_meta(meta)
        elif meta is not None:
            self._meta.move_to_end(url)
        now = time.time()
        if meta is not None and meta.is_fresh(now):
            return MetaLease(meta)
        fut = self._meta_futs.get(url)
        initiator = fut is None
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._meta_futs[url] = fut
            if meta is not None:
                self._spawn(self._revalidate(meta, fut, hint))
            else:
                self._spawn(self._discover(url, hint, fut))
        lease = await asyncio.shield(fut)
        return lease if initiator else MetaLease(lease.meta)

    def _cache_meta(self, meta: ObjectMeta) -> None:
        self._meta[meta.url] = meta
        self._meta.move_to_end(meta.url)
        while len(self._meta) > META_MEMORY:
            self._meta.popitem(last=False)

    def _settle(self, url: str, fut: asyncio.Future[MetaLease], result: MetaLease | BaseException) -> None:
        if self._meta_futs.get(url) is fut:
            del self._meta_futs[url]
        if fut.done():
            return
        if isinstance(result, BaseException):
            fut.set_exception(result)
            fut.exception()  # mark retrieved: waiters may all have gone
        else:
            fut.set_result(result)

    def _persist_meta(self, meta: ObjectMeta) -> None:
        """Write metadata in the background (a clean stop waits for it, like slices)."""
        async def write() -> None:
            try:
                await self.store.put_meta(meta)
            except Exception as exc:  # noqa: BLE001 - memory still has it; the next discovery rewrites it
                log.error("cannot store the metadata of %s: %r", meta.url, exc)

        _register_until_done(self._meta_writes, meta.url, self._store_task(write()))

    async def _read_meta(self, url: str) -> ObjectMeta | None:
        """Stored metadata; concurrent first requests for one URL share one index read."""
        task = self._meta_reads.get(url)
        if task is None:
            task = asyncio.get_running_loop().create_task(self.store.get_meta(url))
            _register_until_done(self._meta_reads, url, task)
        return await asyncio.shield(task)

    async def _remember(self, meta: ObjectMeta) -> None:
        self._cache_meta(meta)
        if meta.storable:
            await self.store.put_meta(meta)

    def _units_span(self, units: list[Unit], length: int) -> Span:
        S, B = self.slice_size, self.block_size
        return Span(unit_span(units[0], S, B, length).start, unit_span(units[-1], S, B, length).end)

    async def _discover(self, url: str, hint: list[Unit], fut: asyncio.Future[MetaLease], attempt: int = 0) -> None:
        """Learn an object from its first ranged GET, and keep filling the units it brings."""
        S = self.slice_size
        huge = 2**62  # the length is not known yet: unit spans are not clipped
        claimed = self._claim_prefix(url, hint)
        if not claimed:
            # Another worker is learning this object: wait, then take its metadata from the store.
            key = self._claim_key(url, hint[0])
            deadline = time.monotonic() + self.settings.upstream_read_timeout + 30
            while self.claims is not None and self.claims.held_elsewhere(key) and time.monotonic() < deadline:
                await asyncio.sleep(CLAIM_POLL)
            meta = await self.store.get_meta(url)
            if meta is not None and meta.is_fresh(time.time()):
                self._cache_meta(meta)
                self._settle(url, fut, MetaLease(meta))
                return
            claimed = self._claim_prefix(url, hint) or hint[:1]  # it failed over there: learn it here
        elif self.claims is not None:
            # Claimed just as another worker finished learning it? Then its metadata is stored.
            meta = await self.store.get_meta(url)
            if meta is not None and meta.is_fresh(time.time()):
                self._unclaim(url, claimed)
                self._cache_meta(meta)
                self._settle(url, fut, MetaLease(meta))
                return
        hint = claimed
        asked = self._units_span(hint, huge)
        fills: dict[Unit, SliceFill] = {}
        try:
            async with self._upstream(url, asked) as resp:
                now = time.time()
                if resp.status == 416:
                    cr = parse_content_range(resp.headers.get("Content-Range"))
                    if cr is None or cr.length is None:
                        raise UpstreamError(f"{url}: 416 without a complete length")
                    if cr.length == 0:
                        meta = ObjectMeta(url, 0, resp.headers.get("ETag"), resp.headers.get("Last-Modified"),
                                          resp.headers.get("Content-Type"), now,
                                          freshness(resp.headers, now, self.settings.default_ttl).ttl)
                        await self._remember(meta)
                        self._settle(url, fut, MetaLease(meta))
                        return
                    if attempt == 0:
                        # Asked past the end: learn the object from its first slice instead.
                        self._spawn(self._discover(url, [0], fut, attempt + 1))
                        return
                    raise RangeNotSatisfiable(cr.length)
                if resp.status not in (200, 206):
                    raise await self.upstream.error_status(resp)
                meta = meta_from_response(url, resp.status, resp.headers, now, self.settings.default_ttl)
                if meta is None:
                    raise UpstreamError(f"{url}: origin answer {resp.status} has no usable length")
                if resp.status == 206:
                    expect = Span(asked.start, min(asked.end, meta.length))
                    got = parse_content_range(resp.headers.get("Content-Range"))
                    if got is None or got.span != expect:
                        raise UpstreamMismatch(f"{url}: unexpected Content-Range "
                                               f"{resp.headers.get('Content-Range')!r}, expected {expect}")
                    cl = resp.headers.get("Content-Length")
                    if cl is not None and not (cl.isascii() and cl.isdigit() and int(cl) == expect.size):
                        raise UpstreamMismatch(f"{url}: Content-Length {cl} != {expect.size}")
                self._cache_meta(meta)
                fl = self.flights_for(meta)
                run = self._takeable(fl, [u for u in hint if unit_span(u, S, self.block_size, huge).start < meta.length])
                fills.update(self._register(fl, meta, run))
                fl.want(run)  # held for the initiator until it registers its own interest
                self._settle(url, fut, MetaLease(meta, tuple(run)))  # waiters go on at once
                if meta.storable:
                    if self.claims is None:
                        self._persist_meta(meta)  # written beside the body, not before its first byte
                    else:
                        # Other workers read it from the store once our first unit is released.
                        await self.store.put_meta(meta)
                skip = asked.start if resp.status == 200 else 0
                try:
                    await self._pump(resp, meta, fl, run, fills, skip)
                except BaseException as exc:
                    self._abandon(fl, fills, exc if isinstance(exc, Exception) else UpstreamError(repr(exc)))
                    raise
                finally:
                    self._forget_idle(url, fl)
        except BaseException as exc:  # noqa: BLE001 - every failure reaches the waiters
            if not fut.done():
                self._settle(url, fut, exc if isinstance(exc, Exception) else UpstreamError(repr(exc)))
            if not isinstance(exc, Exception):
                raise
            self._log_fault(url, exc)
        finally:
            self._unclaim(url, [u for u in claimed if u not in fills])  # fills release their own

    def _takeable(self, fl: ObjectFlights, run: list[Unit]) -> list[Unit]:
        """Leading units of ``run`` not already in flight (a run stays contiguous)."""
        out: list[Unit] = []
        for u in run:
            if u in fl.fills or (not isinstance(u, int) and u[0] in fl.fills):
                break
            out.append(u)
        return out

    async def _revalidate(self, meta: ObjectMeta, fut: asyncio.Future[MetaLease], hint: range) -> None:
        """One conditional request per object (RFC 9111 §4.3), not one per slice."""
        url = meta.url
        hdrs = {}
        if meta.etag:
            hdrs["If-None-Match"] = meta.etag
        if meta.last_modified:
            hdrs["If-Modified-Since"] = meta.last_modified
        try:
            async with self._upstream(url, Span(0, 1) if meta.length else None, hdrs) as resp:
                now = time.time()
                if resp.status == 304:
                    # RFC 9111 §4.3.4: the 304's own freshness headers update the stored ones.
                    fresh = freshness(resp.headers, now, self.settings.default_ttl)
                    new = meta.revalidated(now, fresh.ttl)
                    await self._remember(new)
                    self._settle(url, fut, MetaLease(new))
                    return
                if resp.status in (200, 206):
                    length: int | None
                    if resp.status == 206:
                        cr = parse_content_range(resp.headers.get("Content-Range"))
                        length = cr.length if cr else None
                    else:
                        cl = resp.headers.get("Content-Length")
                        length = int(cl) if cl and cl.isdigit() else None
                    if same_version(meta, resp.headers, length) is None:
                        fresh = freshness(resp.headers, now, self.settings.default_ttl)
                        new = meta.revalidated(now, fresh.ttl)
                        await self._remember(new)
                        self._settle(url, fut, MetaLease(new))
                        return
                    self.counters.version_changes += 1
                    log.info("origin changed %s: validator %r -> %r", url, meta.etag or meta.last_modified,
                             resp.headers.get("ETag") or resp.headers.get("Last-Modified"))
                    await self.invalidate(url, "validator changed on revalidation")
                elif resp.status in (404, 410):
                    err = await self.upstream.error_status(resp)
                    await self.invalidate(url, f"origin answered {resp.status}")
                    raise err
                else:
                    # RFC 9111 §4.2.4: a stale response may be served when the origin errs.
                    log.warning("revalidation of %s answered %s: serving stale", url, resp.status)
                    self._settle(url, fut, MetaLease(meta))
                    return
        except UpstreamError as exc:
            if getattr(exc, "status", None) in (404, 410):
                self._settle(url, fut, exc)
                return
            log.warning("revalidation of %s failed (%s): serving stale", url, exc)
            self._settle(url, fut, MetaLease(meta))
            return
        except BaseException as exc:
            self._settle(url, fut, exc if isinstance(exc, Exception) else UpstreamError(repr(exc)))
            raise
        # Changed: learn the new version now (the waiters get it, whole).
        await self._discover(url, hint, fut)

    # --- runs: one upstream Range request fills contiguous slices ---------------------------
