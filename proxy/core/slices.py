"""The slice planner: client spans -> slices cached / missing -> upstream runs.

Pure arithmetic over half-open spans (no I/O). A slice ``i`` of an object of
``length`` bytes with slice size ``S`` is ``[i*S, min((i+1)*S, length))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Literal

from proxy.http.ranges import Span

__all__ = ["SliceCut", "SlicePlan", "Unit", "slice_span", "slice_indices", "cuts", "runs", "plan", "slice_count",
           "unit_slice", "unit_span", "block_range", "block_units", "prefers_blocks"]

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


def runs(missing: Iterable[int], max_run: int) -> list[range]:
    """Group sorted missing indices into contiguous runs of at most ``max_run`` slices.

    One run is one upstream Range request (nginx would send one per slice).
    """
    out: list[range] = []
    start = prev = None
    for i in sorted(set(missing)):
        if start is not None and prev is not None and i == prev + 1 and i - start < max_run:
            prev = i
            continue
        if start is not None and prev is not None:
            out.append(range(start, prev + 1))
        start = prev = i
    if start is not None and prev is not None:
        out.append(range(start, prev + 1))
    return out


def run_span(run: range, slice_size: int, length: int) -> Span:
    """The upstream byte span for a run of slices (slice-aligned, clipped to the end)."""
    return Span(run.start * slice_size, min(run.stop * slice_size, length))


@dataclass(frozen=True, slots=True)
class SlicePlan:
    """Which slices a response needs and which of them the cache already holds."""

    needed: tuple[int, ...]
    cached: frozenset[int]

    @property
    def missing(self) -> tuple[int, ...]:
        return tuple(i for i in self.needed if i not in self.cached)

    @property
    def status(self) -> CacheStatus:
        hit = sum(1 for i in self.needed if i in self.cached)
        if self.needed and hit == len(self.needed):
            return "HIT"
        return "PARTIAL" if hit else "MISS"


def needed_slices(spans: Iterable[Span], slice_size: int) -> tuple[int, ...]:
    seen: dict[int, None] = {}
    for span in spans:
        for i in slice_indices(span, slice_size):
            seen[i] = None
    return tuple(sorted(seen))


def plan(spans: Iterable[Span], slice_size: int, cached: Iterable[int]) -> SlicePlan:
    return SlicePlan(needed_slices(spans, slice_size), frozenset(cached))


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
