"""When a stored object that is no longer fresh may still answer (RFC 9111 §4.2.4, RFC 5861).

Pure: functions over an object's metadata and the time. A stale object answers only
where a rule allows it, and only within a window counted from its expiry:

* ``stale-while-revalidate=N`` (RFC 5861 §3): for N seconds it answers at once while
  one revalidation runs in the background;
* ``stale-if-error=N`` (RFC 5861 §4), else the ``stale_if_error`` setting: for N seconds
  it answers when the revalidation fails (unreachable, timeout, a 5xx);
* the client's ``max-stale[=N]`` (RFC 9111 §5.2.1.2): answered like stale-while-revalidate;
  ``min-fresh=N`` (§5.2.1.3) asks for N more seconds of freshness;
* ``must-revalidate``, ``proxy-revalidate`` and ``no-cache`` forbid them all (RFC 9111
  §5.2.2.2, §5.2.2.8, §5.2.2.4), as does an object that is not stored.

The cache layer asks :func:`on_request` what a request gets from a stored object and
:func:`on_error` when a revalidation fails, and acts on the value it gets.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.core.conditions import RequestDirectives
from proxy.core.representation import ObjectMeta, directives
from proxy.http.ranges import parse_int

__all__ = ["StaleWindows", "stale_windows", "stale_for", "client_may_take_stale", "ServeStale", "Fresh",
           "Revalidate", "PassError", "on_request", "usable_without_origin", "on_error", "is_error_status",
           "WHILE_REVALIDATE", "IF_ERROR", "MAX_STALE"]

WHILE_REVALIDATE = "stale-while-revalidate"
IF_ERROR = "stale-if-error"
MAX_STALE = "max-stale"


@dataclass(frozen=True, slots=True)
class StaleWindows:
    """Seconds past expiry during which a stale object may answer, for each reason."""

    while_revalidate: float  # answered at once, revalidated in the background (RFC 5861 §3)
    if_error: float  # answered when the revalidation fails (RFC 5861 §4)


def _stored_directives(meta: ObjectMeta) -> dict[str, str | None]:
    """The stored response's Cache-Control (as the last 304 freshened it, RFC 9111 §3.2)."""
    return directives(", ".join(v for n, v in meta.headers if n.lower() == "cache-control"))


def _seconds(cc: dict[str, str | None], name: str) -> int | None:
    """A delta-seconds argument; an absent or invalid one counts as no directive."""
    arg = cc.get(name)
    return parse_int(arg) if arg is not None else None


def _forbidden(meta: ObjectMeta, cc: dict[str, str | None]) -> bool:
    """RFC 9111 §4.2.4: never stale where a directive forbids it: must-revalidate (§5.2.2.2),
    proxy-revalidate (§5.2.2.8, for a shared cache), no-cache (§5.2.2.4: each use is validated).
    An object that is not stored is never reused at all."""
    return not meta.storable or "must-revalidate" in cc or "proxy-revalidate" in cc or "no-cache" in cc


def stale_windows(meta: ObjectMeta, default_if_error: float) -> StaleWindows:
    """The windows the origin's directives (and the ``stale_if_error`` setting) allow ``meta``."""
    cc = _stored_directives(meta)
    if _forbidden(meta, cc):
        return StaleWindows(0.0, 0.0)
    swr = _seconds(cc, WHILE_REVALIDATE) or 0
    sie = _seconds(cc, IF_ERROR)
    if sie is None:
        # RFC 9111 §4.2.4 allows stale by "configuration in accordance with an out-of-band
        # contract" (the operator's setting) but §5.2.2.10: s-maxage carries proxy-revalidate's
        # meaning for a shared cache, so the setting never applies to it. An explicit
        # stale-if-error in the same response is the origin's own permission and does.
        default = 0.0 if "s-maxage" in cc else default_if_error
        return StaleWindows(float(swr), default)
    return StaleWindows(float(swr), float(sie))


def client_may_take_stale(meta: ObjectMeta, now: float, asks: RequestDirectives) -> bool:
    """RFC 9111 §5.2.1.2: the client's max-stale accepts ``meta`` this stale, and no directive
    of the origin's forbids it (§4.2.4; s-maxage is proxy-revalidate here, §5.2.2.10)."""
    if asks.max_stale is None:
        return False
    cc = _stored_directives(meta)
    return not _forbidden(meta, cc) and "s-maxage" not in cc and stale_for(meta, now) <= asks.max_stale


