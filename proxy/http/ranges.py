"""The pure RFC 9110 byte-range core, shared by the proxy and the demo origin.

No I/O and no networking imports: functions over values, so every rule here is
unit- and property-tested without a socket (the h11 / hishel shape).

Spans are half-open ``[start, end)`` everywhere inside the project; only this
module converts to and from the inclusive wire form ``first-last``.
Client input produces *outcomes* (``Ignore | Satisfiable | Unsatisfiable``),
never exceptions: a malformed ``Range`` is ignored (200), never a 400.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Iterator, NamedTuple, Sequence

from proxy.http.dates import parse_http_date

__all__ = [
    "Span",
    "RangeSpec",
    "Ignore",
    "Satisfiable",
    "Unsatisfiable",
    "RangeOutcome",
    "Conflict",
    "ContentRange",
    "Multipart",
    "DEFAULT_MAX_RANGES",
    "parse_int",
    "parse_range",
    "resolve",
    "evaluate",
    "coalesce",
    "select_range_header",
    "format_content_range",
    "format_unsatisfied",
    "parse_content_range",
    "answers_range",
    "if_range_matches",
    "etag_matches_weak",
    "etag_matches_strong",
    "multipart",
    "fill",
]

DEFAULT_MAX_RANGES = 100  # more members than this: ignore Range (Starlette #3430)
# Above this many ranges, a response whose part headers outweigh its payload is
# refused as a flood of tiny ranges (RFC 9110 §15.3.7.2, the CVE-2011-3192 class).
TINY_FLOOD_MIN_RANGES = 8
# Spans separated by fewer bytes than one part's framing are merged (RFC 9110 §15.3.7.2:
# "...or separated by a gap that is smaller than the overhead of sending multiple parts").
DEFAULT_COALESCE_GAP = 80
PART_OVERHEAD = 80  # typical bytes of one part's boundary + Content-Type + Content-Range

# RFC 9110 §14.1.1 (ABNF):  ranges-specifier = range-unit "=" range-set
#   range-set = 1#range-spec ; range-spec = int-range / suffix-range / other-range
#   int-range = first-pos "-" [ last-pos ] ; suffix-range = "-" suffix-length
_DIGITS = re.compile(r"[0-9]+", re.ASCII)  # int() accepts "+1", "1_0", "١"; HTTP does not
_OWS = " \t"
# The form nearly every client sends, one closed range: read by one match (same result as the loop).
_ONE_RANGE = re.compile(r"bytes=([0-9]{1,18})-([0-9]{1,18})", re.ASCII)
_MAX_HEADER_CHARS = 16 * 1024  # a longer Range value is ignored before any work is done


class Span(NamedTuple):
    """A half-open byte span ``[start, end)`` of a representation."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


class RangeSpec(NamedTuple):
    """One wire ``range-spec`` before it meets a length.

    ``first-last`` -> (first, last); ``first-`` -> (first, None);
    ``-n`` (suffix) -> (None, n). ``last`` is inclusive, as on the wire.
    """

    first: int | None
    last: int | None


@dataclass(frozen=True, slots=True)
class Ignore:
    """Serve the whole representation with 200: Range absent, malformed or refused."""

    reason: str


@dataclass(frozen=True, slots=True)
class Satisfiable:
    """Serve 206: ``spans`` are sorted, coalesced, disjoint, non-empty, in bounds."""

    spans: tuple[Span, ...]
    length: int


@dataclass(frozen=True, slots=True)
class Unsatisfiable:
    """Serve 416 with ``Content-Range: bytes */length`` (RFC 9110 §15.5.17)."""

    length: int


RangeOutcome = Ignore | Satisfiable | Unsatisfiable


@dataclass(frozen=True, slots=True)
class Conflict:
    """The ``?range=`` query form and the ``Range`` header disagree: answer 416."""

    header: str
    query: str


def parse_int(text: str) -> int | None:
    """A decimal integer written as HTTP writes one (``[0-9]+``), else None."""
    return int(text) if _DIGITS.fullmatch(text) else None


