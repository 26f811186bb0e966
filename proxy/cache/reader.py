"""The bytes of one response, slice by slice: stored files, fills in flight, blocks, or new runs.

For each slice a response needs: a stored slice (a file piece for sendfile, or
its bytes), a fill in flight (collapsed onto another response's fetch), the blocks
of a small random read, or a new run. Pipelining and read-ahead keep a sequential
reader ahead of the origin.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import AsyncGenerator, AsyncIterator

from proxy.cache.flights import FillAbandoned, ObjectFlights, SliceFill
from proxy.cache.pieces import FilePiece, MetaLease, RequestTally, part_size
from proxy.cache.readahead import ReadAhead
from proxy.cache.runs import RunLauncher, RunWants
from proxy.core.fields import Fields
from proxy.core.representation import ObjectMeta
from proxy.core.slices import SliceCut, SlicePlan, Unit, block_range, cuts, prefers_blocks, unit_slice
from proxy.http.errors import VersionChanged
from proxy.http.ranges import Span

__all__ = ["ResponseReader", "ResponseRead", "SWITCH_TO_FILE"]

SWITCH_TO_FILE = 64 * 1024  # bytes left in a stored fill worth a file piece instead of its memory


class ResponseReader:
    """Starts the read of each response and counts those under way."""

    def __init__(self, runs: RunLauncher, ahead: ReadAhead) -> None:
        self.runs = runs
        self.ahead = ahead
        self.active = 0  # responses reading slices right now (from the store or from fills)

    async def stream(self, lease: MetaLease, spans: tuple[Span, ...], plan: SlicePlan,
                     tally: RequestTally | None = None, files: bool = False,
                     fields: Fields = ()) -> AsyncGenerator[bytes | FilePiece, None]:
        """Yield the bytes of ``spans`` in order, from the store, fills in flight, or new runs.

        With ``files``, a stored slice comes as a :class:`FilePiece` (the caller sends it
        with sendfile and closes its fd), and a reader of a fill switches to the file
        once the fill is stored: nothing pins a megabyte per response in memory.
        ``fields`` go with the fetches this response starts (the client's, for the origin).
        """
        read = ResponseRead(self, lease, RunWants(frozenset(plan.needed), plan.cached, fields),
                            tally if tally is not None else RequestTally(), files)
        read.mine.update(lease.held or ())
        self.active += 1
        try:
            async for chunk in read.bytes_of(spans):
                yield chunk
        finally:
            self.active -= 1
            read.close()


class ResponseRead:
    """One response's read: the units it wants, those whose fetch it started, what it cost."""

    def __init__(self, reader: ResponseReader, lease: MetaLease, wants: RunWants, tally: RequestTally,
                 files: bool) -> None:
        meta = lease.meta
        self.runs = reader.runs
        self.ahead = reader.ahead
        self.files = self.runs.files
        self.counters = self.runs.origin.counters
        self.meta = meta
        self.wants = wants
        self.tally = tally
        self.sendfile = files
        self.fl: ObjectFlights = lease.flights or (ObjectFlights(meta.validator, meta.url, private=True)
                                                   if self._beyond_its_answer(meta, wants)
                                                   else self.runs.flights.for_meta(meta))
        self.fl.want(wants.wanted)
        self.later: Counter[int] = Counter()  # cuts still to read, per slice (a private read's pace)
        self.mine: set[Unit] = set()  # units whose fetch this response started (misses)

    def _beyond_its_answer(self, meta: ObjectMeta, wants: RunWants) -> bool:
        """An object stored whole without a strong validator, of which this response needs a
        slice that is neither stored nor on its way from that answer: then all of the response
        comes from one new answer (RFC 9111 §3.4), read privately, nothing stored mixed in."""
        if not meta.answer or not meta.storable:
            return False
        shared = self.runs.flights.current(meta)
        flying = {unit_slice(u) for u in shared.fills} if shared is not None else set()
        return any(i not in wants.cached and i not in flying for i in wants.wanted)

    async def _may_fetch(self, i: int) -> None:
        """Never complete an object stored whole (no strong validator) from another answer: one
        whose slice left the store is dropped, to be learnt anew (before the first byte the
        response starts over from that; after it, it is cut)."""
        if self.meta.answer and not self.fl.private:
            reason = f"slice {i} of an object stored whole left the store"
            await self.runs.invalidate(self.meta.url, reason)
            raise VersionChanged(f"{self.meta.url}: {reason}")

    def close(self) -> None:
        # (Private flights spend the fills nobody wants any more: their run goes on, or stops.)
        self.fl.release(self.wants.wanted)
        self.runs.flights.forget_idle(self.meta.url, self.fl)

    async def bytes_of(self, spans: tuple[Span, ...]) -> AsyncIterator[bytes | FilePiece]:
        geometry = self.files.geometry
        S = geometry.slice_size
        all_cuts = list(cuts(spans, S))
        self.later.update(cut.index for cut in all_cuts)
        for cut in all_cuts:
            if self.fl.dead:
                raise VersionChanged(f"{self.meta.url}: version changed during the response")
            ahead = True
            start = cut.index * S + cut.lo
            size = cut.hi - cut.lo
            run = self.ahead.reads.follow(self.meta.url, start, start + size)
            # Sequential once a quarter slice was read back to back before this cut:
            # then whole slices; a small range that merely straddles a slice boundary is not.
            small = prefers_blocks(size, S, geometry.block_size, run - size >= S // 4)
            async for chunk in self._cut_bytes(cut, small):
                if ahead:  # once slice i is flowing, look after i+1 and beyond
                    ahead = False
                    self._look_ahead(cut.index, run, small)
                yield chunk
            self.later[cut.index] -= 1
            if self.fl.private and not self.later[cut.index]:
                self.fl.spend(cut.index)

    def _look_ahead(self, i: int, run: int, small: bool) -> None:
        """Pipelining and read-ahead while slice ``i`` is being read.

        The next slice this response needs is put on its way now, so a run boundary
        costs no round trip. A sequential reader also gets slices beyond its own
        range prefetched (:class:`ReadAhead`).
        """
        if self.fl.dead:
            return
        nxt = i + 1
        # A small read (blocks) pipelines nothing: the rest of it is small too, or it would not be.
        whole = bool(self.meta.answer) and not self.fl.private  # stored whole: nothing to fetch
        if (not small and not whole and nxt in self.wants.wanted
                and self.runs.fetchable(self.meta, self.fl, nxt, self.wants.cached)):
            self.mine.update(self.runs.start_run(self.meta, self.fl, nxt, self.wants)[1])
        if self.ahead.sequential(run):
            self.ahead.after(self.meta, i, self.wants.wanted)

    def _lookup(self, result: str) -> str:
        """Count one unit lookup: hit (the store), miss (our fetch) or collapsed (another's)."""
        self.counters.slice_lookups[result] += 1
        if result == "hit":
            self.tally.hits += 1
        elif result == "miss":
            self.tally.misses += 1
        else:
            self.tally.collapsed += 1
        return "cache" if result == "hit" else "origin"

    def _sent(self, source: str, n: int) -> None:
        """Count bytes as they go out (before the yield: a consumer may stop at any one)."""
        self.counters.response_bytes[source] += n
        if source == "cache":
            self.tally.cache_bytes += n
        else:
            self.tally.origin_bytes += n

    async def _cut_bytes(self, cut: SliceCut, small: bool) -> AsyncIterator[bytes | FilePiece]:
        """Bytes ``[lo, hi)`` of slice ``i``: whole slice stored or in flight, else its blocks
        (stored, in flight, or fetched) for a small cut, else a new slice run."""
        meta, fl, i, lo, hi = self.meta, self.fl, cut.index, cut.lo, cut.hi
        fill = fl.fills.get(i)
        if fill is None and not fl.private:
            got = await self.files.part(meta, i, lo, hi, self.sendfile)
            if got is not None:
                self._sent(self._lookup("miss" if i in self.mine else "hit"), part_size(got))
                yield got
                return
            fill = fl.fills.get(i)
        if fill is None and (small or self.files.blocks_held(meta, i, lo, hi)):
            async for chunk in self._blocks_bytes(cut):
                yield chunk
            return
        if fill is None:
            await self._may_fetch(i)
            fill, run = self.runs.start_run(meta, fl, i, self.wants)
            self.mine.update(run)
        async for part in self._fill_bytes(fill, i, lo, hi, self.sendfile):
            yield part

    async def _fill_bytes(self, fill: SliceFill, u: Unit, lo: int, hi: int,
                          files: bool) -> AsyncIterator[bytes | FilePiece]:
        """Read a fill; a complete one fetched by another response is as good as a hit.

        With ``files``, once the fill is on disk the rest comes from its file: a slow
        client then holds a file descriptor, not the fill's memory.
        """
        result = "miss" if u in self.mine else ("hit" if fill.done and fill.error is None else "collapsed")
        source = self._lookup(result)
        t0 = time.monotonic()
        pos = lo
        reader = fill.read(lo, hi)
        try:
            async for chunk in reader:
                if source == "origin":
                    self.tally.upstream_seconds += time.monotonic() - t0
                self._sent(source, len(chunk))
                yield chunk
                pos += len(chunk)
                if files and fill.stored and hi - pos >= SWITCH_TO_FILE:
                    break
                t0 = time.monotonic()
        finally:
            await reader.aclose()
        if pos < hi:  # the fill went to disk (and left memory) before we were through it
            rest = await self.files.part(self.meta, u, pos, hi, files)
            if rest is None:
                raise FillAbandoned(f"{self.meta.url}: slice {u} left memory and its file is gone")
            self._sent(source, part_size(rest))
            yield rest

    async def _blocks_bytes(self, cut: SliceCut) -> AsyncIterator[bytes | FilePiece]:
        """A small cut, block by block (each block is one lookup)."""
        meta, fl, i, lo, hi = self.meta, self.fl, cut.index, cut.lo, cut.hi
        B = self.files.geometry.block_size
        blocks = block_range(lo, hi, B)
        for k in blocks:
            u: Unit = (i, k)
            a, b = max(lo, k * B) - k * B, min(hi, (k + 1) * B) - k * B
            fill = fl.fills.get(u)
            if fill is None and not fl.private:
                data = await self.files.read(meta, u, a, b)
                if data is not None:
                    self._sent(self._lookup("miss" if u in self.mine else "hit"), len(data))
                    yield data
                    continue
                fill = fl.fills.get(u)
            if fill is None:
                await self._may_fetch(i)
                fill, run = self.runs.start_block_run(meta, fl, i, blocks[blocks.index(k):], self.wants.fields)
                self.mine.update(run)
            async for chunk in self._fill_bytes(fill, u, a, b, False):
                yield chunk
