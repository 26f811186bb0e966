"""The engines of all origins seen as one: what the metrics, the stats and the dashboard read.

Each origin has its own engine (its slice size, TTLs, upstream); they share the store and
the fill-memory budget. An origin's counters are kept by name, so a reload that gives it a
new engine continues them, and an origin removed by a reload still counts what it did.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from proxy.cache.budget import ByteBudget
from proxy.cache.engine import Engine
from proxy.cache.store import SliceStore
from proxy.core.counters import Counters

__all__ = ["EngineSet"]


class EngineSet:
    def __init__(self, store: SliceStore, fill_budget: ByteBudget) -> None:
        self.store = store
        self.fill_budget = fill_budget
        self.current: dict[str, Engine] = {}  # origin name -> its engine now
        self.retiring: set[Engine] = set()  # replaced by a reload, finishing their responses
        self.counters_of: dict[str, Counters] = {}

    def counters_for(self, name: str) -> Counters:
        return self.counters_of.setdefault(name, Counters())

    def _all(self) -> list[Engine]:
        return [*self.current.values(), *self.retiring]

    @property
    def counters(self) -> Counters:
        return Counters.total(self.counters_of.values())

    @property
    def storing(self) -> set[asyncio.Task[None]]:
        return {t for e in self._all() for t in e.storing}

    def in_flight(self) -> int:
        return sum(e.in_flight() for e in self._all())

    def waiting(self) -> int:
        return sum(e.waiting() for e in self._all())

    def origin_of(self, url: str) -> tuple[str, str]:
        """(origin name, upstream base) of a cache key: the origin whose first upstream it starts with."""
        best = ("", "")
        for name, engine in self.current.items():
            base = engine.upstream.base_url
            if url.startswith(base) and len(base) > len(best[1]):
                best = (name, base)
        return best

    def origin_states(self) -> list[tuple[str, Counters, list[dict[str, object]]]]:
        """Per origin (configured now, or counted before a reload removed it): its counters and
        the health of its upstream URLs (:meth:`proxy.core.health.UpstreamHealth.snapshot`)."""
        now = time.monotonic()
        out = []
        for name, counters in self.counters_of.items():
            engine = self.current.get(name)
            health = engine.upstream.health.snapshot(now) if engine is not None else []
            for h in health:  # seconds from now rather than a monotonic clock reading
                until = h.get("cool_until")
                h["cool_until"] = None if until is None else round(float(until) - now, 3)  # type: ignore[arg-type]
            out.append((name, counters, health))
        return out

    async def slice_map(self, url: str) -> dict[str, Any] | None:
        name, _ = self.origin_of(url)
        engine = self.current.get(name)
        return await engine.slice_map(url) if engine is not None else None
