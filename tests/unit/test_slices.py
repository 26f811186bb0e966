"""proxy.core.slices: slice planning (example tables and hypothesis properties)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.http.ranges import Span
from proxy.core.slices import (
    UNKNOWN_LENGTH,
    SliceCut,
    SliceGeometry,
    SlicePlan,
    Unit,
    cut_run,
    cuts,
    first_units,
    leading_idle,
    needed_slices,
    slice_count,
    slice_indices,
    slice_span,
)

# --- slice_count ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "size", "expected"),
    [
        (0, 4, 0),  # an empty object has no slices
        (1, 4, 1),
        (3, 4, 1),  # smaller than one slice: one short slice
        (4, 4, 1),  # exactly one slice: no empty trailing slice
        (5, 4, 2),  # one byte over: a one-byte last slice
        (8, 4, 2),
        (9, 4, 3),
        (10**12, 2**20, 953675),
    ],
)
def test_slice_count_rounds_up_and_never_adds_an_empty_slice(length: int, size: int, expected: int) -> None:
    assert slice_count(length, size) == expected


# --- slice_span ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "size", "length", "expected"),
    [
        (0, 4, 10, Span(0, 4)),
        (1, 4, 10, Span(4, 8)),
        (2, 4, 10, Span(8, 10)),  # the last slice is short
        (1, 4, 8, Span(4, 8)),  # a length that is a multiple of S: the last slice is full
        (0, 4, 3, Span(0, 3)),  # object smaller than a slice
        (0, 4, 1, Span(0, 1)),
    ],
)
def test_slice_span_is_slice_aligned_and_clipped_to_the_object(index: int, size: int, length: int,
                                                                 expected: Span) -> None:
    assert slice_span(index, size, length) == expected


def test_suffix_slice_is_short_at_end_of_object() -> None:
    span = slice_span(slice_count(1001, 100) - 1, 100, 1001)
    assert span == Span(1000, 1001)
    assert span.size == 1


# --- slice_indices -------------------------------------------------------------


@pytest.mark.parametrize(
    ("span", "size", "expected"),
    [
        (Span(0, 1), 4, range(0, 1)),  # first byte
        (Span(0, 4), 4, range(0, 1)),  # exactly one slice: end is exclusive
        (Span(3, 4), 4, range(0, 1)),  # last byte of slice 0
        (Span(4, 5), 4, range(1, 2)),  # first byte of slice 1
        (Span(3, 5), 4, range(0, 2)),  # straddles a boundary
        (Span(1, 3), 4, range(0, 1)),  # strictly inside one slice
        (Span(2, 14), 4, range(0, 4)),  # partial first and last slices
        (Span(4, 12), 4, range(1, 3)),  # aligned on both ends
        (Span(0, 1), 1, range(0, 1)),  # slice size 1
        (Span(5, 9), 1, range(5, 9)),
    ],
)
def test_slice_indices_are_the_slices_a_span_touches(span: Span, size: int, expected: range) -> None:
    assert slice_indices(span, size) == expected


# --- cuts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spans", "size", "expected"),
    [
        ([Span(0, 4)], 4, [SliceCut(0, 0, 4)]),  # a whole slice
        ([Span(1, 3)], 4, [SliceCut(0, 1, 3)]),  # inside one slice
        ([Span(2, 10)], 4, [SliceCut(0, 2, 4), SliceCut(1, 0, 4), SliceCut(2, 0, 2)]),  # across three
        ([Span(8, 10)], 4, [SliceCut(2, 0, 2)]),  # the short last slice of a 10-byte object
        # two spans in one slice: two cuts of the same slice, in client order
        ([Span(0, 1), Span(2, 3)], 4, [SliceCut(0, 0, 1), SliceCut(0, 2, 3)]),
        ([Span(3, 5), Span(9, 12)], 4,
         [SliceCut(0, 3, 4), SliceCut(1, 0, 1), SliceCut(2, 1, 4)]),
        ([], 4, []),
    ],
)
def test_cuts_walk_spans_slice_by_slice_in_order(spans: list[Span], size: int, expected: list[SliceCut]) -> None:
    assert list(cuts(spans, size)) == expected


# --- cut_run: how a run from one slice is cut ------------------------------------


@pytest.mark.parametrize(
    ("first", "limit", "wanted", "busy", "expected"),
    [
        (0, 4, {0, 1, 2, 3}, set(), [0, 1, 2, 3]),  # everything wanted and idle: one request
        (0, 3, {0, 1, 2, 3}, set(), [0, 1, 2]),  # the limit (max_run_slices, end of object) caps it
        (1, 8, {1, 2, 4}, set(), [1, 2]),  # a slice the response does not want ends the run
        (0, 8, {0, 1, 2, 3}, {2}, [0, 1]),  # a slice cached or in flight ends the run
        (0, 8, {0, 1}, {1}, [0]),
        (5, 8, set(), set(), [5]),  # the first slice is always fetched: the caller asked for it
        (5, 6, {5, 6, 7}, set(), [5]),
        (0, 1, {0}, {0}, [0]),  # busy is asked only about the slices after the first
    ],
)
def test_cut_run_takes_the_contiguous_wanted_fetchable_slices_after_the_first(
        first: int, limit: int, wanted: set[int], busy: set[int], expected: list[int]) -> None:
    assert cut_run(first, limit, frozenset(wanted), lambda j: j not in busy) == expected


@given(st.integers(0, 50), st.integers(1, 20), st.sets(st.integers(0, 80)), st.sets(st.integers(0, 80)))
def test_cut_run_is_contiguous_bounded_and_stops_only_where_it_must(first: int, max_run: int, wanted: set[int],
                                                                  busy: set[int]) -> None:
    limit = first + max_run
    run = cut_run(first, limit, frozenset(wanted), lambda j: j not in busy)
    assert run == list(range(first, first + len(run)))
    assert 1 <= len(run) <= max_run
    assert all(j in wanted and j not in busy for j in run[1:])
    stop = first + len(run)
    assert stop == limit or stop not in wanted or stop in busy


# --- leading_idle: a discovery run takes only units nobody is filling -----------------


@pytest.mark.parametrize(
    ("run", "busy", "expected"),
    [
        ([0, 1, 2], set(), [0, 1, 2]),
        ([0, 1, 2], {1}, [0]),  # a run stays contiguous: stop at the first busy unit
        ([0, 1, 2], {0}, []),
        ([(3, 0), (3, 1)], {(3, 1)}, [(3, 0)]),
        ([], set(), []),
    ],
)
def test_leading_idle_stops_at_the_first_busy_unit(run: list[Unit], busy: set[Unit], expected: list[Unit]) -> None:
    assert leading_idle(run, lambda u: u in busy) == expected


# --- SliceGeometry: unit spans and the upstream span of a run ------------------------


@pytest.mark.parametrize(
    ("units", "length", "expected"),
    [
        ([0], 10, Span(0, 4)),
        ([1, 2], 10, Span(4, 10)),  # clipped at the end of the object
        ([2], 10, Span(8, 10)),  # only the short last slice
        ([0, 1, 2], 10, Span(0, 10)),  # the whole object
        ([1], 8, Span(4, 8)),  # a multiple of S: nothing to clip
        ([(1, 0), (1, 1)], 10, Span(4, 8)),  # blocks of 2 bytes in slices of 4
        ([(0, 1), (1, 0)], 10, Span(2, 6)),  # blocks may cross a slice boundary
        ([0, 1], UNKNOWN_LENGTH, Span(0, 8)),  # length unknown (a discovery): not clipped
    ],
)
def test_units_span_is_unit_aligned_and_clipped_at_length(units: list[Unit], length: int, expected: Span) -> None:
    assert SliceGeometry.of(4, 2).units_span(units, length) == expected


def test_geometry_block_size_never_exceeds_the_slice_size() -> None:
    g = SliceGeometry.of(4, 16)
    assert (g.slice_size, g.block_size, g.has_blocks) == (4, 4, False)
    assert SliceGeometry.of(4, 2).has_blocks


@given(st.integers(1, 10**6), st.integers(1, 4096), st.data())
def test_a_run_of_slices_spans_exactly_its_slices(length: int, size: int, data: st.DataObject) -> None:
    g = SliceGeometry.of(size, size)
    n = slice_count(length, size)
    start = data.draw(st.integers(0, n - 1))
    stop = data.draw(st.integers(start + 1, n))
    span = g.units_span(list(range(start, stop)), length)
    assert span.start == start * size == slice_span(start, size, length).start
    assert span.end == min(stop * size, length) == slice_span(stop - 1, size, length).end
    assert 0 <= span.start < span.end <= length


# --- first_units: what an unknown object's first request fetches ---------------------

G = SliceGeometry.of(1024, 64)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, [0, 1, 2, 3]),  # no Range (a whole GET): the first max_run slices
        ("bytes=0-", [0, 1, 2, 3]),
        ("garbage", [0, 1, 2, 3]),  # a malformed Range is ignored: a whole GET
        ("bytes=-500", [0]),  # a suffix needs the length first: learnt from slice 0
        ("bytes=0-10,-5", [0]),
        ("bytes=2048-4095", [2, 3]),  # a larger single range: its slices
        ("bytes=2048-", [2, 3, 4, 5]),  # open-ended: from its first slice, max_run of them
        ("bytes=1000-1100", [(0, 15), (1, 0), (1, 1)]),  # small (<= a quarter slice): only its blocks
        ("bytes=2048-99999", [2, 3, 4, 5]),  # capped at max_run
        ("bytes=5000-5010,100-200", [0, 1, 2, 3]),  # several ranges: from the lowest, max_run slices
    ],
)
def test_first_units_for_an_unknown_object(header: str | None, expected: list[Unit]) -> None:
    assert first_units(header, G, 4) == expected


def test_first_units_of_a_small_read_are_its_blocks_only_when_blocks_are_on() -> None:
    assert first_units("bytes=100-200", G, 4) == [(0, 1), (0, 2), (0, 3)]
    assert first_units("bytes=100-200", SliceGeometry.of(1024, 1024), 4) == [0]


# --- needed_slices / plan ------------------------------------------------------


@pytest.mark.parametrize(
    ("spans", "size", "expected"),
    [
        ([Span(0, 1)], 4, (0,)),
        ([Span(2, 10)], 4, (0, 1, 2)),
        ([Span(0, 1), Span(2, 3)], 4, (0,)),  # two spans in one slice: needed once
        ([Span(3, 5), Span(6, 9)], 4, (0, 1, 2)),  # shared slice 1 deduplicated
        ([Span(12, 13), Span(0, 1)], 4, (0, 3)),  # sorted whatever the span order
        ([], 4, ()),
    ],
)
def test_needed_slices_are_sorted_and_deduplicated(spans: list[Span], size: int, expected: tuple[int, ...]) -> None:
    assert needed_slices(spans, size) == expected


@pytest.mark.parametrize(
    ("spans", "cached", "status", "missing"),
    [
        ([Span(0, 12)], {0, 1, 2}, "HIT", ()),
        ([Span(0, 12)], set(), "MISS", (0, 1, 2)),
        ([Span(0, 12)], {1}, "PARTIAL", (0, 2)),
        ([Span(0, 12)], {0, 2}, "PARTIAL", (1,)),
        ([Span(0, 12)], {0, 1, 2, 7, 9}, "HIT", ()),  # extra cached slices do not matter
        ([Span(0, 4)], {5, 6}, "MISS", (0,)),  # cached slices the response does not need are no hit
        ([Span(0, 1), Span(8, 9)], {2}, "PARTIAL", (0,)),
        ([], {0}, "MISS", ()),  # nothing needed: not a HIT
    ],
)
def test_plan_status_and_missing_slices(spans: list[Span], cached: set[int], status: str,
                                        missing: tuple[int, ...]) -> None:
    p = SlicePlan(needed_slices(spans, 4), frozenset(cached))
    assert p.status == status
    assert tuple(i for i in p.needed if i not in p.cached) == missing


# --- properties ----------------------------------------------------------------


@st.composite
def data_and_spans(draw: st.DrawFn) -> tuple[bytes, list[Span], int]:
    """Random data, random sorted disjoint non-empty spans inside it, and a slice size."""
    data = draw(st.binary(min_size=1, max_size=300))
    size = draw(st.integers(1, 64))
    spans: list[Span] = []
    pos = 0
    for gap, width in draw(st.lists(st.tuples(st.integers(0, 40), st.integers(1, 80)), max_size=8)):
        start = pos + gap
        end = min(start + width, len(data))
        if start >= end:
            break
        spans.append(Span(start, end))
        pos = end
    return data, spans, size


@settings(max_examples=300)
@given(data_and_spans())
def test_cuts_reassemble_exactly_the_requested_bytes(case: tuple[bytes, list[Span], int]) -> None:
    data, spans, size = case
    got = b"".join(data[c.index * size + c.lo: c.index * size + c.hi] for c in cuts(spans, size))
    assert got == b"".join(data[s:e] for s, e in spans)


@given(data_and_spans())
def test_every_cut_is_a_non_empty_part_of_a_real_slice(case: tuple[bytes, list[Span], int]) -> None:
    data, spans, size = case
    all_cuts = list(cuts(spans, size))
    for c in all_cuts:
        assert 0 <= c.lo < c.hi <= slice_span(c.index, size, len(data)).size
    assert [c.index for c in all_cuts] == sorted(c.index for c in all_cuts)
    assert sorted({c.index for c in all_cuts}) == list(needed_slices(spans, size))


@given(st.integers(1, 10**6), st.integers(1, 4096))
def test_slices_tile_the_object(length: int, size: int) -> None:
    n = slice_count(length, size)
    spans = [slice_span(i, size, length) for i in range(min(n, 300))]
    for i, s in enumerate(spans):
        assert 0 <= s.start < s.end <= length
        assert s.start == i * size
        assert s.size == size or (i == n - 1 and 0 < s.size <= size)
    for a, b in zip(spans, spans[1:]):
        assert a.end == b.start
    assert spans[0].start == 0
    if n <= 300:
        assert spans[-1].end == length
    assert slice_span(n - 1, size, length).end == length


@given(st.integers(0, 10**6), st.integers(1, 10**4), st.integers(1, 4096))
def test_slice_indices_are_exactly_the_slices_overlapping_the_span(start: int, width: int, size: int) -> None:
    span = Span(start, start + width)
    idx = slice_indices(span, size)
    assert idx.step == 1 and len(idx) >= 1
    assert idx.start * size <= span.start < (idx.start + 1) * size
    assert (idx.stop - 1) * size < span.end <= idx.stop * size


@given(st.lists(st.integers(0, 30), min_size=1, max_size=30, unique=True), st.sets(st.integers(0, 40)))
def test_plan_status_is_hit_iff_all_cached_miss_iff_none(needed: list[int], cached: set[int]) -> None:
    p = SlicePlan(tuple(sorted(needed)), frozenset(cached))
    have = [i in cached for i in p.needed]
    assert (p.status == "HIT") == all(have)
    assert (p.status == "MISS") == (not any(have))
    assert (p.status == "PARTIAL") == (any(have) and not all(have))
