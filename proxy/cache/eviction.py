"""Eviction done by the store, not inside diskcache's ``set()``: it says which keys left.

diskcache culls silently inside ``set()`` (``cull_limit`` rows by its LRU, no hook), so the
file index could only learn of it by rebuilding itself from a full scan. The store opens
diskcache with ``cull_limit=0`` and culls here instead, on its own threads, after a write
that left the cache over its size limit: the least recently used rows (the indexed
``access_time`` column, what diskcache's own "least-recently-used" cull reads), at most
:data:`CULL_BATCH` at a time, deleted in one transaction with their files removed once it
commits, exactly as diskcache's ``_cull`` does, and their keys returned for the index.

Each batch is one range of the ``access_time`` index and one DELETE by rowid: its cost does
not grow with the catalogue, and the event loop never waits on it.
"""

from __future__ import annotations

from typing import Any

import diskcache

__all__ = ["cull", "evict_tag", "CULL_BATCH", "MAX_BATCHES"]

CULL_BATCH = 64  # rows per transaction (diskcache's own default cull is 10 per set)
MAX_BATCHES = 16  # per write: a write of a large slice over a full cache frees what it takes


def _delete(cache: diskcache.Cache, select: str, args: tuple[Any, ...]) -> list[object]:
    """Delete the rows ``select`` names (rowid, key, filename), files after the commit; their keys."""
    with cache._transact(retry=True) as (sql, cleanup):
        rows = sql(select, args).fetchall()
        if rows:
            sql("DELETE FROM Cache WHERE rowid IN (%s)" % ",".join(str(int(r[0])) for r in rows))
            for _, _, filename in rows:
                cleanup(filename)  # None for a value kept in SQLite: diskcache skips it
    return [key for _, key, _ in rows]


def cull(cache: diskcache.Cache, size_limit: int) -> list[object]:
    """Delete least recently used entries while the cache is over ``size_limit``; their keys."""
    gone: list[object] = []
    for _ in range(MAX_BATCHES):
        if cache.volume() <= size_limit:
            break
        keys = _delete(cache, "SELECT rowid, key, filename FROM Cache ORDER BY access_time LIMIT ?", (CULL_BATCH,))
        if not keys:
            break
        gone += keys
    return gone


def evict_tag(cache: diskcache.Cache, tag: str) -> list[object]:
    """Delete every entry tagged ``tag`` (one object: its metadata and slices); their keys.

    diskcache's ``evict(tag)`` does the same by the tag index but returns only a count.
    """
    gone: list[object] = []
    while True:
        keys = _delete(cache, "SELECT rowid, key, filename FROM Cache WHERE tag = ? ORDER BY rowid LIMIT ?",
                       (tag, 256))
        gone += keys
        if len(keys) < 256:
            return gone
