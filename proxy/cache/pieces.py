"""The values a response is made of: file pieces of slice files, and what one response cost."""

from __future__ import annotations

import os
from dataclasses import dataclass

from proxy.cache.flights import ObjectFlights
from proxy.core.representation import ObjectMeta
from proxy.core.staleness import ServeStale
from proxy.core.slices import Unit

__all__ = ["FilePiece", "RequestTally", "MetaLease", "part_size", "close_pieces", "pread_exact"]


@dataclass(frozen=True, slots=True)
class FilePiece:
    """``count`` bytes at ``offset`` of an open slice file (a dup owned by the sender)."""

    fd: int
    offset: int
    count: int


@dataclass(slots=True)
class RequestTally:
    """What one response was made of: for X-Cache, the access log and per-request metrics."""

    cache_bytes: int = 0
    origin_bytes: int = 0
    hits: int = 0
    misses: int = 0
    collapsed: int = 0
    upstream_seconds: float = 0.0  # time this response waited on the origin (metadata, fills)


@dataclass(frozen=True, slots=True)
class MetaLease:
    """An object's metadata, plus interest the discovery run holds for the initiator."""

    meta: ObjectMeta
    held: tuple[Unit, ...] | None = None  # units the initiator's discovery run is fetching
    personal: tuple[tuple[str, str], ...] = ()  # Set-Cookie of the answer the initiator's request caused
    flights: ObjectFlights | None = None  # the initiator's private flights (an object not stored)
    stale: ServeStale | None = None  # answered stale, and why (proxy.core.staleness)
    failure: Exception | None = None  # the failed revalidation behind a stale-if-error answer


def part_size(part: bytes | FilePiece) -> int:
    """Bytes a part of a body stands for (in memory, or in a file)."""
    return part.count if isinstance(part, FilePiece) else len(part)


def close_pieces(pieces: list[bytes | FilePiece]) -> None:
    for p in pieces:
        if isinstance(p, FilePiece):
            os.close(p.fd)


def pread_exact(fd: int, count: int, offset: int) -> bytes | None:
    """``count`` bytes at ``offset``, or None on a short read (the file shrank under us)."""
    data = os.pread(fd, count, offset)
    return data if len(data) == count else None
