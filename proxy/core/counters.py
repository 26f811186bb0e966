"""Plain counters the metrics layer exports at scrape time (one per engine: no globals)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Counters"]


@dataclass
class Counters:
    """What the engine did, as plain numbers (the engine never imports prometheus-client)."""

    slice_lookups: Counter[str] = field(default_factory=Counter)  # hit | miss | collapsed
    upstream: Counter[tuple[str, str]] = field(default_factory=Counter)  # (status, ok|mismatch|error|timeout)
    upstream_bytes: int = 0
    upstream_seconds: float = 0.0
    response_bytes: Counter[str] = field(default_factory=Counter)  # cache | origin
    version_changes: int = 0
    prefetches: int = 0  # read-ahead runs started for sequential readers


