"""The origin's header fields as a cache keeps and replays them (RFC 9111 §3.1, §3.2, §4; RFC 9211).

Pure: a stored response is its header fields less the hop-by-hop ones and less what a
shared cache must not keep; every answer built from the cache replays them with its
own framing (Content-Length, Content-Range, Accept-Ranges), its own Age, its hop added
to Via, and a Cache-Status entry.
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Iterator, Mapping, Sequence

__all__ = ["Fields", "stored_fields", "freshen", "replay", "not_modified_fields", "via", "cache_status", "cookies",
           "initial_age", "FieldsView", "connection_named",
           "HOP_BY_HOP", "CACHE_NAME"]

Fields = tuple[tuple[str, str], ...]  # header fields in the origin's order, repeated names kept
CACHE_NAME = "rangeproxy"  # this cache in Via and Cache-Status

# RFC 9110 §7.6.1 (Connection, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding, Upgrade)
# and RFC 9111 §3.1 (Proxy-Authenticate, Proxy-Authentication-Info, Proxy-Authorization).
HOP_BY_HOP = frozenset({"connection", "proxy-connection", "keep-alive", "te", "trailer", "transfer-encoding",
                        "upgrade", "proxy-authenticate", "proxy-authentication-info", "proxy-authorization"})
# Framed per answer by the proxy itself, never replayed from the store. (The origin's Age is
# stored, as the age the response had when it arrived, RFC 9111 §4.2.3, and never replayed.)
_FRAMING = frozenset({"content-length", "content-range", "accept-ranges", "cache-status", "x-cache"})
# RFC 9111 §7.4 / RFC 6265: a cookie set for one client is never given to another.
_PERSONAL = frozenset({"set-cookie", "set-cookie2"})
# RFC 9111 §3.2: these describe the stored content itself (its length, coding, digest, and
# the validator the 304 was selected by) and are not freshened by a 304. Content-Type is:
# nothing here was made from parsing the content.
_NOT_FRESHENED = frozenset({"content-length", "content-encoding", "content-range", "transfer-encoding",
                            "content-md5", "digest", "content-digest", "repr-digest", "etag"})
# RFC 9110 §15.4.5: what a 304 carries of what a 200 would have sent.
_NOT_MODIFIED = ("cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified")
_NAMED = re.compile(r'(?:^|,)\s*(?:private|no-cache)\s*=\s*"([^"]*)"', re.IGNORECASE)


def connection_named(fields: Iterable[tuple[str, str]]) -> set[str]:
    """Fields the Connection header names: hop-by-hop for this message (RFC 9110 §7.6.1)."""
    out: set[str] = set()
    for name, value in fields:
        if name.lower() == "connection":
            out.update(t.strip().lower() for t in value.split(",") if t.strip())
    return out


def _qualified(fields: Iterable[tuple[str, str]]) -> set[str]:
    """Fields named by ``private="..."`` / ``no-cache="..."`` (RFC 9111 §5.2.2.4, §5.2.2.7):
    a shared cache stores the response without them."""
    out: set[str] = set()
    for name, value in fields:
        if name.lower() == "cache-control":
            for m in _NAMED.finditer(value):
                out.update(t.strip().lower() for t in m.group(1).split(",") if t.strip())
    return out


def stored_fields(fields: Iterable[tuple[str, str]]) -> Fields:
    """The header fields a shared cache keeps of an origin response."""
    items = list(fields)
    drop = HOP_BY_HOP | _FRAMING | _PERSONAL | connection_named(items) | _qualified(items)
    return tuple((n, v) for n, v in items if n.lower() not in drop)


def freshen(stored: Fields, update: Iterable[tuple[str, str]]) -> Fields:
    """RFC 9111 §3.2: the stored fields, each one named in ``update`` replaced by its new values."""
    new = stored_fields(update)
    have = {n.lower() for n, _ in stored}
    # Those describing the content itself are only added where the stored response had none.
    replaced = {n.lower() for n, _ in new} - (_NOT_FRESHENED & have)
    kept = tuple((n, v) for n, v in stored if n.lower() not in replaced)
    return kept + tuple((n, v) for n, v in new if n.lower() in replaced)


class FieldsView(Mapping[str, str]):
    """Stored fields read as a case-insensitive mapping (``get``: the first value, ``getall``:
    every one), so the rules that read an answer's fields read a stored response alike."""

    def __init__(self, fields: Fields) -> None:
        self._fields = fields

    def getall(self, name: str, default: list[str] | None = None) -> list[str]:
        low = name.lower()
        found = [v for n, v in self._fields if n.lower() == low]
        return found if found else (default if default is not None else [])

    def __getitem__(self, name: str) -> str:
        found = self.getall(name)
        if not found:
            raise KeyError(name)
        return found[0]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(n for n, _ in self._fields))

    def __len__(self) -> int:
        return len({n.lower() for n, _ in self._fields})


