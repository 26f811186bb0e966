"""Passive health of an origin's upstream base URLs, and the failover order it gives (pure).

Passive: nothing is probed. What the last requests to each base saw (a connection failure, a 5xx)
decides the order the next request tries them in. A base that failed ``policy.failures`` times in a
row cools down for ``policy.cooldown`` seconds: it is tried last, never dropped, so a request always
has somewhere to go. When its cooldown ends it is tried in its configured place again, on
probation: its failure count is kept, so one more failure cools it down at once, and one success
clears it (the half-open state of a circuit breaker).

Time is a value the caller passes (``now``, seconds on a monotonic clock); nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

__all__ = ["IDEMPOTENT", "HealthPolicy", "UpstreamHealth", "retryable"]

# RFC 9110 §9.2.2: the safe methods (§9.2.1), PUT and DELETE. A request with any other method
# (POST, PATCH, ...) must not be repeated automatically: it may already have taken effect.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


def retryable(status: int | None, method: str) -> bool:
    """Whether an upstream outcome sends the request on to the next base.

    ``status`` is the answer's status code, or None when the connection failed or timed out before
    any answer (once a status line is in, a later failure is not retried here: part of the answer
    may already be on its way to the client). A 5xx says that base could not serve the request, so
    another may; 2xx, 3xx and 4xx are the answer. Only idempotent methods are retried (RFC 9110
    §9.2.2); the caller must be able to send a request body again (PUT). Beneath this, aiohttp
    itself sends an idempotent request once more on the same base when the connection fails
    before the status line (RFC 9112 §9.3.1), so a lone base survives one reset too.
    """
    if method not in IDEMPOTENT:  # §9.1: the method token is case-sensitive; "get" is not GET
        return False
    return status is None or 500 <= status <= 599


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    cooldown: float = 10.0  # seconds a failed base is tried last
    failures: int = 1  # consecutive failures before a base cools down
    max_tries: int = 0  # bases tried per request, at most; 0 = every base once

    def __post_init__(self) -> None:
        if not self.cooldown >= 0:  # also refuses NaN
            raise ValueError(f"cooldown must be >= 0 seconds (got {self.cooldown!r})")
        if self.failures < 1:
            raise ValueError(f"failures must be >= 1 (got {self.failures!r})")
        if self.max_tries < 0:
            raise ValueError(f"max_tries must be >= 0, 0 for every base (got {self.max_tries!r})")


@dataclass(slots=True)
class _State:
    failures: int = 0  # consecutive, since the last success
    cool_until: float | None = None  # set when ``failures`` reached the policy's; kept once it has passed


class UpstreamHealth:
    """Which base URL to try first, from what the last requests to each saw (passive: no probes)."""

    __slots__ = ("bases", "policy", "_states")

    def __init__(self, bases: Sequence[str], policy: HealthPolicy = HealthPolicy()) -> None:
        if isinstance(bases, str):
            raise TypeError("bases is a sequence of base URLs, not one string")
        if not bases:
            raise ValueError("an origin needs at least one upstream base URL")
        if len(set(bases)) != len(bases):
            raise ValueError(f"the upstream base URLs repeat: {list(bases)!r}")
        self.bases: tuple[str, ...] = tuple(bases)
        self.policy = policy
        self._states: dict[str, _State] = {base: _State() for base in self.bases}

    @property
    def tries(self) -> int:
        """How many bases one request tries, at most: every base once unless ``max_tries`` is lower."""
        n = len(self.bases)
        return min(n, self.policy.max_tries) if self.policy.max_tries else n

    def cooling(self, base: str, now: float) -> bool:
        until = self._state(base).cool_until
        return until is not None and now < until

    def order(self, now: float) -> list[str]:
        """Every base: the healthy ones in configured order, then the cooling ones by when they
        cool down (soonest first; ties in configured order)."""
        healthy = [b for b in self.bases if not self.cooling(b, now)]
        cooling = [b for b in self.bases if self.cooling(b, now)]
        cooling.sort(key=lambda b: self._state(b).cool_until or 0.0)  # stable: ties keep configured order
        return healthy + cooling

    def attempts(self, now: float) -> list[str]:
        """The bases one request tries, in order: the first ``tries`` of :meth:`order`."""
        return self.order(now)[: self.tries]

    def failed(self, base: str, now: float) -> None:
        """A connection failure or a 5xx from ``base`` at ``now``; a failure while cooling down
        starts the cooldown again from ``now``."""
        state = self._state(base)
        state.failures += 1
        if state.failures >= self.policy.failures:
            state.cool_until = now + self.policy.cooldown

    def succeeded(self, base: str) -> None:
        """An answer from ``base`` that is not a failure: it is healthy again at once."""
        state = self._state(base)
        state.failures = 0
        state.cool_until = None

    def snapshot(self, now: float) -> list[dict[str, object]]:
        """For /stats and metrics, in configured order: ``base``, ``healthy``, ``failures`` (consecutive)
        and ``cool_until`` (None unless cooling down at ``now``)."""
        out: list[dict[str, object]] = []
        for base in self.bases:
            cooling = self.cooling(base, now)
            out.append({"base": base, "healthy": not cooling, "failures": self._state(base).failures,
                        "cool_until": self._state(base).cool_until if cooling else None})
        return out

    def _state(self, base: str) -> _State:
        try:
            return self._states[base]
        except KeyError:
            raise ValueError(f"{base!r} is not one of this origin's upstream bases {list(self.bases)!r}") from None