def parse_range(value: str | None) -> tuple[RangeSpec, ...] | None:
    """Parse a ``Range`` field value; ``None`` means "ignore the header".

    Unknown units, empty sets, ``bytes=5-4`` (Starlette #3388) and any syntax
    error give ``None``. Linear time: no backtracking regex (GHSA-7f5h-v6xp-fcq8).
    """
    if value is None or len(value) > _MAX_HEADER_CHARS:
        return None
    one = _ONE_RANGE.fullmatch(value)
    if one is not None:
        a, b = int(one[1]), int(one[2])
        return (RangeSpec(a, b),) if b >= a else None
    unit, sep, rest = value.strip(_OWS).partition("=")
    # RFC 9110 §14.1: range units are case-insensitive; only "bytes" is known here,
    # and a recipient ignores a Range with a unit it does not understand (§14.2).
    if not sep or unit.strip(_OWS).lower() != "bytes":
        return None
    specs: list[RangeSpec] = []
    for member in rest.split(","):
        member = member.strip(_OWS)
        if not member:
            continue  # RFC 9110 §5.6.1: empty list elements are allowed and ignored
        first_s, dash, last_s = member.partition("-")
        if not dash:
            return None
        first_s, last_s = first_s.strip(_OWS), last_s.strip(_OWS)
        if first_s == "":
            n = parse_int(last_s)
            if n is None:
                return None
            specs.append(RangeSpec(None, n))
            continue
        first = parse_int(first_s)
        if first is None:
            return None
        if last_s == "":
            specs.append(RangeSpec(first, None))
            continue
        last = parse_int(last_s)
        # RFC 9110 §14.1.1: a last-pos less than first-pos makes the whole field invalid.
        if last is None or last < first:
            return None
        specs.append(RangeSpec(first, last))
    return tuple(specs) if specs else None


def _span_of(spec: RangeSpec, length: int) -> Span | None:
    """Resolve one spec against ``length``; ``None`` when unsatisfiable."""
    if spec.first is None:
        assert spec.last is not None
        # RFC 9110 §14.1.1: a suffix longer than the representation selects all of it;
        # a zero suffix-length selects nothing (§14.1.2: unsatisfiable).
        if spec.last == 0:
            return None
        return Span(max(0, length - spec.last), length)
    # RFC 9110 §14.1.2: first-pos at or past the end does not overlap the extent.
    if spec.first >= length:
        return None
    # RFC 9110 §14.1.1: a last-pos past the end is clipped to length - 1.
    end = length if spec.last is None else min(spec.last + 1, length)
    return Span(spec.first, end)


def coalesce(spans: list[Span] | tuple[Span, ...], gap: int = 0) -> tuple[Span, ...]:
    """Sort and merge spans that overlap, touch, or are separated by <= ``gap`` bytes."""
    out: list[Span] = []
    for s in sorted(spans):
        if out and s.start <= out[-1].end + gap:
            if s.end > out[-1].end:
                out[-1] = Span(out[-1].start, s.end)
        else:
            out.append(s)
    return tuple(out)