def initial_age(stored: Fields) -> int:
    """RFC 9111 §4.2.3: the age the response already had when it reached the cache (its Age,
    a non-negative integer; an invalid one counts as none)."""
    for name, value in stored:
        if len(name) == 3 and name.lower() == "age":  # (on every hit: most names are not 3 long)
            v = value.split(",")[0].strip()
            return int(v) if v.isascii() and v.isdigit() else 0
    return 0


def cookies(fields: Iterable[tuple[str, str]]) -> Fields:
    """The Set-Cookie fields of an answer: for the one client whose request caused it."""
    return tuple((n, v) for n, v in fields if n.lower() in _PERSONAL)


def via(stored: Fields) -> str:
    """RFC 9110 §7.6.3: this hop appended to the Via the origin sent, never replacing it."""
    prior = [v for n, v in stored if n.lower() == "via"]
    return ", ".join([*prior, f"1.1 {CACHE_NAME}"])


def cache_status(x_cache: str, ttl: float | None = None, stored: bool = True, *, fwd: str | None = None,
                 fwd_status: int | None = None, detail: str | None = None) -> str:
    """RFC 9211 §2: ``hit``, or ``fwd=`` why the origin was asked (a miss, or part of the answer).

    ``fwd`` overrides the reason (``stale``: a stale object answered after a failed
    revalidation); ``fwd_status`` is the origin's status then (§2.3); ``detail`` says
    what the proxy did (§2.8: ``stale-while-revalidate``, ``stale-if-error``).
    """
    if fwd is not None:
        out = f"{CACHE_NAME}; fwd={fwd}"
        if fwd_status is not None:
            out += f"; fwd-status={fwd_status}"
    elif x_cache == "HIT":
        out = f"{CACHE_NAME}; hit"
    elif x_cache == "PARTIAL":
        out = f"{CACHE_NAME}; fwd=partial"
    elif x_cache == "PASS":
        return f"{CACHE_NAME}; fwd=method"
    else:
        out = f"{CACHE_NAME}; fwd=miss"
    if x_cache != "HIT" and stored and fwd is None:
        out += "; stored"
    if ttl is not None:
        out += f"; ttl={math.floor(ttl)}"  # a stale answer's is negative (RFC 9211 §2.5), -0.3 is -1
    if detail is not None:
        out += f"; detail={detail}"
    return out


def replay(stored: Fields, *, drop: Sequence[str] = ()) -> list[tuple[str, str]]:
    """The stored fields for an answer, less Via (see :func:`via`) and any in ``drop``."""
    skip = {"via", "age", *(d.lower() for d in drop)}
    return [(n, v) for n, v in stored if n.lower() not in skip]


def not_modified_fields(stored: Fields) -> list[tuple[str, str]]:
    """The stored fields a 304 (or 412) answer carries: those RFC 9110 §15.4.5 lists, and the
    CORS ones, without which a browser hides the status from a script on another origin."""
    return [(n, v) for n, v in stored
            if (low := n.lower()) in _NOT_MODIFIED or low.startswith("access-control-") or low == "timing-allow-origin"]