def stale_for(meta: ObjectMeta, now: float) -> float:
    """Seconds ``meta`` has been stale at ``now`` (negative while it is fresh)."""
    return now - (meta.stored_at + meta.ttl)


@dataclass(frozen=True, slots=True)
class ServeStale:
    """Answer from the stored object; ``fwd``/``fwd_status``/``detail`` are its Cache-Status
    parameters (RFC 9211 §2)."""

    detail: str  # WHILE_REVALIDATE, MAX_STALE or IF_ERROR
    fwd: str | None = None  # "stale" when the request went to the origin first (RFC 9211 §2.2)
    fwd_status: int | None = None  # the origin's error status, when it answered one (§2.3)


@dataclass(frozen=True, slots=True)
class Fresh:
    """Fresh enough for this request: answer from the cache."""


@dataclass(frozen=True, slots=True)
class Revalidate:
    """Wait for the revalidation (one per object) before answering."""


@dataclass(frozen=True, slots=True)
class PassError:
    """The failure reaches the client as it would on a miss (the origin's 5xx, or 502/504)."""


def on_request(meta: ObjectMeta, now: float, asks: RequestDirectives) -> Fresh | ServeStale | Revalidate:
    """A request for stored ``meta``: answer from the cache, answer stale (and revalidate behind
    the answer), or wait for a revalidation?"""
    if asks.revalidate:
        # RFC 9111 §5.2.1.4: no-cache (or max-age=0) wants a validated answer; never a stale one.
        return Revalidate()
    # §5.2.1.1: max-age=N wants an answer at most N seconds old (and, without max-stale, not stale).
    if asks.max_age is not None and meta.age(now) > asks.max_age:
        return Revalidate()
    # §5.2.1.3: min-fresh wants the answer to stay fresh that much longer.
    if stale_for(meta, now + asks.min_fresh) < 0:
        return Fresh()
    if not meta.is_fresh(now):
        if client_may_take_stale(meta, now, asks):
            return ServeStale(MAX_STALE)
        # RFC 5861 §3: within stale-while-revalidate of its expiry the stale object answers
        # at once; the revalidation runs in the background. RFC 9211 §3: that is a hit
        # (nothing was forwarded for this request), with a negative ttl.
        if stale_for(meta, now) < stale_windows(meta, 0.0).while_revalidate:
            return ServeStale(WHILE_REVALIDATE)
    return Revalidate()


def usable_without_origin(meta: ObjectMeta, now: float, asks: RequestDirectives) -> Fresh | ServeStale | None:
    """only-if-cached (§5.2.1.7): how ``meta`` may answer without the origin being asked at
    all (fresh, or as stale as the client's max-stale accepts), or None."""
    decision = on_request(meta, now, asks)
    if isinstance(decision, Fresh) or (isinstance(decision, ServeStale) and decision.detail == MAX_STALE):
        return decision
    return None


def is_error_status(status: int) -> bool:
    """RFC 5861 §4: an error is what would make a 500, 502, 503 or 504; any 5xx here."""
    return 500 <= status < 600


def on_error(meta: ObjectMeta, now: float, default_if_error: float, status: int | None) -> ServeStale | PassError:
    """A revalidation of ``meta`` failed: ``status`` is the origin's answer, None when there was
    none we could use (unreachable, timeout, a broken answer). Serve it stale, or pass the error?"""
    # A status that is no error (a 403, a 301) is the origin's answer to this request: passed
    # through as a miss would pass it, never hidden behind a stored object.
    if status is not None and not is_error_status(status):
        return PassError()
    # RFC 5861 §4 / RFC 9111 §4.2.4: stale only within the stale-if-error window.
    # A still-fresh object (a revalidation the client asked for) is no stale answer at all.
    if stale_for(meta, now) < stale_windows(meta, default_if_error).if_error or meta.is_fresh(now):
        return ServeStale(IF_ERROR, fwd="stale", fwd_status=status)
    return PassError()
