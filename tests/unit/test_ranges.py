"""proxy.http.ranges: example tables (RFC 9110 §14.1.2, Starlette regressions) and properties."""

from __future__ import annotations

import email
import email.policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.http.ranges import (
    answers_range,
    Conflict,
    ContentRange,
    Ignore,
    RangeSpec,
    Satisfiable,
    Span,
    Unsatisfiable,
    coalesce,
    etag_matches_weak,
    evaluate,
    fill,
    format_content_range,
    format_unsatisfied,
    if_range_matches,
    multipart,
    parse_content_range,
    parse_range,
    resolve,
    select_range_header,
)

# --- parsing -----------------------------------------------------------------

PARSE_CASES = [
    ("bytes=0-499", (RangeSpec(0, 499),)),
    ("bytes=500-999", (RangeSpec(500, 999),)),
    ("bytes=-500", (RangeSpec(None, 500),)),
    ("bytes=9500-", (RangeSpec(9500, None),)),
    ("bytes=0-0,-1", (RangeSpec(0, 0), RangeSpec(None, 1))),
    ("bytes= 0-9 , 20-29", (RangeSpec(0, 9), RangeSpec(20, 29))),
    ("bytes=0-9,,20-29,", (RangeSpec(0, 9), RangeSpec(20, 29))),
    ("BYTES=1-2", (RangeSpec(1, 2),)),
    ("bytes=500-600,601-999", (RangeSpec(500, 600), RangeSpec(601, 999))),
    ("bytes=500-700,601-999", (RangeSpec(500, 700), RangeSpec(601, 999))),
]

IGNORED = [
    None,
    "",
    "bytes",
    "bytes=",
    "bytes=,",
    "bytes=-",
    "bytes=5-4",  # Starlette #3388: last < first invalidates the field
    "bytes=+1-2",
    "bytes=1-+2",
    "bytes=1_0-20",
    "bytes=١-٢",  # non-ASCII digits that int() would accept
    "bytes=a-b",
    "bytes=1-2-3",
    "bytes=0x10-20",
    "items=0-5",  # unknown unit: ignore (Starlette returned 400)
    "bytes 0-5",
    "bytes=--5",
    "bytes=1.5-2",
    "bytes=" + "0-0," * 10_000,  # oversized header is ignored before parsing
]


@pytest.mark.parametrize(("header", "expected"), PARSE_CASES)
def test_parse_valid_examples(header: str, expected: tuple[RangeSpec, ...]) -> None:
    assert parse_range(header) == expected


@pytest.mark.parametrize("header", IGNORED)
def test_malformed_or_unknown_unit_is_ignored(header: str | None) -> None:
    assert parse_range(header) is None
    assert isinstance(evaluate(header, 10_000), Ignore)


# --- RFC 9110 §14.1.2 examples against a 10000-byte representation -------------

RFC_EXAMPLES = [
    ("bytes=0-499", [(0, 500)]),  # the first 500 bytes
    ("bytes=500-999", [(500, 1000)]),  # the second 500 bytes
    ("bytes=-500", [(9500, 10000)]),  # the final 500 bytes
    ("bytes=9500-", [(9500, 10000)]),  # the final 500 bytes
    ("bytes=0-0,-1", [(0, 1), (9999, 10000)]),  # first and last bytes
    ("bytes=500-600,601-999", [(500, 1000)]),  # adjacent: coalesced
    ("bytes=500-700,601-999", [(500, 1000)]),  # overlapping: coalesced
]


@pytest.mark.parametrize(("header", "spans"), RFC_EXAMPLES)
def test_rfc9110_examples(header: str, spans: list[tuple[int, int]]) -> None:
    out = evaluate(header, 10_000)
    assert out == Satisfiable(tuple(Span(*s) for s in spans), 10_000)


def test_last_pos_past_eof_is_clipped() -> None:
    assert evaluate("bytes=9000-20000", 10_000) == Satisfiable((Span(9000, 10_000),), 10_000)


def test_suffix_longer_than_object_returns_whole_object() -> None:
    assert evaluate("bytes=-20000", 10_000) == Satisfiable((Span(0, 10_000),), 10_000)


def test_first_pos_at_eof_is_unsatisfiable() -> None:
    assert evaluate("bytes=10000-", 10_000) == Unsatisfiable(10_000)
    assert evaluate("bytes=10000-10005", 10_000) == Unsatisfiable(10_000)


