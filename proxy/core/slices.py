"""Slice planning: which slices and blocks a request needs, fetches first, and how a run is cut.

Pure arithmetic over half-open spans (no I/O). A slice ``i`` of an object of
``length`` bytes with slice size ``S`` is ``[i*S, min((i+1)*S, length))``.
The cache layer asks these functions; it only does the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Literal, Sequence

from proxy.http.ranges import Span, parse_range

__all__ = ["SliceCut", "SlicePlan", "Unit", "SliceGeometry", "slice_span", "slice_indices", "cuts", "needed_slices",
           "slice_count", "unit_slice", "unit_span", "block_range", "block_units", "prefers_blocks", "first_units",
           "cut_run", "leading_idle"]

CacheStatus = Literal["HIT", "MISS", "PARTIAL"]


def slice_count(length: int, slice_size: int) -> int:
    return -(-length // slice_size)


def slice_span(index: int, slice_size: int, length: int) -> Span:
    """Byte span of slice ``index`` (the last one is short)."""
    start = index * slice_size
    return Span(start, min(start + slice_size, length))


def slice_indices(span: Span, slice_size: int) -> range:
    """Indices of the slices a non-empty span touches."""
    return range(span.start // slice_size, (span.end - 1) // slice_size + 1)


@dataclass(frozen=True, slots=True)
class SliceCut:
    """The part ``[lo, hi)`` (offsets inside the slice) of slice ``index`` a response needs."""

    index: int
    lo: int
    hi: int


def cuts(spans: Iterable[Span], slice_size: int) -> Iterator[SliceCut]:
    """Walk client spans slice by slice, in order: what to copy from each slice."""
    for span in spans:
        for i in slice_indices(span, slice_size):
            base = i * slice_size
            yield SliceCut(i, max(span.start, base) - base, min(span.end, base + slice_size) - base)


@dataclass(frozen=True, slots=True)
class SlicePlan:
    """Which slices a response needs and which of them the cache already holds."""

    needed: tuple[int, ...]
    cached: frozenset[int]

    @property
    def status(self) -> CacheStatus:
        hit = sum(1 for i in self.needed if i in self.cached)
        if self.needed and hit == len(self.needed):
            return "HIT"
        return "PARTIAL" if hit else "MISS"


def needed_slices(spans: Iterable[Span], slice_size: int) -> tuple[int, ...]:
    if isinstance(spans, tuple) and len(spans) == 1:  # one range (every hit's plan): in order already
        return tuple(slice_indices(spans[0], slice_size))
    seen: dict[int, None] = {}
    for span in spans:
        for i in slice_indices(span, slice_size):
            seen[i] = None
    return tuple(sorted(seen))


# --- blocks: sub-slice fills for small random reads ------------------------------------
#
# A cold 64 KiB read would fetch a whole 1 MiB slice (nginx: 15.5x over-fetch for random
# 64 KiB ranges). Instead a small cut that is not part of a sequential read fetches only
# the blocks (``block_size``, a divisor of the slice size) that cover it. A unit of
# fetching and storing is either a whole slice ``i`` or block ``(i, k)`` of slice ``i``.

Unit = int | tuple[int, int]


def unit_slice(unit: Unit) -> int:
    return unit if isinstance(unit, int) else unit[0]


def unit_span(unit: Unit, slice_size: int, block_size: int, length: int) -> Span:
    """Byte span of a unit in the object (clipped at the end)."""
    if isinstance(unit, int):
        return slice_span(unit, slice_size, length)
    i, k = unit
    start = i * slice_size + k * block_size
    return Span(start, min(start + block_size, (i + 1) * slice_size, length))


def block_range(lo: int, hi: int, block_size: int) -> range:
    """Blocks of one slice covering its bytes ``[lo, hi)`` (offsets inside the slice)."""
    return range(lo // block_size, (hi - 1) // block_size + 1)


def block_units(span: Span, slice_size: int, block_size: int) -> list[Unit]:
    """Block units covering ``span``, in byte order (they may cross a slice boundary)."""
    out: list[Unit] = []
    for cut in cuts((span,), slice_size):
        out.extend((cut.index, k) for k in block_range(cut.lo, cut.hi, block_size))
    return out


def prefers_blocks(cut_size: int, slice_size: int, block_size: int, sequential: bool) -> bool:
    """Fetch blocks, not the whole slice, for a small cut outside a sequential read."""
    return block_size < slice_size and not sequential and cut_size <= slice_size // 4


@dataclass(frozen=True, slots=True)
class SliceGeometry:
    """How one cache cuts objects: its slice size and the block size of small reads."""

    slice_size: int
    block_size: int  # a divisor of slice_size; equal to it when blocks are off

    @classmethod
    def of(cls, slice_size: int, block_size: int) -> SliceGeometry:
        return cls(slice_size, min(block_size, slice_size))

    @property
    def has_blocks(self) -> bool:
        return self.block_size < self.slice_size

    def unit_span(self, unit: Unit, length: int) -> Span:
        return unit_span(unit, self.slice_size, self.block_size, length)

    def unit_size(self, unit: Unit, length: int) -> int:
        if isinstance(unit, int):  # a whole slice (the hot path of every hit): no Span built
            return max(0, min(self.slice_size, length - unit * self.slice_size))
        return self.unit_span(unit, length).size

    def units_span(self, units: Sequence[Unit], length: int) -> Span:
        """The upstream span of a run of contiguous units (first unit's start to last one's end)."""
        return Span(self.unit_span(units[0], length).start, self.unit_span(units[-1], length).end)

    def slice_count(self, length: int) -> int:
        return slice_count(length, self.slice_size)


UNKNOWN_LENGTH = 2**62  # unit spans of an object whose length is not known yet are not clipped


def first_units(range_header: str | None, geometry: SliceGeometry, max_run: int) -> list[Unit]:
    """What to fetch first for an object we know nothing about yet (its length unknown).

    A small single range fetches only the blocks covering it; a suffix needs the
    length first (learnt from slice 0); anything else starts at the first slice
    it needs, for up to ``max_run`` slices.
    """
    S, B = geometry.slice_size, geometry.block_size
    specs = parse_range(range_header)
    if specs is None:
        return list(range(0, max_run))
    if any(s.first is None for s in specs):
        return [0]
    first = min(s.first for s in specs if s.first is not None)
    last = specs[0].last
    if len(specs) == 1 and last is not None:
        if prefers_blocks(last + 1 - first, S, B, sequential=False):
            return block_units(Span(first, last + 1), S, B)
        stop = last // S + 1
    else:
        stop = first // S + max_run
    start = first // S
    return list(range(start, min(stop, start + max_run)))


def cut_run(first: int, limit: int, wanted: frozenset[int], fetchable: Callable[[int], bool]) -> list[Unit]:
    """A run from slice ``first``: the contiguous slices after it that the response wants
    and that are fetchable (neither cached nor in flight), up to slice ``limit`` (exclusive)."""
    end = first + 1
    while end < limit and end in wanted and fetchable(end):
        end += 1
    return list(range(first, end))


def leading_idle(run: Sequence[Unit], busy: Callable[[Unit], bool]) -> list[Unit]:
    """The leading units of ``run`` that are not ``busy`` (a run stays contiguous)."""
    out: list[Unit] = []
    for u in run:
        if busy(u):
            break
        out.append(u)
    return out
