"""The client side of the engine: the bytes of a response, slice by slice.

For each slice a response needs: a held slice file (hits, sent zero-copy by the
handler when everything is held), a fill in flight (collapsed onto another
response's fetch), the blocks of a small random read, or a new run. Read-ahead
and pipelining keep a sequential reader ahead of the origin.
"""


from __future__ import annotations


import os
import time
from dataclasses import dataclass
from typing import AsyncIterator

from proxy.cache.engine_parts import EngineParts
from proxy.http.errors import (
    VersionChanged,
)
from proxy.cache.flights import FillAbandoned, ObjectFlights, SliceFill
from proxy.http.ranges import Span
from proxy.core.representation import (
    ObjectMeta,
)
from proxy.core.slices import (
    SlicePlan,
    Unit,
    block_range,
    cuts,
    needed_slices,
    prefers_blocks,
    slice_count,
    unit_slice,
    unit_span,
)

__all__ = ["Assembly", "RequestTally", "FilePiece", "close_pieces", "part_size"]

SWITCH_TO_FILE = 64 * 1024  # bytes left in a stored fill worth a file piece instead of its memory
READERS_MEMORY = 10_000  # objects whose last read position is remembered (sequential detection)

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


def part_size(part: bytes | FilePiece) -> int:
    """Bytes a part of a body stands for (in memory, or in a file)."""
    return part.count if isinstance(part, FilePiece) else len(part)


def close_pieces(pieces: list[bytes | FilePiece]) -> None:
    for p in pieces:
        if isinstance(p, FilePiece):
            os.close(p.fd)




