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
from collections import Counter, OrderedDict
from pathlib import Path
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator

import aiohttp

from proxy.config import Settings
from proxy.crossfill import UnitClaims
from proxy.errors import (
    ProxyError,
    RangeNotSatisfiable,
    UpstreamError,
    UpstreamMismatch,
    UpstreamStatus,
    UpstreamTimeout,
    VersionChanged,
)
from proxy.flights import FillAbandoned, ObjectFlights, SliceFill
from proxy.ranges import Span, parse_content_range
from proxy.representation import ObjectMeta, check_piece, freshness, meta_from_response, same_version
from proxy.slices import (
    SlicePlan,
    Unit,
    block_range,
    block_units,
    cuts,
    needed_slices,
    prefers_blocks,
    slice_count,
    slice_span,
    unit_slice,
    unit_span,
)
from proxy.store import SliceStore
from proxy.upstream import Upstream

__all__ = ["Engine", "MetaLease", "Counters", "RequestTally", "FilePiece", "close_pieces"]

log = logging.getLogger("rangeproxy.engine")
STORE_BEHIND = 4  # verified slices of one run that may wait for the disk at once
INVALIDATION_POLL = 0.2  # seconds between looks at what other workers invalidated
CLAIM_POLL = 0.002  # seconds between looks at a unit another worker is fetching
TOUCH_INTERVAL = 5.0  # seconds between LRU updates for hits served from held fds
META_MEMORY = 10_000  # objects whose metadata is kept in memory (the store has all of them)


@dataclass
class Counters:
    """Plain counters the metrics layer exports at scrape time (one per app: no globals)."""

    slice_lookups: Counter[str] = field(default_factory=Counter)  # hit | miss | collapsed
    upstream: Counter[tuple[str, str]] = field(default_factory=Counter)  # (status, ok|mismatch|error|timeout)
    upstream_bytes: int = 0
    upstream_seconds: float = 0.0
    response_bytes: Counter[str] = field(default_factory=Counter)  # cache | origin
    version_changes: int = 0
    prefetches: int = 0  # read-ahead runs started for sequential readers


@dataclass
class RequestTally:
    """What one response was made of: for X-Cache, the access log and per-request metrics."""

    cache_bytes: int = 0
    origin_bytes: int = 0
    hits: int = 0
    misses: int = 0
    collapsed: int = 0
    upstream_seconds: float = 0.0  # time this response waited on the origin (metadata, fills)


@dataclass(frozen=True, slots=True)
class FilePiece:
    """``count`` bytes at ``offset`` of an open slice file (a dup owned by the sender)."""

    fd: int
    offset: int
    count: int


def close_pieces(pieces: list[bytes | FilePiece]) -> None:
    for p in pieces:
        if isinstance(p, FilePiece):
            os.close(p.fd)


@dataclass(frozen=True, slots=True)
class MetaLease:
    """An object's metadata, plus interest the discovery run holds for the initiator."""

    meta: ObjectMeta
    held: tuple[Unit, ...] | None = None  # units the initiator's discovery run is fetching


