"""What observe reads of an engine (a Protocol: observe never imports the cache layer)."""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sized

from proxy.core.counters import Counters

__all__ = ["EngineView", "StoreView", "BudgetView", "WritabilityView"]


class WritabilityView(Protocol):
    """Whether the cache directory takes writes (proxy.cache.writability)."""

    @property
    def writable(self) -> bool: ...

    @property
    def errors(self) -> Mapping[str, int]: ...

    def state(self) -> dict[str, object]: ...


class StoreView(Protocol):
    """The store's own tallies."""

    @property
    def writability(self) -> WritabilityView: ...

    @property
    def evictions(self) -> int: ...

    @property
    def corrupt_dropped(self) -> int: ...

    async def volume(self) -> tuple[int, int]: ...

    async def object_count(self) -> int: ...


class BudgetView(Protocol):
    """The fill-memory budget's state."""

    @property
    def held(self) -> int: ...

    @property
    def waits(self) -> int: ...


class EngineView(Protocol):
    """The engine as the metrics, the stats and the dashboard see it, read at scrape time."""

    @property
    def counters(self) -> Counters: ...

    @property
    def store(self) -> StoreView: ...

    def origin_of(self, url: str) -> tuple[str, str]:
        """(origin name, upstream base URL) of a cache key."""
        ...

    @property
    def fill_budget(self) -> BudgetView: ...

    @property
    def storing(self) -> Sized: ...

    def in_flight(self) -> int: ...

    def waiting(self) -> int: ...

    async def slice_map(self, url: str) -> dict[str, Any] | None: ...

    def origin_states(self) -> list[tuple[str, Counters, list[dict[str, object]]]]:
        """(origin name, its counters, the health of its upstream URLs) for each origin."""
        ...