def test_zero_suffix_is_unsatisfiable() -> None:
    assert evaluate("bytes=-0", 10_000) == Unsatisfiable(10_000)


def test_one_satisfiable_member_is_enough() -> None:
    # Starlette answered 416 for "0-9,5000-5010" when one range was satisfiable.
    out = evaluate("bytes=0-9,50000-50010", 10_000)
    assert out == Satisfiable((Span(0, 10),), 10_000)


def test_zero_length_object_ignores_range() -> None:
    # Decision: no 206 can describe an empty span, so a zero-length object is served 200.
    for header in ("bytes=0-", "bytes=-5", "bytes=0-0", "bytes=5-9"):
        assert isinstance(evaluate(header, 0), Ignore)


def test_range_cap_ignores_too_many_members() -> None:
    header = "bytes=" + ",".join(f"{i * 1000}-{i * 1000 + 499}" for i in range(101))
    assert isinstance(evaluate(header, 200_000), Ignore)
    assert isinstance(evaluate(header, 200_000, max_ranges=200), Satisfiable)


def test_overlapping_amplification_is_refused() -> None:
    # CVE-2011-3192: "bytes=0-,0-,0-..." would send the object many times.
    assert isinstance(evaluate("bytes=0-,0-", 10_000), Ignore)
    assert isinstance(evaluate("bytes=0-9999,1-9999", 10_000), Ignore)


def test_flood_of_tiny_ranges_is_refused() -> None:
    header = "bytes=" + ",".join(f"{i * 200}-{i * 200}" for i in range(50))
    assert isinstance(evaluate(header, 100_000), Ignore)


def test_small_gaps_are_coalesced_large_gaps_are_not() -> None:
    assert evaluate("bytes=0-9,20-29", 10_000) == Satisfiable((Span(0, 30),), 10_000)
    out = evaluate("bytes=0-9,1000-1009", 10_000)
    assert out == Satisfiable((Span(0, 10), Span(1000, 1010)), 10_000)


def test_spans_are_sorted() -> None:
    out = evaluate("bytes=5000-5009,0-9", 10_000)
    assert out == Satisfiable((Span(0, 10), Span(5000, 5010)), 10_000)


# --- Content-Range -----------------------------------------------------------------


def test_content_range_formats() -> None:
    assert format_content_range(Span(0, 500), 10_000) == "bytes 0-499/10000"
    assert format_content_range(Span(5, 6), None) == "bytes 5-5/*"
    # Starlette: a 416 without "bytes " was a bug.
    assert format_unsatisfied(10_000) == "bytes */10000"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes 0-499/10000", ContentRange(Span(0, 500), 10_000)),
        ("bytes 0-499/*", ContentRange(Span(0, 500), None)),
        ("bytes */10000", ContentRange(None, 10_000)),
        ("bytes 499-0/10000", None),
        ("bytes 0-10000/10000", None),
        ("bytes */*", None),
        ("bytes 0-1", None),
        ("items 0-1/2", None),
        ("bytes +0-1/2", None),
        (None, None),
    ],
)
def test_parse_content_range(value: str | None, expected: ContentRange | None) -> None:
    assert parse_content_range(value) == expected


# --- If-Range, If-None-Match ----------------------------------------------------------

LM = "Sun, 06 Nov 1994 08:49:37 GMT"


@pytest.mark.parametrize(
    ("if_range", "etag", "last_modified", "ok"),
    [
        ('"abc"', '"abc"', None, True),
        ('"abc"', '"abd"', None, False),
        ('W/"abc"', 'W/"abc"', None, False),  # a weak tag never matches
        ('W/"abc"', '"abc"', None, False),
        ('"abc"', 'W/"abc"', None, False),
        (LM, None, LM, True),
        ("Sun, 06 Nov 1994 08:49:38 GMT", None, LM, False),
        (LM, '"abc"', None, False),
        ("not a date", None, LM, False),
    ],
)
def test_if_range(if_range: str, etag: str | None, last_modified: str | None, ok: bool) -> None:
    assert if_range_matches(if_range, etag, last_modified) is ok


def test_if_none_match_uses_weak_comparison() -> None:
    assert etag_matches_weak('W/"a"', '"a"')
    assert etag_matches_weak('"x", "a"', 'W/"a"')
    assert etag_matches_weak("*", '"a"')
    assert not etag_matches_weak('"b"', '"a"')
    assert not etag_matches_weak('"a"', None)


# --- the ?range= query form ------------------------------------------------------