class Engine:
    def __init__(self, settings: Settings, store: SliceStore, upstream: Upstream) -> None:
        self.settings = settings
        self.store = store
        self.upstream = upstream
        self.slice_size = settings.slice_size
        self.block_size = min(settings.block_size, settings.slice_size)
        self.counters = Counters()
        self._meta: OrderedDict[str, ObjectMeta] = OrderedDict()  # hot metadata, LRU-bounded
        self._meta_futs: dict[str, asyncio.Future[MetaLease]] = {}
        self._flights: dict[str, ObjectFlights] = {}
        self._evicting: dict[str, asyncio.Future[None]] = {}
        # Several worker processes share the cache directory: claims keep one origin fetch
        # per unit across them, and a log tells the others what one of them invalidated.
        self.claims: UnitClaims | None = None
        self._inval_log: Path | None = None
        self._inval_seen = 0
        if settings.workers > 1:
            run_dir = Path(settings.cache_dir) / ".rangeproxy"
            self.claims = UnitClaims(run_dir)
            self._inval_log = run_dir / "invalidations"
            self._inval_log.touch()
            self._inval_seen = self._inval_log.stat().st_size
        self._tasks: set[asyncio.Task[None]] = set()
        self.active_streams = 0
        self._reading: OrderedDict[str, tuple[int, int]] = OrderedDict()  # url -> (end of last cut read, streak)

    # --- bookkeeping ---------------------------------------------------------------

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @asynccontextmanager
    async def _upstream(self, url: str, span: Span | None,
                        headers: dict[str, str] | None = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """An upstream request, counted by status and outcome (ok, mismatch, error, timeout)."""
        status, outcome = "none", "ok"
        t0 = time.monotonic()
        try:
            async with self.upstream.get(url, span, headers) as resp:
                status = str(resp.status)
                yield resp
        except UpstreamTimeout:
            outcome = "timeout"
            raise
        except (UpstreamMismatch, VersionChanged):
            outcome = "mismatch"
            raise
        except BaseException:
            outcome = "error"
            raise
        finally:
            self.counters.upstream[(status, outcome)] += 1
            self.counters.upstream_seconds += time.monotonic() - t0

    def flights_for(self, meta: ObjectMeta) -> ObjectFlights:
        fl = self._flights.get(meta.url)
        if fl is None or fl.validator != meta.validator or fl.dead:
            fl = ObjectFlights(meta.validator, meta.url)
            self._flights[meta.url] = fl
        return fl

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
        if meta is None:
            evicting = self._evicting.get(url)
            if evicting is not None:
                await asyncio.shield(evicting)
            meta = await self.store.get_meta(url)
            if meta is not None:
                self._cache_meta(meta)
        else:
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
                await self._remember(meta)
                fl = self.flights_for(meta)
                run = self._takeable(fl, [u for u in hint if unit_span(u, S, self.block_size, huge).start < meta.length])
                fills.update(self._register(fl, meta, run))
                fl.want(run)  # held for the initiator until it registers its own interest
                self._settle(url, fut, MetaLease(meta, tuple(run)))
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

    def _register(self, fl: ObjectFlights, meta: ObjectMeta, run: list[Unit]) -> dict[Unit, SliceFill]:
        S, B = self.slice_size, self.block_size
        fills = {u: SliceFill(unit_slice(u), unit_span(u, S, B, meta.length).size) for u in run}
        fl.fills.update(fills)
        return fills

    def _fetchable(self, meta: ObjectMeta, fl: ObjectFlights, u: Unit, cached: frozenset[int]) -> bool:
        """Neither cached (at plan time, or stored since: its fd is held), nor in flight."""
        i = unit_slice(u)
        if i in fl.fills or self.store.cached_fd(meta.url, meta.validator, i) is not None:
            return False
        if isinstance(u, int):
            return u not in cached
        return u not in fl.fills and self.store.cached_fd(meta.url, meta.validator, u) is None

    def start_run(self, meta: ObjectMeta, fl: ObjectFlights, first: int, wanted: frozenset[int],
                  cached: frozenset[int], hold: bool = False) -> tuple[SliceFill, list[Unit]]:
        """Start fetching slice ``first`` and the contiguous wanted, uncached, idle slices after it."""
        run_end = first + 1
        limit = min(first + self.settings.max_run_slices, slice_count(meta.length, self.slice_size))
        while run_end < limit and run_end in wanted and self._fetchable(meta, fl, run_end, cached):
            run_end += 1
        run: list[Unit] = list(range(first, run_end))
        return self._launch(meta, fl, run, hold), run

    def start_block_run(self, meta: ObjectMeta, fl: ObjectFlights, i: int, blocks: range) -> tuple[SliceFill, list[Unit]]:
        """Start fetching block ``blocks.start`` of slice ``i`` and the idle missing blocks after it."""
        run: list[Unit] = [(i, blocks.start)]
        for k in blocks[1:]:
            if not self._fetchable(meta, fl, (i, k), frozenset()):
                break
            run.append((i, k))
        return self._launch(meta, fl, run, False), run

    def _claim_key(self, url: str, u: Unit) -> str:
        return f"{url}\x00{u}"

    def _claim_prefix(self, url: str, run: list[Unit]) -> list[Unit]:
        """The leading units of ``run`` this worker could claim (all, with one worker)."""
        if self.claims is None:
            return run
        out: list[Unit] = []
        for u in run:
            if not self.claims.try_claim(self._claim_key(url, u)):
                break
            out.append(u)
        return out

    def _unclaim(self, url: str, units: list[Unit] | dict[Unit, SliceFill]) -> None:
        if self.claims is not None:
            for u in units:
                self.claims.release(self._claim_key(url, u))

    def _launch(self, meta: ObjectMeta, fl: ObjectFlights, run: list[Unit], hold: bool) -> SliceFill:
        claimed = self._claim_prefix(meta.url, run)
        if not claimed:
            # Another worker is fetching it: wait for that, then read it from the shared store.
            fill = self._register(fl, meta, run[:1])[run[0]]
            if hold:
                fl.want(run[:1])
            self._spawn(self._await_other_worker(meta, fl, run[0], fill, hold))
            return fill
        run = claimed
        log.debug("run %s units %s..%s", meta.url, run[0], run[-1])
        fills = self._register(fl, meta, run)
        if hold:  # a prefetch: nobody reads it yet, so the run holds its own interest
            fl.want(run)
        self._spawn(self._run(meta, fl, run, fills, hold))
        return fills[run[0]]

    async def _await_other_worker(self, meta: ObjectMeta, fl: ObjectFlights, u: Unit, fill: SliceFill,
                                  hold: bool) -> None:
        """Fill ``u`` from the store once the worker that claimed it is done (or fetch it)."""
        assert self.claims is not None
        key = self._claim_key(meta.url, u)
        deadline = time.monotonic() + self.settings.upstream_read_timeout * 4 + 30
        try:
            while time.monotonic() < deadline:
                while self.claims.held_elsewhere(key) and time.monotonic() < deadline:
                    await asyncio.sleep(CLAIM_POLL)
                data = await self._stored(meta, u, 0, fill.size) if meta.storable else None
                if data is not None:
                    fill.append(data)
                    fill.finish()
                    if fl.fills.get(u) is fill:
                        del fl.fills[u]
                    return
                if self.claims.try_claim(key):  # it failed or gave up over there: fetch it here
                    await self._run(meta, fl, [u], {u: fill}, False)
                    return
            raise UpstreamTimeout(f"{meta.url}: waited too long for another worker's fetch of {u}")
        except Exception as exc:
            self._abandon(fl, {u: fill}, exc)
        finally:
            if hold:
                fl.release([u])

    async def _run(self, meta: ObjectMeta, fl: ObjectFlights, run: list[Unit], fills: dict[Unit, SliceFill],
                   hold: bool = False) -> None:
        asked = self._units_span(run, meta.length)
        try:
            async with self._upstream(meta.url, asked) as resp:
                if resp.status not in (200, 206):
                    err = await self.upstream.error_status(resp)
                    if resp.status in (404, 410):
                        await self.invalidate(meta.url, f"origin answered {resp.status}")
                    raise err
                bad = check_piece(meta, asked, resp.status, resp.headers)
                if bad is not None:
                    if bad.version_changed:
                        self.counters.version_changes += 1
                        await self.invalidate(meta.url, bad.reason)
                    raise UpstreamMismatch(f"{meta.url}: {bad.reason}")
                await self._pump(resp, meta, fl, run, fills, asked.start if resp.status == 200 else 0)
        except Exception as exc:
            self._log_fault(meta.url, exc)
            self._abandon(fl, fills, exc)
        except BaseException as exc:
            self._abandon(fl, fills, UpstreamError(repr(exc)))
            raise
        finally:
            if hold:
                fl.release(run)
            self._forget_idle(meta.url, fl)

    def _abandon(self, fl: ObjectFlights, fills: dict[Unit, SliceFill], exc: BaseException) -> None:
        if not isinstance(exc, ProxyError):  # readers see typed errors with a status hint
            exc = UpstreamError(f"origin fault: {exc.__class__.__name__}: {exc}")
        for i, fill in fills.items():
            if not fill.done:
                fill.fail(exc)
            if fill.error is not None:
                self._unclaim(fl.url, [i])  # never stored: another worker may fetch it
                if fl.fills.get(i) is fill:
                    del fl.fills[i]

    def _log_fault(self, url: str, exc: BaseException) -> None:
        if isinstance(exc, VersionChanged):
            log.info("%s", exc)
        else:
            log.warning("origin fault for %s: %s", url, exc)

    async def _pump(self, resp: aiohttp.ClientResponse, meta: ObjectMeta, fl: ObjectFlights, run: list[Unit],
                    fills: dict[Unit, SliceFill], skip: int) -> None:
        """Stream the upstream body into the run's fills; store each slice when complete.

        A body shorter than announced, a reset, or a version change fails the
        unfinished fills (their readers abort) and caches nothing partial.
        """
        content = resp.content
        writes = asyncio.Semaphore(STORE_BEHIND)
        pending: set[asyncio.Task[None]] = set()
        try:
            await self._pump_body(content, meta, fl, run, fills, skip, writes, pending)
        finally:
            await self._drain(pending)

    @staticmethod
    async def _drain(pending: set[asyncio.Task[None]]) -> None:
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            pending.clear()

    async def _store_slice(self, meta: ObjectMeta, fl: ObjectFlights, idx: Unit, fill: SliceFill,
                           writes: asyncio.Semaphore) -> None:
        """Write one verified slice; the fill serves readers from memory until it is on disk."""
        try:
            if meta.storable and not fl.dead:
                await self.store.put_slice(meta.url, meta.validator, idx, fill.chunks)
        except OSError as exc:  # a full disk must not break the response
            log.error("cannot store slice %d of %s: %s", idx, meta.url, exc)
        finally:
            if fl.fills.get(idx) is fill:
                del fl.fills[idx]
            self._unclaim(meta.url, [idx])
            writes.release()

    async def _pump_body(self, content: aiohttp.StreamReader, meta: ObjectMeta, fl: ObjectFlights,
                         run: list[Unit], fills: dict[Unit, SliceFill], skip: int,
                         writes: asyncio.Semaphore, pending: set[asyncio.Task[None]]) -> None:
        pos = 0
        idx = run[0]
        fill = fills[idx]
        while True:
            # readchunk hands over each buffered chunk as is (readany joins them: a copy).
            chunk, end_of_http_chunk = await content.readchunk()
            if not chunk:
                if end_of_http_chunk:
                    continue
                break
            self.counters.upstream_bytes += len(chunk)
            if skip:
                if len(chunk) <= skip:
                    skip -= len(chunk)
                    continue
                chunk, skip = chunk[skip:], 0
            while chunk:
                take = fill.size - fill.filled
                if len(chunk) <= take:
                    fill.append(chunk)
                    chunk = b""
                else:
                    fill.append(chunk[:take])
                    chunk = chunk[take:]
                if fill.filled < fill.size:
                    continue
                fill.finish()
                # Store in the background so the network and the disk overlap; at most
                # STORE_BEHIND slices of one run wait for the disk (bounded memory).
                await writes.acquire()
                task = asyncio.get_running_loop().create_task(self._store_slice(meta, fl, idx, fill, writes))
                pending.add(task)
                task.add_done_callback(pending.discard)
                pos += 1
                if pos >= len(run):
                    await self._drain(pending)
                    return
                rest = run[pos:]
                if not fl.wanted(rest):
                    # Nobody waits on the rest of the run: stop (the current unit was completed).
                    self._abandon(fl, {u: fills[u] for u in rest}, FillAbandoned("no reader left"))
                    return
                idx = run[pos]
                fill = fills[idx]
        raise UpstreamMismatch(f"{meta.url}: origin body ended at slice {idx}, "
                            f"{fill.filled} of {fill.size} bytes (short body)")

    # --- the response body, assembled slice by slice -------------------------------

    def _held_pieces(self, meta: ObjectMeta, i: int, lo: int, hi: int) -> list[tuple[int, int, int]] | None:
        """(fd, offset, count) pieces for bytes ``[lo, hi)`` of slice ``i`` from held files.

        The whole slice if it is held open, else the blocks covering the cut; None
        when something is not held or a file has the wrong length (then dropped).
        """
        store, S, B = self.store, self.slice_size, self.block_size
        units: list[tuple[Unit, int, int]]
        fd = store.cached_fd(meta.url, meta.validator, i)
        if fd is not None:
            units = [(i, lo, hi)]
        elif B < S:
            units = []
            for k in block_range(lo, hi, B):
                base = k * B
                units.append(((i, k), max(lo, base) - base, min(hi, base + B) - base))
        else:
            return None
        out = []
        for u, a, b in units:
            fd = store.cached_fd(meta.url, meta.validator, u)
            if fd is None:
                return None
            if os.fstat(fd).st_size != unit_span(u, S, B, meta.length).size:
                store.drop(meta.url, meta.validator, u, "length changed on disk")
                return None
            out.append((fd, a, b - a))
        return out

    def hit_files(self, meta: ObjectMeta, pieces: tuple[bytes | Span, ...],
                  tally: RequestTally) -> list[bytes | FilePiece] | None:
        """The whole body as framing bytes and file pieces, if every slice is held open.

        The fast path for hits (aiohttp's web_fileresponse shape): the caller sends
        each FilePiece with sendfile. Each fd is a dup the caller closes, so the store
        may close its own at any time. None when any slice is not held or has the
        wrong length (the general path then refetches it).
        """
        if not meta.storable:
            return None
        out: list[bytes | FilePiece] = []
        cuts_n = 0
        try:
            for piece in pieces:
                if isinstance(piece, bytes):
                    out.append(piece)
                    continue
                for cut in cuts((piece,), self.slice_size):
                    held = self._held_pieces(meta, cut.index, cut.lo, cut.hi)
                    if held is None:
                        raise LookupError
                    cuts_n += 1
                    out.extend(FilePiece(os.dup(fd), off, n) for fd, off, n in held)
        except (LookupError, OSError):
            close_pieces(out)
            return None
        n = sum(p.count for p in out if isinstance(p, FilePiece))
        self.counters.slice_lookups["hit"] += cuts_n
        self.counters.response_bytes["cache"] += n
        tally.hits += cuts_n
        tally.cache_bytes += n
        return out

    async def plan(self, meta: ObjectMeta, spans: tuple[Span, ...],
                   fetched: tuple[Unit, ...] | None = None) -> SlicePlan:
        """Needed slices and which are cached (whole, or by blocks covering what is needed).

        ``fetched`` (this request's own discovery run) counts as fetched for this
        response even if it already reached the store.
        """
        S, B = self.slice_size, self.block_size
        needed = needed_slices(spans, S)
        if not meta.storable or not needed:
            return SlicePlan(needed, frozenset())
        own = {unit_slice(u) for u in fetched or ()}
        present = await self.store.present(meta.url, meta.validator, needed)
        fl = self._flights.get(meta.url)
        fills = fl.fills if fl is not None and fl.validator == meta.validator else {}

        def done(u: Unit) -> bool:  # complete and verified, on its way to the store
            f = fills.get(u)
            return f is not None and f.done and f.error is None

        present.update(i for i in needed if done(i))
        if B < S:
            want: dict[int, set[Unit]] = {}
            for cut in cuts(spans, S):
                if cut.index not in present:
                    want.setdefault(cut.index, set()).update((cut.index, k) for k in block_range(cut.lo, cut.hi, B))
            if want:
                units = [u for us in want.values() for u in us]
                have = await self.store.present_units(meta.url, meta.validator, units)
                have.update(u for u in units if done(u))
                present.update(i for i, us in want.items() if us <= have)
        return SlicePlan(needed, frozenset(present.difference(own)))

    async def stream(self, meta: ObjectMeta, spans: tuple[Span, ...], plan: SlicePlan,
                     tally: RequestTally | None = None,
                     started: tuple[Unit, ...] | None = None) -> AsyncIterator[bytes]:
        """Yield the bytes of ``spans`` in order, from the store, fills in flight, or new runs."""
        fl = self.flights_for(meta)
        needed = plan.needed
        fl.want(needed)
        wanted = frozenset(needed)
        mine: set[Unit] = set(started or ())  # units whose fetch this response started (misses)
        tally = tally if tally is not None else RequestTally()
        self.active_streams += 1
        try:
            for cut in cuts(spans, self.slice_size):
                if fl.dead:
                    raise VersionChanged(f"{meta.url}: version changed during the response")
                ahead = True
                start = cut.index * self.slice_size + cut.lo
                streak = self._follow(meta.url, start, start + cut.hi - cut.lo)
                small = prefers_blocks(cut.hi - cut.lo, self.slice_size, self.block_size, streak > 1)
                async for chunk in self._cut_bytes(meta, fl, cut.index, cut.lo, cut.hi, wanted, plan.cached, mine,
                                                    tally, small):
                    if ahead:  # once slice i is flowing, look after i+1 and beyond
                        ahead = False
                        self._look_ahead(meta, fl, cut.index, wanted, plan.cached, mine, streak)
                    yield chunk
        finally:
            self.active_streams -= 1
            fl.release(needed)
            self._forget_idle(meta.url, fl)

    def _follow(self, url: str, start: int, end: int) -> int:
        """How many cuts in a row of this object were read back to back (1: not sequential).

        A player or a download reads on from where it stopped, in one request or in
        the next; random readers jump. Only exact continuation counts.
        """
        prev_end, streak = self._reading.get(url, (-1, 0))
        streak = streak + 1 if start == prev_end else 1
        self._reading[url] = (end, streak)
        self._reading.move_to_end(url)
        while len(self._reading) > META_MEMORY:
            self._reading.popitem(last=False)
        return streak

    def _look_ahead(self, meta: ObjectMeta, fl: ObjectFlights, i: int, wanted: frozenset[int],
                    cached: frozenset[int], mine: set[Unit], streak: int) -> None:
        """Pipelining and read-ahead while slice ``i`` is being read.

        The next slice this response needs is put on its way now, so a run boundary
        costs no round trip. A reader that has gone through two consecutive slices
        (a player, a download) also gets up to ``readahead_slices`` beyond its own
        range prefetched, so its next request finds them cached or in flight.
        """
        if fl.dead:
            return
        nxt = i + 1
        if nxt in wanted and self._fetchable(meta, fl, nxt, cached):
            mine.update(self.start_run(meta, fl, nxt, wanted, cached)[1])
        depth = self.settings.readahead_slices
        if depth <= 0 or not meta.storable or streak < 2:
            return
        last = min(i + depth, slice_count(meta.length, self.slice_size) - 1)
        ahead = frozenset(range(i + 1, last + 1)) - wanted  # the response fetches what it wants itself
        j = i + 1
        while j <= last:
            if j in ahead and self._fetchable(meta, fl, j, cached):
                self.counters.prefetches += 1
                run = self.start_run(meta, fl, j, ahead, cached, hold=True)[1]
                j = unit_slice(run[-1]) + 1
            else:
                j += 1

    def _forget_idle(self, url: str, fl: ObjectFlights) -> None:
        if not fl.fills and not fl.interest and self._flights.get(url) is fl:
            del self._flights[url]

    def _lookup(self, tally: RequestTally, result: str) -> str:
        """Count one unit lookup: hit (the store), miss (our fetch) or collapsed (another's)."""
        self.counters.slice_lookups[result] += 1
        if result == "hit":
            tally.hits += 1
        elif result == "miss":
            tally.misses += 1
        else:
            tally.collapsed += 1
        return "cache" if result == "hit" else "origin"

    def _sent(self, tally: RequestTally, source: str, n: int) -> None:
        """Count bytes as they go out (before the yield: a consumer may stop at any one)."""
        self.counters.response_bytes[source] += n
        if source == "cache":
            tally.cache_bytes += n
        else:
            tally.origin_bytes += n

    async def _stored(self, meta: ObjectMeta, u: Unit, lo: int, hi: int) -> bytes | None:
        """Bytes ``[lo, hi)`` of a stored unit, or None (miss, or damaged and dropped)."""
        store = self.store
        size = unit_span(u, self.slice_size, self.block_size, meta.length).size
        fd = store.cached_fd(meta.url, meta.validator, u)
        if fd is None:
            fd = await store.open_slice(meta.url, meta.validator, u, size)
        return None if fd is None else store.pread(meta.url, meta.validator, u, fd, size, lo, hi)

    async def _cut_bytes(self, meta: ObjectMeta, fl: ObjectFlights, i: int, lo: int, hi: int,
                         wanted: frozenset[int], cached: frozenset[int], mine: set[Unit],
                         tally: RequestTally, small: bool) -> AsyncIterator[bytes]:
        """Bytes ``[lo, hi)`` of slice ``i``: whole slice stored or in flight, else its blocks
        (stored, in flight, or fetched) for a small cut, else a new slice run."""
        fill = fl.fills.get(i)
        if fill is None and meta.storable:
            data = await self._stored(meta, i, lo, hi)
            if data is not None:
                self._sent(tally, self._lookup(tally, "miss" if i in mine else "hit"), len(data))
                yield data
                return
            fill = fl.fills.get(i)
        if fill is None and (small or self._blocks_held(meta, i, lo, hi)):
            async for chunk in self._blocks_bytes(meta, fl, i, lo, hi, mine, tally):
                yield chunk
            return
        if fill is None:
            fill, run = self.start_run(meta, fl, i, wanted, cached)
            mine.update(run)
        async for chunk in self._fill_bytes(fill, i, lo, hi, mine, tally):
            yield chunk

    async def _fill_bytes(self, fill: SliceFill, u: Unit, lo: int, hi: int, mine: set[Unit],
                          tally: RequestTally) -> AsyncIterator[bytes]:
        """Read a fill; a complete one fetched by another response is as good as a hit."""
        result = "miss" if u in mine else ("hit" if fill.done and fill.error is None else "collapsed")
        source = self._lookup(tally, result)
        t0 = time.monotonic()
        async for chunk in fill.read(lo, hi):
            if source == "origin":
                tally.upstream_seconds += time.monotonic() - t0
            self._sent(tally, source, len(chunk))
            yield chunk
            t0 = time.monotonic()

    def _blocks_held(self, meta: ObjectMeta, i: int, lo: int, hi: int) -> bool:
        B = self.block_size
        return B < self.slice_size and all(
            self.store.cached_fd(meta.url, meta.validator, (i, k)) is not None for k in block_range(lo, hi, B))

    async def _blocks_bytes(self, meta: ObjectMeta, fl: ObjectFlights, i: int, lo: int, hi: int,
                            mine: set[Unit], tally: RequestTally) -> AsyncIterator[bytes]:
        """A small cut, block by block (each block is one lookup)."""
        B = self.block_size
        blocks = block_range(lo, hi, B)
        for k in blocks:
            u: Unit = (i, k)
            a, b = max(lo, k * B) - k * B, min(hi, (k + 1) * B) - k * B
            fill = fl.fills.get(u)
            if fill is None and meta.storable:
                data = await self._stored(meta, u, a, b)
                if data is not None:
                    self._sent(tally, self._lookup(tally, "miss" if u in mine else "hit"), len(data))
                    yield data
                    continue
                fill = fl.fills.get(u)
            if fill is None:
                fill, run = self.start_block_run(meta, fl, i, blocks[blocks.index(k):])
                mine.update(run)
            async for chunk in self._fill_bytes(fill, u, a, b, mine, tally):
                yield chunk
