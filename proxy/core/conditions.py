"""What a client's conditional headers and cache directives ask of a stored response (RFC 9110 §13, RFC 9111 §5.2.1).

Pure: the handler passes the request's fields and the object's validators and acts on
the outcome; evaluation follows RFC 9110 §13.2.2's order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping

from proxy.core.representation import directives, field_value
from proxy.http.dates import parse_http_date
from proxy.http.ranges import etag_matches_strong, etag_matches_weak, parse_int

__all__ = ["Precondition", "preconditions", "RequestDirectives", "request_directives"]

Precondition = Literal["proceed", "not-modified", "failed"]  # 200/206, 304, 412

def preconditions(headers: Mapping[str, str], etag: str | None, last_modified: str | None) -> Precondition:
    """RFC 9110 §13.2.2 for a GET or HEAD of a representation that exists."""
    if_match = headers.get("If-Match")
    if if_match is not None:
        # §13.1.1: strong comparison; a failed If-Match is 412.
        if not etag_matches_strong(if_match, etag):
            return "failed"
    else:
        ius = headers.get("If-Unmodified-Since")
        since = parse_http_date(ius) if ius is not None else None
        lm = parse_http_date(last_modified) if since is not None else None
        # §13.1.4: ignored when the date is invalid or there is no Last-Modified to compare.
        if since is not None and lm is not None and lm > since:
            return "failed"
    inm = headers.get("If-None-Match")
    if inm is not None:
        # §13.1.2: weak comparison; for GET and HEAD a match is 304.
        return "not-modified" if etag_matches_weak(inm, etag) else "proceed"
    ims = headers.get("If-Modified-Since")
    since = parse_http_date(ims) if ims is not None else None
    lm = parse_http_date(last_modified) if since is not None else None
    if since is not None and lm is not None and lm <= since:
        return "not-modified"  # §13.1.3
    return "proceed"


@dataclass(frozen=True, slots=True)
class RequestDirectives:
    """RFC 9111 §5.2.1: what the client asks of the cache."""

    revalidate: bool = False  # no-cache, max-age=0, or Pragma: no-cache: ask the origin first
    only_if_cached: bool = False  # never ask the origin: 504 when not stored
    max_stale: float | None = None  # seconds of staleness accepted (inf: any; None: none asked, §5.2.1.2)
    min_fresh: float = 0.0  # seconds the answer must stay fresh for (§5.2.1.3)
    max_age: float | None = None  # the oldest answer accepted, in seconds (§5.2.1.1; 0 is revalidate)


_NOTHING_ASKED = RequestDirectives()


def request_directives(headers: Mapping[str, str]) -> RequestDirectives:
    if headers.get("Cache-Control") is None and headers.get("Pragma") is None:
        return _NOTHING_ASKED  # the usual request: one lookup each, nothing parsed
    cc = directives(field_value(headers, "Cache-Control"))
    max_age = cc.get("max-age")
    revalidate = "no-cache" in cc or (max_age is not None and parse_int(max_age) == 0)
    if headers.get("Cache-Control") is None:
        # RFC 9111 §5.4: Pragma: no-cache counts only without a Cache-Control field.
        revalidate = revalidate or any(t.strip().lower() == "no-cache"
                                       for t in (headers.get("Pragma") or "").split(","))
    max_stale: float | None = None
    if "max-stale" in cc:
        # §5.2.1.2: without a value, a stale answer of any age is accepted; an invalid one asks nothing.
        arg = cc["max-stale"]
        if arg is None:
            max_stale = math.inf
        elif (secs := parse_int(arg)) is not None:
            max_stale = float(secs)
    min_fresh = parse_int(cc.get("min-fresh") or "")
    oldest = parse_int(max_age) if max_age is not None else None
    return RequestDirectives(revalidate=revalidate, only_if_cached="only-if-cached" in cc, max_stale=max_stale,
                             min_fresh=float(min_fresh or 0), max_age=float(oldest) if oldest else None)
