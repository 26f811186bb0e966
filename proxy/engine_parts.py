"""The state the engine's halves share, declared once for both mixins (set by ``Engine``)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.budget import ByteBudget
    from proxy.config import Settings
    from proxy.counters import Counters
    from proxy.crossfill import UnitClaims
    from proxy.flights import ObjectFlights
    from proxy.store import SliceStore
    from proxy.upstream import Upstream

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
