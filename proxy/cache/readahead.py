"""Sequential readers (players, downloads) and the slices prefetched ahead of them."""

from __future__ import annotations

from collections import OrderedDict

from proxy.cache.flights import FlightRegistry
from proxy.cache.runs import RunLauncher, RunWants
from proxy.core.representation import ObjectMeta
from proxy.core.slices import cuts
from proxy.http.ranges import Span

__all__ = ["SequentialReads", "ReadAhead", "READERS_MEMORY"]

READERS_MEMORY = 10_000  # objects whose last read position is remembered (sequential detection)


class SequentialReads:
    """How many bytes of each object were read back to back, up to the last cut."""

    def __init__(self, memory: int = READERS_MEMORY) -> None:
        self.memory = memory
        self._reading: OrderedDict[str, tuple[int, int]] = OrderedDict()  # url -> (end of last cut, bytes in a row)

    def follow(self, url: str, start: int, end: int) -> int:
        """Bytes of this object read back to back up to ``end`` (just this cut: a jump).

        A player or a download reads on from where it stopped, in one request or in
        the next; random readers jump. Only exact continuation counts.
        """
        prev_end, run = self._reading.get(url, (-1, 0))
        run = run + (end - start) if start == prev_end else end - start
        self._reading[url] = (end, run)
        self._reading.move_to_end(url)
        while len(self._reading) > self.memory:
            self._reading.popitem(last=False)
        return run


class ReadAhead:
    """Prefetches up to ``readahead_slices`` beyond a reader that has gone through two
    consecutive slices, so its next request finds them cached or in flight."""

    def __init__(self, runs: RunLauncher, flights: FlightRegistry, reads: SequentialReads) -> None:
        self.runs = runs
        self.flights = flights
        self.reads = reads
        self.slice_size = runs.files.geometry.slice_size

    def sequential(self, run: int) -> bool:
        """"After two consecutive slices": two slices' worth read in a row."""
        return run >= 2 * self.slice_size

    def after(self, meta: ObjectMeta, i: int, wanted: frozenset[int] = frozenset()) -> None:
        """Prefetch up to ``readahead_slices`` after slice ``i`` that are neither wanted by the
        response itself, cached (asked of the store), nor in flight."""
        depth = self.runs.settings.readahead_slices
        if depth <= 0 or not meta.storable or meta.answer:  # stored whole: nothing is added to it
            return
        last = min(i + depth, self.runs.files.geometry.slice_count(meta.length) - 1)
        fl = self.flights.for_meta(meta)
        ahead = [j for j in range(i + 1, last + 1)
                 if j not in wanted and self.runs.fetchable(meta, fl, j, frozenset())]
        if ahead:
            self.runs.jobs.spawn(self._prefetch(meta, ahead))

    async def _prefetch(self, meta: ObjectMeta, ahead: list[int]) -> None:
        store = self.runs.files.store
        cached = frozenset(await store.present(meta.url, meta.validator, ahead))
        fl = self.flights.for_meta(meta)
        todo = frozenset(ahead) - cached
        for j in sorted(todo):
            if not fl.dead and self.runs.fetchable(meta, fl, j, cached):
                self.runs.origin.counters.prefetches += 1
                self.runs.start_run(meta, fl, j, RunWants(todo, cached), hold=True)  # no client's fields

    def note_hits(self, meta: ObjectMeta, spans: tuple[Span, ...]) -> None:
        """A response sent whole from held files still counts as reading: keep the
        sequential detection going and read ahead of a player that only hits."""
        last, run = -1, 0
        for cut in cuts(spans, self.slice_size):
            start = cut.index * self.slice_size + cut.lo
            run = self.reads.follow(meta.url, start, start + cut.hi - cut.lo)
            last = cut.index
        if last >= 0 and self.sequential(run):
            self.after(meta, last)
