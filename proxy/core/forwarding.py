"""Which of a client's request fields go to the origin, and whether its answer may be shared.

Pure. On a miss the request that starts a fetch lends it its end-to-end fields
(User-Agent, Accept-Language, Cookie, ...), so an origin sees what it would see
without the proxy; the fields the cache controls itself (ranges, conditionals,
Accept-Encoding: the stored bytes are the identity of what is stored) never go
with it. The X-Forwarded-* fields say who asked, and Via adds this hop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from proxy.core.fields import CACHE_NAME, HOP_BY_HOP, Fields, connection_named
from proxy.core.representation import Sharing
from proxy.core.surrogate import CAPABILITY

__all__ = ["CACHE_CONTROLLED", "Asker", "Forwarded", "origin_fields", "authorized", "VIA"]

VIA = f"1.1 {CACHE_NAME}"
# Set by the HTTP client itself for each connection.
_TRANSPORT = frozenset({"host", "content-length"})
# The cache's own business on a fetch it shares: which bytes (Range, If-Range), whether the
# stored version is current (the conditionals, RFC 9111 §4.3.1), which coding (identity,
# RFC 9110 §12.5.3) and the client's cache directives (answered by the cache, §5.2.1).
CACHE_CONTROLLED = frozenset({"range", "if-range", "if-match", "if-none-match", "if-modified-since",
                              "if-unmodified-since", "accept-encoding", "cache-control", "pragma"})


class Asker:
    """Who a request to the origin is for: the client's address, scheme and host as it saw them."""

    __slots__ = ("client", "scheme", "host")

    def __init__(self, client: str, scheme: str, host: str) -> None:
        self.client = client
        self.scheme = scheme
        self.host = host


def origin_fields(request: Iterable[tuple[str, str]], asker: Asker, drop: Iterable[str] = (),
                  cache_controlled: bool = True) -> Fields:
    """The client's fields for the origin (RFC 9110 §7.6: hop-by-hop ones removed, including
    those its Connection names), less ``drop`` and, for a fetch the cache makes, less what it
    controls itself; then X-Forwarded-For appended, X-Forwarded-Proto/-Host and Via (§7.6.3)."""
    items = list(request)
    removed = HOP_BY_HOP | _TRANSPORT | connection_named(items) | {d.lower() for d in drop}
    if cache_controlled:
        removed |= CACHE_CONTROLLED
    out: list[tuple[str, str]] = []
    prior_for: list[str] = []
    prior_via: list[str] = []
    prior_cap: list[str] = []
    proto = host = None
    for name, value in items:
        low = name.lower()
        if low in removed:
            continue
        if low == "x-forwarded-for":
            prior_for.append(value)
        elif low == "via":
            prior_via.append(value)
        elif low == "surrogate-capability" and cache_controlled:
            prior_cap.append(value)
        else:
            if low == "x-forwarded-proto":
                proto = value
            elif low == "x-forwarded-host":
                host = value
            out.append((name, value))
    out.append(("X-Forwarded-For", ", ".join([*prior_for, asker.client])))
    if proto is None:
        out.append(("X-Forwarded-Proto", asker.scheme))
    if host is None:
        out.append(("X-Forwarded-Host", asker.host))
    out.append(("Via", ", ".join([*prior_via, VIA])))
    if cache_controlled:  # the cache's own fetch: it announces itself as a surrogate (Surrogate-Control)
        out.append(("Surrogate-Capability", ", ".join([*prior_cap, CAPABILITY])))
    return tuple(out)


def authorized(request: Mapping[str, str]) -> bool:
    """Does the request carry credentials? Then its answer is its own unless the origin
    says otherwise (RFC 9111 §3.5: :func:`proxy.core.representation.shareable`)."""
    return request.get("Authorization") is not None


@dataclass(frozen=True, slots=True)
class Forwarded:
    """What a client's request lends the fetches it starts: its fields for the origin, and
    who may share the answers (read-ahead and other fetches nobody asked for lend none)."""

    fields: Fields = ()
    sharing: Sharing = Sharing()
