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

Hits do not write diskcache's ``access_time`` one key at a time (at a million objects asked at
random, that was an UPDATE per hit, a third of the store's CPU); the file index keeps a tick
of each entry's last use instead, and a candidate used since its ``access_time`` (``spare``)
is given a new ``access_time`` and left, the way a CLOCK cache gives a second chance: what
was used is kept, at a cost that follows the eviction rate, not the hit rate.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import diskcache

from proxy.cache.fileindex import FileIndex

__all__ = ["cull", "evict_tag", "never", "used_since", "report_uses", "Spare", "CULL_BATCH", "MAX_BATCHES"]

TICK = 10.0  # seconds: the resolution of the uses the file index keeps for the cull
TOUCH_SQL_BUDGET = 256  # access_time UPDATEs per report at most (the rest live in the file index)
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


Spare = Callable[[object, float], bool]  # (key, access_time): used since then?


def never(key: object, access_time: float) -> bool:
    return False


def _tick(epoch: float) -> int:
    """A wall-clock time as the file index's 16-bit use tick (never 0: that is "no use")."""
    return int(epoch // TICK) & 0xFFFF or 1


def used_since(files: FileIndex, key: object, access_time: float) -> bool:
    """Has this process used the entry since its diskcache access_time? (the cull's second chance)"""
    used = files.used_at(key) if isinstance(key, str) else 0
    return used != 0 and 0 < (used - _tick(access_time)) & 0xFFFF < 0x8000


def report_uses(cache: diskcache.Cache, files: FileIndex, keys: list[str]) -> None:
    """Uses served without diskcache go to the file index (a tick each, what the cull reads)
    and, up to a budget, to diskcache's LRU, its access_time column (what other workers'
    culls read): one UPDATE a key there, which at a million objects asked at random would be
    one per hit."""
    now = time.time()
    files.mark_used(keys, _tick(now))
    with cache.transact():
        cache._con.executemany("UPDATE Cache SET access_time = ? WHERE key = ?",
                               [(now, k) for k in keys[:TOUCH_SQL_BUDGET]])


def _cull_batch(cache: diskcache.Cache, spare: Spare) -> tuple[list[object], int]:
    """One batch of the least recently used rows: the keys deleted, and how many were spared."""
    with cache._transact(retry=True) as (sql, cleanup):
        rows = sql("SELECT rowid, key, filename, access_time FROM Cache ORDER BY access_time LIMIT ?",
                   (CULL_BATCH,)).fetchall()
        kept = [r for r in rows if spare(r[1], r[3])]
        if kept:
            now = time.time()
            sql("UPDATE Cache SET access_time = ? WHERE rowid IN (%s)" % ",".join(str(int(r[0])) for r in kept),
                (now,))
        gone = [r for r in rows if r not in kept] if kept else rows
        if gone:
            sql("DELETE FROM Cache WHERE rowid IN (%s)" % ",".join(str(int(r[0])) for r in gone))
            for r in gone:
                cleanup(r[2])
    return [r[1] for r in gone], len(kept)


def cull(cache: diskcache.Cache, size_limit: int, spare: Spare = never) -> list[object]:
    """Delete least recently used entries while the cache is over ``size_limit``; their keys.
    An entry used since its ``access_time`` (``spare``) gets a second chance instead: it is
    spared once per use, so a cache whose every entry was used still frees space."""
    gone: list[object] = []
    for _ in range(MAX_BATCHES):
        if cache.volume() <= size_limit:
            break
        keys, kept = _cull_batch(cache, spare)
        if not keys and not kept:
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
