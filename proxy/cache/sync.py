"""What the engine asks of other worker processes sharing its cache directory, and the no-op for one.

One origin fetch per unit across workers (claims) and one invalidation seen by all
(a log). ``proxy.workers.sync`` implements it for several workers; the engine gets
one in its constructor and never branches on how many workers there are.
"""

from __future__ import annotations

from typing import Iterable, Protocol, Sequence

from proxy.core.slices import Unit

__all__ = ["WorkerSync", "SingleProcess"]


class WorkerSync(Protocol):
    """Claims on units and invalidations, shared by the workers of one cache directory."""

    @property
    def shared(self) -> bool:
        """Do other workers share the cache (then stored data may appear under us)?"""
        ...

    def claim_prefix(self, url: str, units: Sequence[Unit]) -> list[Unit]:
        """The leading units of ``units`` this worker could claim (all, with one worker)."""
        ...

    def try_claim(self, url: str, unit: Unit) -> bool: ...

    def release(self, url: str, units: Iterable[Unit]) -> None: ...

    def held_elsewhere(self, url: str, unit: Unit) -> bool:
        """Is another worker fetching ``unit`` right now?"""
        ...

    def announce_invalidation(self, url: str) -> None:
        """Tell the other workers that ``url`` was dropped."""
        ...

    def invalidated_elsewhere(self) -> list[str]:
        """URLs other workers dropped since the last call."""
        ...


class SingleProcess:
    """The only worker: every claim succeeds, nobody else invalidates."""

    shared = False

    def claim_prefix(self, url: str, units: Sequence[Unit]) -> list[Unit]:
        return list(units)

    def try_claim(self, url: str, unit: Unit) -> bool:
        return True

    def release(self, url: str, units: Iterable[Unit]) -> None:
        pass

    def held_elsewhere(self, url: str, unit: Unit) -> bool:
        return False

    def announce_invalidation(self, url: str) -> None:
        pass

    def invalidated_elsewhere(self) -> list[str]:
        return []