def test_query_form_is_like_the_header() -> None:
    assert select_range_header(None, "20-345") == "bytes=20-345"
    assert evaluate(select_range_header(None, "20-345"), 1000) == evaluate("bytes=20-345", 1000)  # type: ignore[arg-type]
    assert select_range_header("bytes=20-345", "20-345") == "bytes=20-345"
    assert select_range_header("bytes=0-1", None) == "bytes=0-1"
    assert select_range_header(None, None) is None


def test_query_form_disagreeing_with_header_is_a_conflict() -> None:
    assert isinstance(select_range_header("bytes=0-1", "20-345"), Conflict)


# --- multipart -------------------------------------------------------------------


def _parse_multipart(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    msg = email.message_from_bytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body, policy=email.policy.HTTP
    )
    assert msg.is_multipart()
    parts = []
    for part in msg.iter_parts():
        payload = part.get_payload(decode=True)
        parts.append((part["Content-Range"], payload))
    return parts


def test_multipart_framing_is_exact() -> None:
    data = bytes(range(256)) * 40
    spans = (Span(0, 10), Span(100, 200), Span(9000, 10240))
    mp = multipart(spans, len(data), "video/mp4", boundary="XyZ")
    body = b"".join(fill(mp.pieces, data))
    assert mp.content_type == "multipart/byteranges; boundary=XyZ"
    assert len(body) == mp.content_length
    assert body.startswith(b"--XyZ\r\nContent-Type: video/mp4\r\nContent-Range: bytes 0-9/10240\r\n\r\n")
    assert body.endswith(b"\r\n--XyZ--\r\n")
    for piece in mp.pieces:  # CRLF everywhere in the framing (Starlette #3105/#3142)
        if isinstance(piece, bytes):
            assert b"\n" not in piece.replace(b"\r\n", b"")
            assert b"\r" not in piece.replace(b"\r\n", b"")
    parts = _parse_multipart(body, mp.content_type)
    assert [p[0] for p in parts] == ["bytes 0-9/10240", "bytes 100-199/10240", "bytes 9000-10239/10240"]
    assert [p[1] for p in parts] == [data[0:10], data[100:200], data[9000:]]


# --- properties ------------------------------------------------------------------

range_text = st.one_of(
    st.text(max_size=60),
    st.from_regex(r"\A[bB]ytes=[ 0-9,\-\t]{0,40}\Z"),
)


@given(range_text, st.integers(0, 10**12))
def test_parsing_any_text_never_raises(text: str, length: int) -> None:
    out = evaluate(text, length)
    assert isinstance(out, Ignore | Satisfiable | Unsatisfiable)


def spec_strategy(length: int) -> st.SearchStrategy[str]:
    hi = max(length * 2, 2)
    first_last = st.tuples(st.integers(0, hi), st.integers(0, hi)).map(
        lambda t: f"{min(t)}-{max(t)}"
    )
    open_ended = st.integers(0, hi).map(lambda a: f"{a}-")
    suffix = st.integers(0, hi).map(lambda n: f"-{n}")
    return st.one_of(first_last, open_ended, suffix)


@st.composite
def header_and_data(draw: st.DrawFn) -> tuple[str, bytes]:
    length = draw(st.integers(0, 3000))
    data = draw(st.binary(min_size=length, max_size=length))
    members = draw(st.lists(spec_strategy(length), min_size=1, max_size=12))
    return "bytes=" + ",".join(members), data


def _reference_bytes(header: str, data: bytes) -> set[int]:
    """Byte offsets a naive reading of the header asks for (before coalescing)."""
    wanted: set[int] = set()
    specs = parse_range(header)
    assert specs is not None
    n = len(data)
    for spec in specs:
        if spec.first is None:
            assert spec.last is not None
            wanted.update(range(max(0, n - spec.last), n))
        else:
            last = n - 1 if spec.last is None else min(spec.last, n - 1)
            wanted.update(range(spec.first, last + 1))
    return wanted


@settings(max_examples=300)
@given(header_and_data())
def test_spans_sorted_disjoint_in_bounds_and_cover_the_request(hd: tuple[str, bytes]) -> None:
    header, data = hd
    out = evaluate(header, len(data))
    wanted = _reference_bytes(header, data)
    if isinstance(out, Unsatisfiable):
        assert not wanted and out.length == len(data) > 0
        return
    if isinstance(out, Ignore):
        return
    spans = out.spans
    assert spans
    for a, b in zip(spans, spans[1:]):
        assert a.end < b.start  # sorted, disjoint, not even adjacent
    for s in spans:
        assert 0 <= s.start < s.end <= len(data)
    covered = {i for s in spans for i in range(s.start, s.end)}
    assert wanted <= covered  # every requested byte is served
    # Extra bytes only come from gaps small enough to merge.
    assert len(covered - wanted) <= 80 * len(parse_range(header) or ())
    served = b"".join(fill(tuple(spans), data))
    assert served == b"".join(data[s:e] for s, e in spans)


