"""Plain counters the metrics layer exports at scrape time (one per engine: no globals)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

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

    @classmethod
    def total(cls, parts: Iterable[Counters]) -> Counters:
        """The sum of several engines' counters (one per origin)."""
        out = cls()
        for c in parts:
            out.slice_lookups.update(c.slice_lookups)
            out.upstream.update(c.upstream)
            out.response_bytes.update(c.response_bytes)
            out.upstream_bytes += c.upstream_bytes
            out.upstream_seconds += c.upstream_seconds
            out.version_changes += c.version_changes
            out.prefetches += c.prefetches
        return out


