"""Which slices a response needs and which of them are cached: stored, held, or complete in flight."""

from __future__ import annotations

from proxy.cache.files import UnitFiles
from proxy.cache.flights import FlightRegistry, SliceFill
from proxy.cache.hits import OPEN_KNOWN_SLICES
from proxy.core.representation import ObjectMeta
from proxy.core.slices import SlicePlan, Unit, block_range, cuts, needed_slices, prefers_blocks, unit_slice
from proxy.http.ranges import Span

__all__ = ["CachePlanner"]


class CachePlanner:
    """Plans a response against the store and the fills in flight (X-Cache comes from here)."""

    def __init__(self, files: UnitFiles, flights: FlightRegistry) -> None:
        self.files = files
        self.flights = flights

    def held_plan(self, meta: ObjectMeta, spans: tuple[Span, ...]) -> SlicePlan | None:
        """The plan of a hit whose every slice is held open, without an await (the hot path);
        None otherwise (then :meth:`plan`)."""
        if not meta.storable:
            return None
        geometry = self.files.geometry
        needed = needed_slices(spans, geometry.slice_size)
        if not needed:
            return None
        # A few slices the file index knows are opened and held here (no SQLite, no await),
        # as the hit itself would: with a catalogue larger than the files held open, most hits
        # are such, and the awaited plan cost them a quarter of their time.
        few = len(needed) <= OPEN_KNOWN_SLICES
        store = self.files.store
        for i in needed:
            if not self.files.holds(meta, i) and not (
                    few and store.hold_known(meta.url, meta.validator, i, geometry.unit_size(i, meta.length)) is not None):
                return None
        return SlicePlan(needed, frozenset(needed))

    async def plan(self, meta: ObjectMeta, spans: tuple[Span, ...],
                   fetched: tuple[Unit, ...] | None = None) -> SlicePlan:
        """Needed slices and which are cached (whole, or by blocks covering what is needed).

        ``fetched`` (this request's own discovery run) counts as fetched for this
        response even if it already reached the store.
        """
        geometry, store = self.files.geometry, self.files.store
        S, B = geometry.slice_size, geometry.block_size
        needed = needed_slices(spans, S)
        if not meta.storable or not needed:
            return SlicePlan(needed, frozenset())
        own = {unit_slice(u) for u in fetched or ()}
        fl = self.flights.current(meta)
        # A snapshot of the fill objects, taken before any await: a fill that finishes
        # storing during the store query leaves the flights and must still count as present.
        fills: dict[Unit, SliceFill] = dict(fl.fills) if fl is not None else {}
        # Slices being filled are not in the store: no need to ask it (collapsed waiters
        # of a cold object then start reading without a thread hop).
        present = await store.present(meta.url, meta.validator, [i for i in needed if i not in fills])

        def done(u: Unit) -> bool:  # complete and verified: stored, or on its way to the store
            f = fills.get(u)
            return f is not None and f.done and f.error is None

        present.update(i for i in needed if done(i))
        if geometry.has_blocks:
            # Blocks serve a cut only when its slice is neither here nor being filled whole;
            # a small cut reads them from the store, a larger one only from held files
            # (the reader does the same). So only a small cut's blocks are worth asking the
            # index about: asking about all 64 blocks of every megabyte cut cost 50
            # collapsed waiters 400 ms of queries.
            want: dict[int, list[range]] = {}  # slice -> the blocks of its cuts
            ask: list[Unit] = []
            for cut in cuts(spans, S):
                i = cut.index
                if i in present or i in fills:
                    continue
                blocks = block_range(cut.lo, cut.hi, B)
                want.setdefault(i, []).append(blocks)
                if prefers_blocks(cut.hi - cut.lo, S, B, False):
                    ask.extend((i, k) for k in blocks)
            if want:
                have = await store.present_units(meta.url, meta.validator, ask) if ask else set()

                def held(u: Unit) -> bool:
                    return u in have or done(u) or self.files.holds(meta, u)

                # Stops at a slice's first missing block: a cold slice costs one look, not 64.
                present.update(i for i, ranges in want.items() if all(held((i, k)) for r in ranges for k in r))
        return SlicePlan(needed, frozenset(present.difference(own)))