@given(st.integers(0, 10**15), st.integers(1, 10**15), st.booleans())
def test_content_range_round_trips(start: int, size: int, known: bool) -> None:
    length = start + size + 7
    span = Span(start, start + size)
    value = format_content_range(span, length if known else None)
    assert parse_content_range(value) == ContentRange(span, length if known else None)
    assert parse_content_range(format_unsatisfied(length)) == ContentRange(None, length)


@given(st.lists(st.tuples(st.integers(0, 500), st.integers(1, 50)), max_size=20), st.integers(0, 100))
def test_coalesce_is_idempotent_and_covers(raw: list[tuple[int, int]], gap: int) -> None:
    spans = [Span(a, a + n) for a, n in raw]
    out = coalesce(spans, gap)
    assert coalesce(out, gap) == out
    covered = {i for s in out for i in range(s.start, s.end)}
    assert {i for s in spans for i in range(s.start, s.end)} <= covered


@settings(max_examples=200)
@given(header_and_data(), st.sampled_from([None, "application/pdf", "video/mp4"]))
def test_multipart_length_and_email_parse(hd: tuple[str, bytes], ctype: str | None) -> None:
    header, data = hd
    out = evaluate(header, len(data))
    if not isinstance(out, Satisfiable):
        return
    mp = multipart(out.spans, len(data), ctype)
    body = b"".join(fill(mp.pieces, data))
    assert len(body) == mp.content_length
    parts = _parse_multipart(body, mp.content_type)
    assert len(parts) == len(out.spans)
    for (crange, payload), span in zip(parts, out.spans):
        assert crange == format_content_range(span, len(data))
        assert payload == data[span.start : span.end]


@given(st.text(max_size=40))
def test_if_range_never_raises(value: str) -> None:
    assert isinstance(if_range_matches(value, '"a"', LM), bool)


def test_resolve_of_none_is_ignore() -> None:
    assert isinstance(resolve(None, 10), Ignore)


# --- HTTP-date -----------------------------------------------------------------

from proxy.http.dates import format_http_date, parse_http_date  # noqa: E402


@pytest.mark.parametrize(
    "value",
    ["Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"],
)
def test_the_three_rfc9110_date_forms_agree(value: str) -> None:
    assert parse_http_date(value) == 784111777


@pytest.mark.parametrize("value", ["", "yesterday", "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 06 Foo 1994 08:49:37 GMT"])
def test_bad_dates_are_none(value: str) -> None:
    assert parse_http_date(value) is None


@given(st.integers(0, 2**33))
def test_http_date_round_trips(epoch: int) -> None:
    assert parse_http_date(format_http_date(epoch)) == epoch


@pytest.mark.parametrize(
    ("range_header", "content_range", "expected"),
    [
        ("bytes=100-199", "bytes 100-199/1000", True),
        ("bytes=100-199", "bytes 99-199/1000", False),  # shifted: bytes nobody asked for
        ("bytes=100-199", "bytes 5100-5199/10000", False),
        ("bytes=100-199", "bytes 100-150/1000", True),  # less than asked, within it
        ("bytes=-1", "bytes 999-999/1000", True),
        ("bytes=-1", "bytes 998-998/1000", False),
        ("bytes=0-0,10-20", "bytes 0-20/1000", True),  # coalesced
        ("bytes=0-0,10-20", "bytes 0-21/1000", False),
        ("bytes=100-", "bytes 100-999/1000", True),
        ("bytes=100-199", "bytes 100-199/*", True),  # unknown length: cannot be judged
        (None, "bytes 0-9/1000", False),  # a 206 to no Range at all
        ("garbage", "bytes 0-9/1000", True),  # a Range refused here: the origin's reading is not judged
        ("bytes=0-9", "bytes */1000", False),
        ("bytes=0-9", None, False),
    ],
)
def test_answers_range(range_header: str | None, content_range: str | None, expected: bool) -> None:
    assert answers_range(range_header, content_range) is expected
