"""Checking one answer of the soak against the version its ETag names (RFC 9110 §13, §14, §15.3.7).

Pure: given what was asked, what came back and the bytes of every version (a callable), it says
how many bytes were checked, how many were wrong, and what else was wrong (a list of problems).
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

from hardening.soak_origin import parse_etag
from hardening.wire import byteranges_parts, parse_content_range

__all__ = ["Answer", "Verdict", "check", "resolve_range"]

_UNSATISFIED = re.compile(r"^bytes \*/(\d+)$")


@dataclass
class Answer:
    name: str
    method: str
    request: Mapping[str, str]  # the request's fields
    status: int
    headers: Mapping[str, str]  # the answer's fields (first of each)
    body: bytes
    complete: bool  # the body ended as framed (False: cut)


@dataclass
class Verdict:
    checked: int = 0
    wrong: int = 0
    problems: list[str] = field(default_factory=list)

    def compare(self, got: bytes, want: bytes, what: str) -> None:
        self.checked += len(got)
        if got != want:
            n = sum(1 for a, b in zip(got, want) if a != b) + abs(len(got) - len(want))
            self.wrong += n
            self.problems.append(f"{what}: {n} wrong bytes (got {len(got)}, want {len(want)})")


def resolve_range(spec: str, size: int) -> tuple[int, int] | None:
    """One ``a-b`` / ``a-`` / ``-n`` of a Range header against ``size`` -> inclusive (first, last),
    None when it is unsatisfiable (RFC 9110 §14.1.2)."""
    a, _, b = spec.strip().partition("-")
    if a == "":
        n = int(b)
        return (max(0, size - n), size - 1) if n > 0 and size > 0 else None
    first = int(a)
    if first >= size:
        return None
    return first, min(int(b), size - 1) if b else size - 1


def _http_date(value: str | None) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp() if value else None
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def check(a: Answer, version: Callable[[str, int], bytes], modified: Mapping[str, float]) -> Verdict:
    """``version(name, n)``: the bytes of version n; ``modified``: Last-Modified seen by ETag."""
    v = Verdict()
    etag = a.headers.get("ETag")
    named = parse_etag(etag)
    data: bytes | None = None
    if a.status in (200, 206, 304) or (a.status == 416 and named):
        if named is None or named[0] != a.name:
            v.problems.append(f"{a.status} with ETag {etag!r}: not a version of {a.name}")
            return v
        data = version(*named)
    asked = a.request.get("Range")
    specs = asked.removeprefix("bytes=").split(",") if asked else []
    if a.status == 304:
        _conditional_304(a, etag, modified, v)
        return v
    if a.status == 416:
        if not specs:
            v.problems.append("416 to a request without Range")
            return v
        m = _UNSATISFIED.match(a.headers.get("Content-Range", ""))
        if not m or any(resolve_range(s, int(m.group(1))) for s in specs):
            v.problems.append(f"416 for satisfiable {asked!r} (Content-Range {a.headers.get('Content-Range')!r})")
        return v
    if a.status not in (200, 206):
        if a.status < 500:
            v.problems.append(f"unexpected status {a.status}")
        return v
    assert data is not None
    if a.method == "HEAD":
        if a.headers.get("Content-Length") != str(len(data)):
            v.problems.append(f"HEAD Content-Length {a.headers.get('Content-Length')} for {len(data)} bytes")
        return v
    if a.status == 200:
        _whole(a, data, v)
        return v
    if_range = a.request.get("If-Range")
    if if_range is not None and if_range.startswith('"') and if_range != etag:
        v.problems.append(f"206 of {etag} to If-Range {if_range}")
    ctype = a.headers.get("Content-Type", "")
    if ctype.startswith("multipart/byteranges"):
        _multipart(a, ctype, data, specs, v)
    else:
        _single(a, data, specs, v)
    return v


def _conditional_304(a: Answer, etag: str | None, modified: Mapping[str, float], v: Verdict) -> None:
    inm = a.request.get("If-None-Match")
    ims = _http_date(a.request.get("If-Modified-Since"))
    if a.body:
        v.problems.append("304 with a body")
    if inm is not None:
        if etag not in [t.strip() for t in inm.split(",")]:
            v.problems.append(f"304 with ETag {etag!r} to If-None-Match {inm}")
    elif ims is not None:
        lm = modified.get(etag or "")
        if lm is not None and lm > ims:
            v.problems.append(f"304 for {etag} modified at {lm} to If-Modified-Since {ims}")
    else:
        v.problems.append("304 to an unconditional request")


def _whole(a: Answer, data: bytes, v: Verdict) -> None:
    inm = a.request.get("If-None-Match")
    if inm is not None and a.headers.get("ETag") in [t.strip() for t in inm.split(",")]:
        v.problems.append(f"200 of {a.headers.get('ETag')} to If-None-Match {inm} (a 304 was due)")
    want = data if a.complete else data[:len(a.body)]
    v.compare(a.body, want, f"200 of {a.headers.get('ETag')}" + ("" if a.complete else " (cut)"))


def _single(a: Answer, data: bytes, specs: list[str], v: Verdict) -> None:
    cr = parse_content_range(a.headers.get("Content-Range"))
    if cr is None:
        v.problems.append(f"206 with Content-Range {a.headers.get('Content-Range')!r}")
        return
    first, last, total = cr
    if total != len(data):
        v.problems.append(f"206 of {a.headers.get('ETag')} says length {total}, the version has {len(data)}")
        return
    if len(specs) == 1 and resolve_range(specs[0], total) != (first, last):
        v.problems.append(f"206 of {first}-{last} to Range {specs[0]} of {total} bytes")
    want = data[first:last + 1]
    v.compare(a.body, want if a.complete else want[:len(a.body)], f"206 {first}-{last} of {a.headers.get('ETag')}")


def _multipart(a: Answer, ctype: str, data: bytes, specs: list[str], v: Verdict) -> None:
    parts = byteranges_parts(ctype, a.body, cut=not a.complete)  # a cut answer: the parts before the cut
    if parts is None:
        v.problems.append(f"multipart 206 that does not parse: {ctype}")
        return
    asked = {resolve_range(s, len(data)) for s in specs}
    seen = 0
    for crange, body in parts:
        cr = parse_content_range(crange)
        if cr is None or cr[2] != len(data):
            v.problems.append(f"multipart part with Content-Range {crange!r}")
            continue
        first, last = cr[0], cr[1]
        if (first, last) not in asked and not any(s and s[0] <= first and last <= s[1] for s in asked) \
                and not _covers(asked, first, last):
            v.problems.append(f"multipart part {first}-{last} not asked for in {specs}")
        v.compare(body, data[first:last + 1], f"part {first}-{last} of {a.headers.get('ETag')}")
        seen += 1
    if a.complete and seen == 0:
        v.problems.append("multipart 206 without parts")


def _covers(asked: set[tuple[int, int] | None], first: int, last: int) -> bool:
    """A part may coalesce asked ranges (RFC 9110 §14.6): each of its bytes is in one of them, or
    in a gap between two it coalesced (a server may fill a small gap)."""
    spans = sorted(s for s in asked if s)
    return bool(spans) and spans[0][0] <= first and last <= spans[-1][1]
