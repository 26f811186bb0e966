"""The state the engine's halves share, declared once for both mixins (set by ``Engine``)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.cache.budget import ByteBudget
    from proxy.core.settings import Settings
    from proxy.core.counters import Counters
    from proxy.workers.claims import UnitClaims
    from proxy.cache.flights import ObjectFlights
    from proxy.cache.store import SliceStore
    from proxy.cache.upstream import Upstream

__all__ = ["EngineParts"]


class EngineParts:
    settings: Settings
    store: SliceStore
    upstream: Upstream
    slice_size: int
    block_size: int
    counters: Counters
    claims: UnitClaims | None
    _flights: dict[str, ObjectFlights]
    _reading: OrderedDict[str, tuple[int, int]]
    active_streams: int
    storing: set[asyncio.Task[None]]  # verified slices being written to the store
    fill_budget: ByteBudget  # bytes of fills in memory, bounded across all runs