def resolve(
    specs: tuple[RangeSpec, ...] | None,
    length: int,
    *,
    max_ranges: int = DEFAULT_MAX_RANGES,
    coalesce_gap: int = DEFAULT_COALESCE_GAP,
) -> RangeOutcome:
    """Decide 200 / 206 / 416 for parsed specs against a representation length."""
    if specs is None:
        return Ignore("no valid Range")
    if len(specs) > max_ranges:
        return Ignore(f"more than {max_ranges} ranges")
    # Zero-length representation: no 206 can be formed (Content-Range cannot express
    # an empty span), and 416 to "give me everything" helps nobody. RFC 9110 §14.2
    # lets a server ignore Range: serve the empty 200.
    if length == 0:
        return Ignore("zero-length representation")
    if len(specs) == 1:  # the common case: nothing to merge, no amplification possible
        one = _span_of(specs[0], length)
        return Unsatisfiable(length) if one is None else Satisfiable((one,), length)
    resolved = [s for s in (_span_of(spec, length) for spec in specs) if s is not None]
    if not resolved:
        # RFC 9110 §15.5.17: 416 only when *no* member is satisfiable.
        return Unsatisfiable(length)
    # RFC 9110 §15.3.7.2: refuse amplification. Requested bytes adding up to more
    # than the whole object (overlaps) or part framing outweighing the payload
    # (a flood of tiny ranges) is answered with a plain 200.
    requested = sum(s.size for s in resolved)
    if len(resolved) > 1 and requested > length:
        return Ignore("ranges overlap to more than the representation")
    if len(resolved) >= TINY_FLOOD_MIN_RANGES and requested < len(resolved) * PART_OVERHEAD:
        return Ignore("flood of tiny ranges")
    return Satisfiable(coalesce(resolved, coalesce_gap), length)


def evaluate(
    range_header: str | None,
    length: int,
    *,
    max_ranges: int = DEFAULT_MAX_RANGES,
    coalesce_gap: int = DEFAULT_COALESCE_GAP,
) -> RangeOutcome:
    """``parse_range`` then ``resolve``: the one call a server makes."""
    return resolve(parse_range(range_header), length, max_ranges=max_ranges, coalesce_gap=coalesce_gap)


def select_range_header(header: str | None, query_value: str | None) -> str | None | Conflict:
    """Merge the ``?range=a-b`` query form (inclusive, like the header) with ``Range``.

    The proof of concept answered ``/big.bin?range=20-345`` like ``Range: bytes=20-345``.
    Both present and selecting different bytes: ``Conflict`` (416).
    """
    if query_value is None:
        return header
    from_query = "bytes=" + query_value
    if header is None:
        return from_query
    if parse_range(header) != parse_range(from_query):
        return Conflict(header, query_value)
    return header


def format_content_range(span: Span, length: int | None) -> str:
    """``bytes first-last/length`` (or ``/*`` when the length is unknown)."""
    total = "*" if length is None else str(length)
    return f"bytes {span.start}-{span.end - 1}/{total}"


def format_unsatisfied(length: int) -> str:
    """``bytes */length``: the Content-Range of a 416 (RFC 9110 §14.4)."""
    return f"bytes */{length}"


@dataclass(frozen=True, slots=True)
class ContentRange:
    """A parsed ``Content-Range``: ``span`` is None for ``*/len``; ``length`` None for ``/*``."""

    span: Span | None
    length: int | None


def parse_content_range(value: str | None) -> ContentRange | None:
    """Parse ``bytes a-b/len``, ``bytes a-b/*`` or ``bytes */len``; None if invalid."""
    if value is None:
        return None
    unit, _, rest = value.strip(_OWS).partition(" ")
    if unit.lower() != "bytes":
        return None
    resp, slash, total = rest.strip(_OWS).partition("/")
    if not slash:
        return None
    length: int | None
    if total == "*":
        length = None
    else:
        length = parse_int(total)
        if length is None:
            return None
    if resp == "*":
        return None if length is None else ContentRange(None, length)
    first_s, dash, last_s = resp.partition("-")
    first, last = parse_int(first_s), parse_int(last_s) if dash else None
    if first is None or last is None or last < first:
        return None
    # RFC 9110 §14.4: a satisfied range must lie inside the complete length.
    if length is not None and last >= length:
        return None
    return ContentRange(Span(first, last + 1), length)


