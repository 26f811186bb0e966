"""The server side of the engine: verified upstream runs that fill slices and blocks.

A run is one upstream Range request for contiguous units (slices, or blocks of a
small random read). Every answer is checked against the request and the object's
reference before a byte of it is used; bytes go to the fills (readers see them at
once) and each complete unit to the store in the background. With several worker
processes, a unit is claimed first so only one of them fetches it.
"""


from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Coroutine

import aiohttp

from proxy.cache.engine_parts import EngineParts
from proxy.http.errors import (
    ProxyError,
    UpstreamError,
    UpstreamMismatch,
    UpstreamTimeout,
    VersionChanged,
)
from proxy.cache.flights import FillAbandoned, ObjectFlights, SliceFill
from proxy.http.ranges import Span
from proxy.core.representation import (
    ObjectMeta,
    check_piece,
)
from proxy.core.slices import (
    Unit,
    slice_count,
    unit_slice,
    unit_span,
)

__all__ = ["Fetching", "STORE_BEHIND", "CLAIM_POLL"]

log = logging.getLogger("rangeproxy.engine")
STORE_BEHIND = 4  # verified slices of one run that may wait for the disk at once
FILL_PIECE = 60 * 1024  # largest object in a fill: what one slow reader can pin (see _pump_body)
CLAIM_POLL = 0.002  # seconds between looks at a unit another worker is fetching


class Fetching(EngineParts):
    """Mixin of :class:`proxy.cache.engine.Engine`: runs from the origin into fills and the store."""

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

    def _register(self, fl: ObjectFlights, meta: ObjectMeta, run: list[Unit]) -> dict[Unit, SliceFill]:
        S, B = self.slice_size, self.block_size
        fills = {u: SliceFill(unit_slice(u), unit_span(u, S, B, meta.length).size) for u in run}
        fl.fills.update(fills)
        return fills

    def _fetchable(self, meta: ObjectMeta, fl: ObjectFlights, u: Unit, cached: frozenset[int]) -> bool:
        """Neither cached (at plan time, or stored since: its fd is held), nor in flight."""
        i = unit_slice(u)
        if i in fl.fills or self.store.holds(meta.url, meta.validator, i):
            return False
        if isinstance(u, int):
            return u not in cached
        return u not in fl.fills and not self.store.holds(meta.url, meta.validator, u)

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
                if meta.storable and await self._fill_from_store(meta, fl, u, fill):
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

    async def _skip_stored(self, meta: ObjectMeta, fl: ObjectFlights, run: list[Unit],
                           fills: dict[Unit, SliceFill]) -> list[Unit]:
        """Fill the leading units of ``run`` that are in the store already; the rest to fetch."""
        present = await self.store.present_units(meta.url, meta.validator, run)
        while run and run[0] in present and await self._fill_from_store(meta, fl, run[0], fills[run[0]]):
            self._unclaim(meta.url, run[:1])
            run = run[1:]
        return run

    async def _fill_from_store(self, meta: ObjectMeta, fl: ObjectFlights, u: Unit, fill: SliceFill) -> bool:
        """Complete ``fill`` from the store if ``u`` is there (its readers go to the file)."""
        if await self._stored_fd(meta, u) is None:  # type: ignore[attr-defined]
            return False
        fill.found_stored()
        if fl.fills.get(u) is fill:
            del fl.fills[u]
        return True

    async def _run(self, meta: ObjectMeta, fl: ObjectFlights, run: list[Unit], fills: dict[Unit, SliceFill],
                   hold: bool = False) -> None:
        try:
            if self.claims is not None and meta.storable:
                # Claimed just as another worker finished and released it? Then it is stored now.
                run = await self._skip_stored(meta, fl, run, fills)
                if not run:
                    return
            # Room for the first unit before asking: a run that must wait for room then
            # holds no upstream response with bytes piling up in its buffers.
            await self._room_for(fills[run[0]])
            asked = self._units_span(run, meta.length)
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

    async def _room_for(self, fill: SliceFill) -> None:
        """Wait until the fill budget has room for this unit (before an upstream request)."""
        if fill.budget == 0:
            await self.fill_budget.acquire(fill.size)
            fill.budget = fill.size

    def _take_room(self, fill: SliceFill) -> None:
        """Room for a unit of a response already flowing: never waits (see proxy.cache.budget)."""
        if fill.budget == 0:
            self.fill_budget.take(fill.size)
            fill.budget = fill.size

    def _give_back(self, fill: SliceFill) -> None:
        """Return a fill's room to the budget (once: it is stored, or failed and dropped)."""
        if fill.budget:
            self.fill_budget.release(fill.budget)
            fill.budget = 0

    def _abandon(self, fl: ObjectFlights, fills: dict[Unit, SliceFill], exc: BaseException) -> None:
        if not isinstance(exc, ProxyError):  # readers see typed errors with a status hint
            exc = UpstreamError(f"origin fault: {exc.__class__.__name__}: {exc}")
        for i, fill in fills.items():
            if not fill.done:
                fill.fail(exc)
            if fill.error is not None:
                self._give_back(fill)
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

    def _store_task(self, write: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a write to the store in the background; a clean stop waits for it (Engine.close)."""
        task = asyncio.get_running_loop().create_task(write)
        self.storing.add(task)
        task.add_done_callback(self.storing.discard)
        return task

    async def _store_slice(self, meta: ObjectMeta, fl: ObjectFlights, idx: Unit, fill: SliceFill,
                           writes: asyncio.Semaphore) -> None:
        """Write one verified slice; the fill serves readers from memory until it is on disk."""
        try:
            if meta.storable and not fl.dead:
                await self.store.put_slice(meta.url, meta.validator, idx, fill.chunks)
                if isinstance(idx, int):
                    fill.release()  # whole slices: readers go on from the file (blocks are small)
        except Exception as exc:  # noqa: BLE001 - a full disk must not break the response
            log.error("cannot store slice %s of %s: %r", idx, meta.url, exc)
        finally:
            if fl.fills.get(idx) is fill:
                del fl.fills[idx]
            self._unclaim(meta.url, [idx])
            self._give_back(fill)
            writes.release()

    async def _pump_body(self, content: aiohttp.StreamReader, meta: ObjectMeta, fl: ObjectFlights,
                         run: list[Unit], fills: dict[Unit, SliceFill], skip: int,
                         writes: asyncio.Semaphore, pending: set[asyncio.Task[None]]) -> None:
        pos = 0
        idx = run[0]
        fill = fills[idx]
        self._take_room(fill)
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
            # Pieces of at most FILL_PIECE: a slow reader holds on to the piece it is
            # sending, and a piece cut from a 256 KiB read would keep all of it alive.
            view = memoryview(chunk)
            at = 0
            while at < len(chunk):
                take = min(fill.size - fill.filled, FILL_PIECE, len(chunk) - at)
                fill.append(chunk if take == len(chunk) else bytes(view[at:at + take]))
                at += take
                if fill.filled < fill.size:
                    continue
                fill.finish()
                # Store in the background so the network and the disk overlap; at most
                # STORE_BEHIND slices of one run wait for the disk (bounded memory).
                await writes.acquire()
                task = self._store_task(self._store_slice(meta, fl, idx, fill, writes))
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
                self._take_room(fill)
        raise UpstreamMismatch(f"{meta.url}: origin body ended at slice {idx}, "
                            f"{fill.filled} of {fill.size} bytes (short body)")

    # --- the response body, assembled slice by slice -------------------------------

