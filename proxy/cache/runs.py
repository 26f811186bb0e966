"""Upstream runs: one Range request fills contiguous units (slices, or blocks of a small read).

Every answer is checked against the request and the object's reference before a
byte of it is used (``check_piece``); bytes go to the fills (readers see them at
once) and each complete unit to the store in the background. With several worker
processes a unit is claimed first, so only one of them fetches it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Callable, Coroutine

import aiohttp

from proxy.cache.bodies import body_pieces
from proxy.cache.files import UnitFiles
from proxy.cache.flights import FillAbandoned, FlightRegistry, ObjectFlights, SliceFill
from proxy.cache.origin import Origin
from proxy.cache.sync import WorkerSync
from proxy.cache.tasks import Jobs
from proxy.core.fields import Fields
from proxy.core.representation import ObjectMeta, check_piece
from proxy.core.settings import Settings
from proxy.core.slices import Unit, cut_run, unit_slice
from proxy.http.errors import ProxyError, UpstreamError, UpstreamMismatch, UpstreamTimeout, VersionChanged

__all__ = ["RunLauncher", "RunWants", "UpstreamRun", "Invalidate", "STORE_BEHIND", "CLAIM_POLL"]

log = logging.getLogger("rangeproxy.engine")
STORE_BEHIND = 4  # verified slices of one run that may wait for the disk at once
FILL_PIECE = 60 * 1024  # largest object in a fill: what one slow reader can pin (see UpstreamRun.pump)
CLAIM_POLL = 0.002  # seconds between looks at a unit another worker is fetching

Invalidate = Callable[[str, str], Coroutine[Any, Any, None]]  # (url, reason): drop the object everywhere


@dataclass(frozen=True, slots=True)
class RunWants:
    """What runs started for one response may take, and the fields their requests carry."""

    wanted: frozenset[int]  # the slices the response needs
    cached: frozenset[int] = frozenset()  # those the store held when it was planned
    fields: Fields = ()  # the client's fields for the origin (proxy.core.forwarding)


class RunLauncher:
    """Starts runs for the units responses need, and owns what every run shares."""

    def __init__(self, settings: Settings, flights: FlightRegistry, files: UnitFiles, origin: Origin,
                 sync: WorkerSync, jobs: Jobs, invalidate: Invalidate) -> None:
        self.settings = settings
        self.flights = flights
        self.files = files
        self.origin = origin
        self.sync = sync
        self.jobs = jobs
        self.invalidate = invalidate

    # The metadata the engine knows an object by now (set by the engine: MetaCache.hot).
    known: Callable[[str], ObjectMeta | None] = staticmethod(lambda url: None)

    def superseded(self, meta: ObjectMeta, fl: ObjectFlights) -> bool:
        """Was this version of the object dropped (its flights failed), or is another one known now?"""
        current = self.known(meta.url)
        return fl.dead or (current is not None and current.validator != meta.validator)

    def fetchable(self, meta: ObjectMeta, fl: ObjectFlights, u: Unit, cached: frozenset[int]) -> bool:
        """Neither cached (at plan time, or stored since: its fd is held), nor in flight."""
        i = unit_slice(u)
        if i in fl.fills or self.files.holds(meta, i):
            return False
        if isinstance(u, int):
            return u not in cached
        return u not in fl.fills and not self.files.holds(meta, u)

    def start_run(self, meta: ObjectMeta, fl: ObjectFlights, first: int, wants: RunWants,
                  hold: bool = False) -> tuple[SliceFill, list[Unit]]:
        """Start fetching slice ``first`` and the contiguous wanted, uncached, idle slices after it."""
        count = self.files.geometry.slice_count(meta.length)
        # An object not stored (no strong validator, or not storable) is read in one upstream
        # answer for the rest of the response: pieces of two fetches are never combined.
        limit = min(first + self.settings.max_run_slices, count) if not fl.private else count
        run = cut_run(first, limit, wants.wanted, lambda j: self.fetchable(meta, fl, j, wants.cached))
        return self._launch(meta, fl, run, hold, wants.fields), run

    def start_block_run(self, meta: ObjectMeta, fl: ObjectFlights, i: int, blocks: range,
                        fields: Fields = ()) -> tuple[SliceFill, list[Unit]]:
        """Start fetching block ``blocks.start`` of slice ``i`` and the idle missing blocks after it."""
        run: list[Unit] = [(i, blocks.start)]
        for k in blocks[1:]:
            if not self.fetchable(meta, fl, (i, k), frozenset()):
                break
            run.append((i, k))
        return self._launch(meta, fl, run, False, fields), run

    def _launch(self, meta: ObjectMeta, fl: ObjectFlights, run: list[Unit], hold: bool,
                fields: Fields) -> SliceFill:
        # A private read (an object not stored) is nobody else's business: no claims.
        claimed = self.sync.claim_prefix(meta.url, run) if not fl.private else run
        if not claimed:
            # Another worker is fetching it: wait for that, then read it from the shared store.
            fill = self.flights.register(fl, meta, run[:1])[run[0]]
            if hold:
                fl.want(run[:1])
            self.jobs.spawn(self._await_other_worker(meta, fl, run[0], fill, hold, fields))
            return fill
        run = claimed
        log.debug("run %s units %s..%s", meta.url, run[0], run[-1])
        fills = self.flights.register(fl, meta, run)
        if hold:  # a prefetch: nobody reads it yet, so the run holds its own interest
            fl.want(run)
        self.jobs.spawn(UpstreamRun(self, meta, fl, fills, fields).fetch(hold))
        return fills[run[0]]

    async def _await_other_worker(self, meta: ObjectMeta, fl: ObjectFlights, u: Unit, fill: SliceFill,
                                  hold: bool, fields: Fields) -> None:
        """Fill ``u`` from the store once the worker that claimed it is done (or fetch it)."""
        deadline = time.monotonic() + self.settings.upstream_read_timeout * 4 + 30
        try:
            while time.monotonic() < deadline:
                while self.sync.held_elsewhere(meta.url, u) and time.monotonic() < deadline:
                    await asyncio.sleep(CLAIM_POLL)
                if meta.storable and await self.fill_from_store(meta, fl, u, fill):
                    return
                if self.sync.try_claim(meta.url, u):  # it failed or gave up over there: fetch it here
                    await UpstreamRun(self, meta, fl, {u: fill}, fields).fetch(False)
                    return
            raise UpstreamTimeout(f"{meta.url}: waited too long for another worker's fetch of {u}")
        except Exception as exc:
            self.abandon(fl, {u: fill}, exc)
        finally:
            if hold:
                fl.release([u])

    async def fill_from_store(self, meta: ObjectMeta, fl: ObjectFlights, u: Unit, fill: SliceFill) -> bool:
        """Complete ``fill`` from the store if ``u`` is there (its readers go to the file)."""
        if await self.files.fd(meta, u) is None:
            return False
        fill.found_stored()
        fl.remove(u, fill)
        return True

    def abandon(self, fl: ObjectFlights, fills: dict[Unit, SliceFill], exc: BaseException) -> None:
        """Fail the unfinished fills (readers see a typed error); failed ones leave the flights."""
        if not isinstance(exc, ProxyError):  # readers see typed errors with a status hint
            exc = UpstreamError(f"origin fault: {exc.__class__.__name__}: {exc}")
        for i, fill in fills.items():
            if not fill.done:
                fill.fail(exc)
            if fill.error is not None:
                self.flights.give_back(fill)
                self.sync.release(fl.url, [i])  # never stored: another worker may fetch it
                fl.remove(i, fill)

    @staticmethod
    def log_fault(url: str, exc: BaseException) -> None:
        if isinstance(exc, VersionChanged):
            log.info("%s", exc)
        else:
            log.warning("origin fault for %s: %s", url, exc)


class UpstreamRun:
    """One upstream request for contiguous units of one object version, and its fills."""

    def __init__(self, launcher: RunLauncher, meta: ObjectMeta, fl: ObjectFlights,
                 fills: dict[Unit, SliceFill], fields: Fields = ()) -> None:
        self.launcher = launcher
        self.fields = fields  # the client's, for the origin (none for read-ahead)
        self.meta = meta
        self.fl = fl
        self.fills = fills
        self.units = list(fills)
        self._writes = asyncio.Semaphore(STORE_BEHIND)
        self._pending: set[asyncio.Task[None]] = set()

    async def fetch(self, hold: bool = False) -> None:
        """Ask the origin for the run's units, verify the answer, and pump it into the fills."""
        la, meta, fl = self.launcher, self.meta, self.fl
        try:
            if la.sync.shared and meta.storable and not fl.private:
                # Claimed just as another worker finished and released it? Then it is stored now.
                await self._skip_stored()
                if not self.units:
                    return
            # Room for the first unit before asking: a run that must wait for room then
            # holds no upstream response with bytes piling up in its buffers.
            await la.flights.room_for(self.fills[self.units[0]])
            asked = la.files.geometry.units_span(self.units, meta.length)
            async with la.origin.get(meta.url, asked, self.fields) as resp:
                if resp.status not in (200, 206):
                    err = await la.origin.error_status(resp)
                    if resp.status in (404, 410):
                        await la.invalidate(meta.url, f"origin answered {resp.status}")
                    raise err
                bad = check_piece(meta, asked, resp.status, resp.headers)
                if bad is not None:
                    if bad.version_changed and la.superseded(meta, fl):
                        # The change was found elsewhere and the object may be learnt anew by
                        # now: dropping it again would fail the new version's fills too. Only
                        # this run's fills fail (their readers start again on the new version).
                        raise VersionChanged(f"{meta.url}: {bad.reason}")
                    if bad.version_changed:
                        la.origin.counters.version_changes += 1
                        await la.invalidate(meta.url, bad.reason)
                    raise UpstreamMismatch(f"{meta.url}: {bad.reason}")
                await self.pump(resp, asked.start if resp.status == 200 else 0)
        except Exception as exc:
            la.log_fault(meta.url, exc)
            la.abandon(fl, self.fills, exc)
        except BaseException as exc:
            la.abandon(fl, self.fills, UpstreamError(repr(exc)))
            raise
        finally:
            if hold:
                fl.release(self.units)
            la.flights.forget_idle(meta.url, fl)

    async def _skip_stored(self) -> None:
        """Fill the leading units that are in the store already; fetch the rest."""
        la, meta = self.launcher, self.meta
        present = await la.files.store.present_units(meta.url, meta.validator, self.units)
        while (self.units and self.units[0] in present
               and await la.fill_from_store(meta, self.fl, self.units[0], self.fills[self.units[0]])):
            la.sync.release(meta.url, self.units[:1])
            self.units = self.units[1:]

    async def pump(self, resp: aiohttp.ClientResponse, skip: int) -> None:
        """Stream the upstream body into the run's fills; store each unit when complete.

        A body shorter than announced, a reset, or a version change fails the
        unfinished fills (their readers abort) and caches nothing partial.
        """
        try:
            await self._pump_body(resp, skip)
        finally:
            await self._drain()

    async def _drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
            self._pending.clear()

    async def _pump_body(self, resp: aiohttp.ClientResponse, skip: int) -> None:
        la, fl, units = self.launcher, self.fl, self.units
        counters = la.origin.counters
        pos = 0
        idx = units[0]
        fill = self.fills[idx]
        la.flights.take_room(fill)
        # Pieces of at most FILL_PIECE: a slow reader holds on to the piece it is sending.
        async with aclosing(body_pieces(resp, FILL_PIECE, la.settings.upstream_read_timeout)) as pieces:
            async for chunk in pieces:
                counters.upstream_bytes += len(chunk)
                if skip:
                    if len(chunk) <= skip:
                        skip -= len(chunk)
                        continue
                    chunk, skip = chunk[skip:], 0
                at = 0
                while at < len(chunk):
                    take = min(fill.size - fill.filled, len(chunk) - at)
                    fill.append(chunk if take == len(chunk) else chunk[at:at + take])
                    at += take
                    if fill.filled < fill.size:
                        continue
                    fill.finish()
                    # Store in the background so the network and the disk overlap; at most
                    # STORE_BEHIND slices of one run wait for the disk (bounded memory).
                    await self._writes.acquire()
                    task = la.jobs.store(self._store_unit(idx, fill))
                    self._pending.add(task)
                    task.add_done_callback(self._pending.discard)
                    pos += 1
                    if pos >= len(units):
                        await self._drain()
                        return
                    rest = units[pos:]
                    if not fl.wanted(rest):
                        # Nobody waits on the rest of the run: stop (the current unit was completed).
                        la.abandon(fl, {u: self.fills[u] for u in rest}, FillAbandoned("no reader left"))
                        return
                    idx = units[pos]
                    fill = self.fills[idx]
                    la.flights.take_room(fill)
        raise UpstreamMismatch(f"{self.meta.url}: origin body ended at slice {idx}, "
                               f"{fill.filled} of {fill.size} bytes (short body)")

    async def _store_unit(self, idx: Unit, fill: SliceFill) -> None:
        """Write one verified unit; the fill serves readers from memory until it is on disk."""
        la, meta, fl = self.launcher, self.meta, self.fl
        try:
            if fl.private:
                await fill.until_spent()  # the reader's pace: at most STORE_BEHIND unread units
            elif meta.storable and not fl.dead:
                # False: the cache is not writable (proxy.cache.writability logs that, not each slice).
                stored = await la.files.store.put_slice(meta.url, meta.validator, idx, fill.chunks)
                if stored and isinstance(idx, int):
                    fill.release()  # whole slices: readers go on from the file (blocks are small)
        except Exception as exc:  # noqa: BLE001 - a full disk must not break the response
            log.error("cannot store slice %s of %s: %r", idx, meta.url, exc)
        finally:
            fl.remove(idx, fill)
            la.sync.release(meta.url, [idx])
            la.flights.give_back(fill)
            self._writes.release()