def answers_range(range_header: str | None, content_range: str | None) -> bool:
    """Whether a one-part 206's ``Content-Range`` lies within the ranges ``range_header`` asked
    for (their hull: a server may coalesce, RFC 9110 §15.3.7). An answer for other bytes, or a
    206 to no Range at all, is not one to relay; a Range this parser refuses (the origin may read
    it otherwise) or an unknown length (``/*``) cannot be judged."""
    got = parse_content_range(content_range)
    if got is None or got.span is None:
        return False
    if range_header is None:
        return False
    specs = parse_range(range_header)
    if specs is None or got.length is None:
        return True
    spans = [s for s in (_span_of(spec, got.length) for spec in specs) if s is not None]
    return bool(spans) and min(s.start for s in spans) <= got.span.start and got.span.end <= max(s.end for s in spans)


def _is_strong(etag: str) -> bool:
    return etag.startswith('"') and etag.endswith('"') and len(etag) >= 2


def if_range_matches(if_range: str, etag: str | None, last_modified: str | None) -> bool:
    """RFC 9110 §13.1.5: True when the Range may be honoured.

    An entity-tag matches only by strong comparison (a weak tag never matches);
    an HTTP-date matches only an exactly equal Last-Modified. False means
    "ignore Range and send 200", never 416.
    """
    value = if_range.strip(_OWS)
    if value.startswith("W/"):
        return False
    if value.startswith('"'):
        return etag is not None and _is_strong(etag) and value == etag
    if last_modified is None:
        return False
    want, have = parse_http_date(value), parse_http_date(last_modified)
    return want is not None and want == have


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def etag_matches_weak(if_none_match: str, etag: str | None) -> bool:
    """RFC 9110 §13.1.2: If-None-Match uses weak comparison; ``*`` matches any."""
    if etag is None:
        return False
    value = if_none_match.strip(_OWS)
    if value == "*":
        return True
    mine = _opaque(etag)
    return any(_opaque(t.strip(_OWS)) == mine for t in value.split(",") if t.strip(_OWS))


def etag_matches_strong(if_match: str, etag: str | None) -> bool:
    """RFC 9110 §13.1.1: If-Match uses strong comparison (weak tags never match); ``*``
    matches any current representation."""
    value = if_match.strip(_OWS)
    if value == "*":
        return True  # the caller has a current representation
    if etag is None or not _is_strong(etag):
        return False
    return any(t.strip(_OWS) == etag for t in value.split(",") if t.strip(_OWS))


@dataclass(frozen=True, slots=True)
class Multipart:
    """A multipart/byteranges body plan: framing bytes and spans to fill, in order.

    ``content_length`` is exact before the first byte is sent (pingora's
    ``calculate_multipart_length``); the caller fills each Span from a file or a cache.
    """

    boundary: str
    content_type: str
    content_length: int
    pieces: tuple[bytes | Span, ...]


def multipart(
    spans: tuple[Span, ...] | list[Span],
    length: int,
    part_content_type: str | None,
    boundary: str | None = None,
    *,
    part_fields: Sequence[tuple[str, str]] = (),
) -> Multipart:
    """Frame ``spans`` as RFC 9110 §14.6 multipart/byteranges, CRLF everywhere.

    ``part_fields`` go into every part's header (e.g. the Content-Encoding the parts' bytes have).
    """
    boundary = boundary or secrets.token_hex(16)
    pieces: list[bytes | Span] = []
    for i, span in enumerate(spans):
        head = ("\r\n" if i else "") + f"--{boundary}\r\n"
        if part_content_type:
            head += f"Content-Type: {part_content_type}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in part_fields)
        head += f"Content-Range: {format_content_range(span, length)}\r\n\r\n"
        pieces.append(head.encode("latin-1"))
        pieces.append(span)
    pieces.append(f"\r\n--{boundary}--\r\n".encode("latin-1"))
    total = sum(len(p) if isinstance(p, bytes) else p.size for p in pieces)
    return Multipart(boundary, f"multipart/byteranges; boundary={boundary}", total, tuple(pieces))


def fill(pieces: tuple[bytes | Span, ...], data: bytes) -> Iterator[bytes]:
    """Render pieces against in-memory ``data`` (for tests and tiny bodies)."""
    for p in pieces:
        yield p if isinstance(p, bytes) else data[p.start : p.end]