class Assembly(EngineParts):
    """Mixin of :class:`proxy.cache.engine.Engine`: plan, hit files, and the byte stream of a response."""

    def _held_pieces(self, meta: ObjectMeta, i: int, lo: int, hi: int) -> list[tuple[int, int, int]] | None:
        """(fd, offset, count) pieces for bytes ``[lo, hi)`` of slice ``i`` from held files.

        The whole slice if it is held open, else the blocks covering the cut; None
        when something is not held or a file has the wrong length (then dropped).
        """
        store, S, B = self.store, self.slice_size, self.block_size
        fd = store.checked_fd(meta.url, meta.validator, i, unit_span(i, S, B, meta.length).size)
        if fd is not None:
            return [(fd, lo, hi - lo)]
        if B >= S:
            return None
        out = []
        for k in block_range(lo, hi, B):
            u: Unit = (i, k)
            fd = store.checked_fd(meta.url, meta.validator, u, unit_span(u, S, B, meta.length).size)
            if fd is None:
                return None
            base = k * B
            out.append((fd, max(lo, base) - base, min(hi, base + B) - max(lo, base)))
        return out

    def _hit_parts(self, meta: ObjectMeta, pieces: tuple[bytes | Span, ...]
                   ) -> tuple[list[bytes | tuple[int, int, int]], int] | None:
        """The body as framing bytes and (held fd, offset, count) parts, and its cut count;
        None when any slice is not held or has the wrong length (then the general path)."""
        if not meta.storable:
            return None
        out: list[bytes | tuple[int, int, int]] = []
        cuts_n = 0
        for piece in pieces:
            if isinstance(piece, bytes):
                out.append(piece)
                continue
            for cut in cuts((piece,), self.slice_size):
                held = self._held_pieces(meta, cut.index, cut.lo, cut.hi)
                if held is None:
                    return None
                cuts_n += 1
                out.extend(held)
        return out, cuts_n

    def _count_hit(self, tally: RequestTally, cuts_n: int, n: int) -> None:
        self.counters.slice_lookups["hit"] += cuts_n
        self.counters.response_bytes["cache"] += n
        tally.hits += cuts_n
        tally.cache_bytes += n

    def hit_files(self, meta: ObjectMeta, pieces: tuple[bytes | Span, ...],
                  tally: RequestTally) -> list[bytes | FilePiece] | None:
        """The whole body as framing bytes and file pieces, if every slice is held open.

        The fast path for hits (aiohttp's web_fileresponse shape): the caller sends
        each FilePiece with sendfile. Each fd is a dup the caller closes, so the store
        may close its own at any time. None when any slice is not held or has the
        wrong length (the general path then refetches it).
        """
        found = self._hit_parts(meta, pieces)
        if found is None:
            return None
        parts, cuts_n = found
        out: list[bytes | FilePiece] = []
        try:
            for part in parts:
                out.append(part if isinstance(part, bytes) else FilePiece(os.dup(part[0]), part[1], part[2]))
        except OSError:
            close_pieces(out)
            return None
        self._count_hit(tally, cuts_n, sum(p.count for p in out if isinstance(p, FilePiece)))
        return out

    def hit_bytes(self, meta: ObjectMeta, pieces: tuple[bytes | Span, ...], tally: RequestTally) -> bytes | None:
        """The whole body of a small hit, read from the held files at once (no fd dup: nothing
        awaits between the lookup and the read). None as :meth:`hit_files`, or on a short
        read (the file shrank: the general path finds and drops it)."""
        found = self._hit_parts(meta, pieces)
        if found is None:
            return None
        parts, cuts_n = found
        out: list[bytes] = []
        n = 0
        try:
            for part in parts:
                if isinstance(part, bytes):
                    out.append(part)
                    continue
                fd, off, count = part
                data = os.pread(fd, count, off)
                if len(data) != count:
                    return None
                out.append(data)
                n += count
        except OSError:
            return None
        self._count_hit(tally, cuts_n, n)
        return b"".join(out)

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
        fl = self._flights.get(meta.url)
        live = fl.fills if fl is not None and fl.validator == meta.validator else {}
        # A snapshot of the fill objects, taken before any await: a fill that finishes
        # storing during the store query leaves ``live`` and must still count as present.
        fills = dict(live)
        # Slices being filled are not in the store: no need to ask it (collapsed waiters
        # of a cold object then start reading without a thread hop).
        present = await self.store.present(meta.url, meta.validator, [i for i in needed if i not in fills])

        def done(u: Unit) -> bool:  # complete and verified: stored, or on its way to the store
            f = fills.get(u)
            return f is not None and f.done and f.error is None

        present.update(i for i in needed if done(i))
        if B < S:
            # Blocks serve a cut only when its slice is neither here nor being filled whole;
            # a small cut reads them from the store, a larger one only from held files
            # (stream() does the same). So only a small cut's blocks are worth asking the
            # index about: asking about all 64 blocks of every megabyte cut cost 50
            # collapsed waiters 400 ms of queries.
            want: dict[int, set[Unit]] = {}
            ask: list[Unit] = []
            for cut in cuts(spans, S):
                i = cut.index
                if i in present or i in fills:
                    continue
                units = [(i, k) for k in block_range(cut.lo, cut.hi, B)]
                want.setdefault(i, set()).update(units)
                if prefers_blocks(cut.hi - cut.lo, S, B, False):
                    ask.extend(units)
            if want:
                have = await self.store.present_units(meta.url, meta.validator, ask) if ask else set()
                have.update(u for us in want.values() for u in us
                            if done(u) or self.store.holds(meta.url, meta.validator, u))
                present.update(i for i, us in want.items() if us <= have)
        return SlicePlan(needed, frozenset(present.difference(own)))

    async def stream(self, meta: ObjectMeta, spans: tuple[Span, ...], plan: SlicePlan,
                     tally: RequestTally | None = None,
                     started: tuple[Unit, ...] | None = None,
                     files: bool = False) -> AsyncIterator[bytes | FilePiece]:
        """Yield the bytes of ``spans`` in order, from the store, fills in flight, or new runs.

        With ``files``, a stored slice comes as a :class:`FilePiece` (the caller sends it
        with sendfile and closes its fd), and a reader of a fill switches to the file
        once the fill is stored: nothing pins a megabyte per response in memory.
        """
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
                size = cut.hi - cut.lo
                run = self._follow(meta.url, start, start + size)
                # Sequential once a quarter slice was read back to back before this cut:
                # then whole slices; a small range that merely straddles a slice boundary is not.
                small = prefers_blocks(size, self.slice_size, self.block_size,
                                       run - size >= self.slice_size // 4)
                async for chunk in self._cut_bytes(meta, fl, cut.index, cut.lo, cut.hi, wanted, plan.cached, mine,
                                                    tally, small, files):
                    if ahead:  # once slice i is flowing, look after i+1 and beyond
                        ahead = False
                        self._look_ahead(meta, fl, cut.index, wanted, plan.cached, mine, run, small)
                    yield chunk
        finally:
            self.active_streams -= 1
            fl.release(needed)
            self._forget_idle(meta.url, fl)

    def _follow(self, url: str, start: int, end: int) -> int:
        """Bytes of this object read back to back up to ``end`` (just this cut: a jump).

        A player or a download reads on from where it stopped, in one request or in
        the next; random readers jump. Only exact continuation counts.
        """
        prev_end, run = self._reading.get(url, (-1, 0))
        run = run + (end - start) if start == prev_end else end - start
        self._reading[url] = (end, run)
        self._reading.move_to_end(url)
        while len(self._reading) > READERS_MEMORY:
            self._reading.popitem(last=False)
        return run

    def _look_ahead(self, meta: ObjectMeta, fl: ObjectFlights, i: int, wanted: frozenset[int],
                    cached: frozenset[int], mine: set[Unit], run: int, small: bool = False) -> None:
        """Pipelining and read-ahead while slice ``i`` is being read.

        The next slice this response needs is put on its way now, so a run boundary
        costs no round trip. A reader that has gone through two consecutive slices
        (a player, a download) also gets up to ``readahead_slices`` beyond its own
        range prefetched, so its next request finds them cached or in flight.
        """
        if fl.dead:
            return
        nxt = i + 1
        # A small read (blocks) pipelines nothing: the rest of it is small too, or it would not be.
        if not small and nxt in wanted and self._fetchable(meta, fl, nxt, cached):
            mine.update(self.start_run(meta, fl, nxt, wanted, cached)[1])
        if run >= 2 * self.slice_size:  # "after two consecutive slices": two slices' worth in a row
            self._read_ahead(meta, i, wanted)

    def _read_ahead(self, meta: ObjectMeta, i: int, wanted: frozenset[int] = frozenset()) -> None:
        """Prefetch up to ``readahead_slices`` after slice ``i`` that are neither wanted by the
        response itself, cached (asked of the store), nor in flight."""
        depth = self.settings.readahead_slices
        if depth <= 0 or not meta.storable:
            return
        last = min(i + depth, slice_count(meta.length, self.slice_size) - 1)
        fl = self.flights_for(meta)  # type: ignore[attr-defined]
        ahead = [j for j in range(i + 1, last + 1) if j not in wanted and self._fetchable(meta, fl, j, frozenset())]
        if ahead:
            self._spawn(self._prefetch(meta, ahead))  # type: ignore[attr-defined]

    async def _prefetch(self, meta: ObjectMeta, ahead: list[int]) -> None:
        cached = frozenset(await self.store.present(meta.url, meta.validator, ahead))
        fl = self.flights_for(meta)  # type: ignore[attr-defined]
        todo = frozenset(ahead) - cached
        for j in sorted(todo):
            if not fl.dead and self._fetchable(meta, fl, j, cached):
                self.counters.prefetches += 1
                self.start_run(meta, fl, j, todo, cached, hold=True)  # type: ignore[attr-defined]

    def note_hits(self, meta: ObjectMeta, spans: tuple[Span, ...]) -> None:
        """A response sent whole from held files still counts as reading: keep the
        sequential detection going and read ahead of a player that only hits."""
        last, run = -1, 0
        for cut in cuts(spans, self.slice_size):
            start = cut.index * self.slice_size + cut.lo
            run = self._follow(meta.url, start, start + cut.hi - cut.lo)
            last = cut.index
        if last >= 0 and run >= 2 * self.slice_size:
            self._read_ahead(meta, last)

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

    async def _stored_fd(self, meta: ObjectMeta, u: Unit) -> int | None:
        """The fd of a stored unit, held or opened now, its length checked once; None for
        a miss, or a damaged file (then dropped)."""
        size = unit_span(u, self.slice_size, self.block_size, meta.length).size
        fd = self.store.checked_fd(meta.url, meta.validator, u, size)
        if fd is None:
            fd = await self.store.open_slice(meta.url, meta.validator, u, size)
        return fd

    async def _stored(self, meta: ObjectMeta, u: Unit, lo: int, hi: int) -> bytes | None:
        """Bytes ``[lo, hi)`` of a stored unit, or None (miss, or damaged and dropped)."""
        fd = await self._stored_fd(meta, u)
        return None if fd is None else self.store.pread(meta.url, meta.validator, u, fd, lo, hi)

    async def _stored_file(self, meta: ObjectMeta, u: Unit, lo: int, hi: int) -> FilePiece | None:
        """Bytes ``[lo, hi)`` of a stored unit as a file piece, or None (miss, or damaged and dropped)."""
        fd = await self._stored_fd(meta, u)
        return None if fd is None else FilePiece(os.dup(fd), lo, hi - lo)

    async def _stored_part(self, meta: ObjectMeta, u: Unit, lo: int, hi: int,
                           files: bool) -> bytes | FilePiece | None:
        """Bytes ``[lo, hi)`` of a stored unit: a file piece when the caller can sendfile."""
        return await (self._stored_file(meta, u, lo, hi) if files else self._stored(meta, u, lo, hi))

    async def _cut_bytes(self, meta: ObjectMeta, fl: ObjectFlights, i: int, lo: int, hi: int,
                         wanted: frozenset[int], cached: frozenset[int], mine: set[Unit],
                         tally: RequestTally, small: bool, files: bool) -> AsyncIterator[bytes | FilePiece]:
        """Bytes ``[lo, hi)`` of slice ``i``: whole slice stored or in flight, else its blocks
        (stored, in flight, or fetched) for a small cut, else a new slice run."""
        fill = fl.fills.get(i)
        if fill is None and meta.storable:
            got = await self._stored_part(meta, i, lo, hi, files)
            if got is not None:
                self._sent(tally, self._lookup(tally, "miss" if i in mine else "hit"), part_size(got))
                yield got
                return
            fill = fl.fills.get(i)
        if fill is None and (small or self._blocks_held(meta, i, lo, hi)):
            async for chunk in self._blocks_bytes(meta, fl, i, lo, hi, mine, tally):
                yield chunk
            return
        if fill is None:
            fill, run = self.start_run(meta, fl, i, wanted, cached)
            mine.update(run)
        async for chunk in self._fill_bytes(meta, fill, i, lo, hi, mine, tally, files):
            yield chunk

    async def _fill_bytes(self, meta: ObjectMeta, fill: SliceFill, u: Unit, lo: int, hi: int, mine: set[Unit],
                          tally: RequestTally, files: bool = False) -> AsyncIterator[bytes | FilePiece]:
        """Read a fill; a complete one fetched by another response is as good as a hit.

        With ``files``, once the fill is on disk the rest comes from its file: a slow
        client then holds a file descriptor, not the fill's memory.
        """
        result = "miss" if u in mine else ("hit" if fill.done and fill.error is None else "collapsed")
        source = self._lookup(tally, result)
        t0 = time.monotonic()
        pos = lo
        reader = fill.read(lo, hi)
        try:
            async for chunk in reader:
                if source == "origin":
                    tally.upstream_seconds += time.monotonic() - t0
                self._sent(tally, source, len(chunk))
                yield chunk
                pos += len(chunk)
                if files and fill.stored and hi - pos >= SWITCH_TO_FILE:
                    break
                t0 = time.monotonic()
        finally:
            await reader.aclose()
        if pos < hi:  # the fill went to disk (and left memory) before we were through it
            rest = await self._stored_part(meta, u, pos, hi, files)
            if rest is None:
                raise FillAbandoned(f"{meta.url}: slice {u} left memory and its file is gone")
            self._sent(tally, source, part_size(rest))
            yield rest

    def _blocks_held(self, meta: ObjectMeta, i: int, lo: int, hi: int) -> bool:
        B = self.block_size
        return B < self.slice_size and all(
            self.store.holds(meta.url, meta.validator, (i, k)) for k in block_range(lo, hi, B))

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
            async for chunk in self._fill_bytes(meta, fill, u, a, b, mine, tally):
                yield chunk
