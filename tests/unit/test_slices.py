"""proxy.core.slices: the slice planner (example tables and hypothesis properties)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.http.ranges import Span
from proxy.core.slices import (
    SliceCut,
    SlicePlan,
    cuts,
    needed_slices,
    plan,
    run_span,
    runs,
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


# --- runs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("missing", "max_run", "expected"),
    [
        ([], 4, []),
        ([3], 4, [range(3, 4)]),
        ([1, 2, 3], 4, [range(1, 4)]),  # contiguous: one upstream request
        ([1, 2, 3, 5], 4, [range(1, 4), range(5, 6)]),  # a gap splits the run
        ([5, 3, 1, 2, 3], 4, [range(1, 4), range(5, 6)]),  # unsorted and duplicated input
        (range(0, 7), 3, [range(0, 3), range(3, 6), range(6, 7)]),  # max_run caps the run length
        (range(0, 6), 3, [range(0, 3), range(3, 6)]),  # exact multiple: no empty trailing run
        ([0, 1, 2], 1, [range(0, 1), range(1, 2), range(2, 3)]),  # nginx-like: one request per slice
        ([0, 1, 2], 100, [range(0, 3)]),
        ([0, 2, 4], 100, [range(0, 1), range(2, 3), range(4, 5)]),
    ],
)
def test_runs_group_missing_slices_into_bounded_contiguous_requests(missing: list[int], max_run: int,
                                                                     expected: list[range]) -> None:
    assert runs(missing, max_run) == expected


# --- run_span ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("run", "size", "length", "expected"),
    [
        (range(0, 1), 4, 10, Span(0, 4)),
        (range(1, 3), 4, 10, Span(4, 10)),  # clipped at the end of the object
        (range(2, 3), 4, 10, Span(8, 10)),  # only the short last slice
        (range(0, 3), 4, 10, Span(0, 10)),  # the whole object
        (range(1, 2), 4, 8, Span(4, 8)),  # a multiple of S: nothing to clip
    ],
)
def test_run_span_is_slice_aligned_and_clipped_at_length(run: range, size: int, length: int,
                                                         expected: Span) -> None:
    assert run_span(run, size, length) == expected


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
    p = plan(spans, 4, cached)
    assert p.status == status
    assert p.missing == missing


def test_plan_missing_keeps_needed_order_and_cached_is_a_frozenset() -> None:
    p = plan([Span(0, 40)], 4, iter([3, 5]))  # any iterable of cached indices
    assert p.needed == tuple(range(10))
    assert p.cached == frozenset({3, 5})
    assert p.missing == (0, 1, 2, 4, 6, 7, 8, 9)


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


@given(st.lists(st.integers(0, 200), max_size=60), st.integers(1, 20))
def test_runs_partition_the_missing_set(missing: list[int], max_run: int) -> None:
    out = runs(missing, max_run)
    covered = [i for r in out for i in r]
    assert covered == sorted(set(missing))  # sorted, disjoint, covering exactly the set
    for r in out:
        assert r.step == 1 and 1 <= len(r) <= max_run
    # A run ends early only at a gap or at max_run: never more requests than needed.
    for a, b in zip(out, out[1:]):
        assert b.start > a.stop or len(a) == max_run


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


@given(st.integers(1, 10**6), st.integers(1, 4096), st.data())
def test_run_span_is_slice_aligned_at_start_and_clipped_at_length(length: int, size: int,
                                                                 data: st.DataObject) -> None:
    n = slice_count(length, size)
    start = data.draw(st.integers(0, n - 1))
    stop = data.draw(st.integers(start + 1, n + 3))
    span = run_span(range(start, stop), size, length)
    assert span.start == start * size == slice_span(start, size, length).start
    assert span.end == min(stop * size, length)
    assert 0 <= span.start < span.end <= length
    last = min(stop, n) - 1
    assert span.end == slice_span(last, size, length).end  # the run covers exactly its slices


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
    assert p.missing == tuple(i for i in p.needed if i not in cached)
