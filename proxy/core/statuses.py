"""Answers other than a 200/206 that a shared cache may store and reuse (RFC 9111 §3, §4.2.2).

Pure. A redirect, a 404 or a 5xx is stored when it says how long it is fresh (explicit
freshness), or, for the statuses RFC 9110 §15.1 calls heuristically cacheable, by the
same heuristic as a 200 (which needs a validator here). It is reused, whole and as it came
(status, fields, body), only while fresh: it has no slices and no revalidation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from proxy.core.fields import Fields, initial_age
from proxy.core.representation import Sharing, directives, field_value, freshness, shareable

__all__ = ["HEURISTIC", "NEGATIVE", "StatusAnswer", "status_lifetime"]

# RFC 9110 §15.1: cacheable by default (206 and 200 are the slices' business).
HEURISTIC = frozenset({203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
# The heuristically cacheable ones that say "not here": fresh for the operator's negative_ttl
# when the origin gives no freshness of its own (they rarely carry a validator).
NEGATIVE = frozenset({404, 405, 410, 414, 501})
_NEVER = frozenset({206, 304})  # a part, or an answer to a conditional: nothing to store whole
# The status codes RFC 9110 §15 defines: what this cache "understands" (RFC 9111 §5.2.2.3).
UNDERSTOOD = frozenset({*range(200, 207), *range(300, 309), *range(400, 418), 421, 422, 426, *range(500, 506)})


@dataclass(frozen=True, slots=True)
class StatusAnswer:
    """A stored answer other than 200/206: replayed as it came while fresh."""

    status: int
    fields: Fields  # as stored (proxy.core.fields.stored_fields)
    body: bytes
    stored_at: float
    ttl: float

    def is_fresh(self, now: float) -> bool:
        return now < self.stored_at + self.ttl

    def age(self, now: float) -> int:
        return initial_age(self.fields) + max(0, int(now - self.stored_at))


def _explicit(headers: Mapping[str, str]) -> bool:
    cc = directives(field_value(headers, "Cache-Control"))
    return ("max-age" in cc or "s-maxage" in cc or headers.get("Expires") is not None
            or headers.get("Surrogate-Control") is not None)


def status_lifetime(status: int, headers: Mapping[str, str], now: float, default_ttl: float,
                    sharing: Sharing = Sharing(), negative_ttl: float | None = None) -> float | None:
    """How long this answer may be reused, or None when it is not stored at all.

    ``negative_ttl``: the lifetime of a :data:`NEGATIVE` answer without explicit freshness (0:
    not stored); None: the heuristic of a 200 (``default_ttl``, with a validator only)."""
    if not 200 <= status < 600 or status in _NEVER:
        return None
    explicit = _explicit(headers)
    if not explicit and status not in HEURISTIC:
        return None  # §4.2.2: no heuristic freshness for the others
    cc = directives(field_value(headers, "Cache-Control"))
    if "must-understand" in cc and status not in UNDERSTOOD:
        return None  # §5.2.2.3
    if field_value(headers, "Vary") is not None or not shareable(headers, sharing):
        return None
    fresh = freshness(headers, now, default_ttl)
    if negative_ttl is not None and status in NEGATIVE and not explicit and "no-cache" not in cc and fresh.storable:
        # §4.2.2: the heuristic is the cache's choice; for "not found" it is the operator's.
        ttl = negative_ttl - initial_age(tuple(headers.items()))
        return ttl if ttl > 0 else None
    return fresh.ttl if fresh.storable and fresh.ttl > 0 else None
