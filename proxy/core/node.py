"""This node as a balancer in front of a fleet sees it: its name, and its health while it drains (pure).

Behind a consistent-hash balancer (README, "Behind a consistent-hash balancer") each node names
itself in every response (``X-Cache-Node``), and on SIGTERM it first drains: ``/healthz`` answers
503 "draining" for ``drain_period`` seconds while requests are still served, so the balancer's
health check takes the node out before it stops listening. Time is a value the caller passes.
"""

from __future__ import annotations

__all__ = ["NODE_FIELD", "Drain", "node_health"]

NODE_FIELD = "X-Cache-Node"  # the response field naming the node that answered


class Drain:
    """Whether this process is draining (SIGTERM came; it serves on, its health check fails)."""

    __slots__ = ("period", "since")

    def __init__(self, period: float) -> None:
        if not period >= 0:  # also refuses NaN
            raise ValueError(f"drain period must be >= 0 seconds (got {period!r})")
        self.period = period
        self.since: float | None = None

    @property
    def draining(self) -> bool:
        return self.since is not None

    def begin(self, now: float) -> bool:
        """SIGTERM at ``now``: True when this starts a drain the caller must time (a period, and
        not draining yet); False when the stop is due at once (no period, or a second signal)."""
        if self.since is not None or self.period <= 0:
            return False
        self.since = now
        return True

    def remaining(self, now: float) -> float:
        """Seconds of the drain left at ``now`` (0 when not draining or over)."""
        if self.since is None:
            return 0.0
        return max(0.0, self.since + self.period - now)


def node_health(started: bool, writable: bool, draining: bool) -> tuple[str, int]:
    """``/healthz``'s status word and HTTP status: 503 "starting" before the cache is open,
    503 "draining" once a drain began (whatever the cache), else 200 "ok", or 200 "degraded"
    when the cache cannot be written (answers come from the origin: worth sending to)."""
    if not started:
        return "starting", 503
    if draining:
        return "draining", 503
    return ("ok" if writable else "degraded"), 200
