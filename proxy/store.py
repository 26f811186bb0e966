"""The slice store: the only module that touches diskcache, always off the event loop.

diskcache is synchronous SQLite plus one plain file per value; every call runs on
a small thread pool owned here. Slices are values-as-files (``disk_min_file_size=0``),
tagged with their object's URL so ``evict(tag)`` drops a whole object at once.
A slice read checks the file's length against what the slice must hold: a
truncated or unreadable entry is evicted and reported as a miss, never served.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, TypeVar

import diskcache

from proxy.representation import ObjectMeta

__all__ = ["SliceStore"]

log = logging.getLogger("rangeproxy.store")
T = TypeVar("T")


def _slice_key(url: str, validator: str, index: int) -> str:
    return f"s\x00{url}\x00{validator}\x00{index}"


def _meta_key(url: str) -> str:
    return f"m\x00{url}"


class SliceStore:
    """Slices and object metadata in one diskcache directory, LRU-evicted by size."""

    def __init__(self, directory: str, size_limit: int, threads: int = 4) -> None:
        self._cache = diskcache.Cache(
            directory,
            size_limit=size_limit,
            eviction_policy="least-recently-used",
            disk_min_file_size=0,  # every value is a plain file: a hit can be read by offset
            tag_index=True,  # evict(tag=url) drops one object's slices in one indexed query
            cull_limit=16,
            statistics=False,
        )
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="store")
        self.corrupt_dropped = 0

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # --- metadata -----------------------------------------------------------

    def _get_meta(self, url: str) -> ObjectMeta | None:
        raw = self._cache.get(_meta_key(url))
        if not isinstance(raw, dict):
            return None
        try:
            return ObjectMeta.from_dict(raw)
        except (KeyError, TypeError):
            self._cache.delete(_meta_key(url))
            return None

    async def get_meta(self, url: str) -> ObjectMeta | None:
        return await self._run(self._get_meta, url)

    async def put_meta(self, meta: ObjectMeta) -> None:
        await self._run(self._cache.set, _meta_key(meta.url), meta.to_dict(), None, False, meta.url)

    # --- slices ---------------------------------------------------------------

    def _present(self, url: str, validator: str, indices: Iterable[int]) -> set[int]:
        return {i for i in indices if _slice_key(url, validator, i) in self._cache}

    async def present(self, url: str, validator: str, indices: Iterable[int]) -> set[int]:
        """Which of ``indices`` are stored (no LRU touch, one thread hop)."""
        return await self._run(self._present, url, validator, list(indices))

    def _read(self, url: str, validator: str, index: int, size: int, lo: int, hi: int) -> bytes | None:
        key = _slice_key(url, validator, index)
        try:
            handle = self._cache.get(key, read=True)
        except OSError:
            handle = None
            self._drop_corrupt(key, "unreadable")
        if handle is None:
            return None
        try:
            with handle:
                actual = os.fstat(handle.fileno()).st_size if hasattr(handle, "fileno") else None
                if actual is not None and actual != size:
                    self._drop_corrupt(key, f"length {actual} != {size}")
                    return None
                data = os.pread(handle.fileno(), hi - lo, lo)
        except (OSError, ValueError) as exc:
            self._drop_corrupt(key, f"read failed: {exc}")
            return None
        if len(data) != hi - lo:
            self._drop_corrupt(key, f"short read {len(data)} != {hi - lo}")
            return None
        return data

    def _drop_corrupt(self, key: str, why: str) -> None:
        self.corrupt_dropped += 1
        log.warning("corrupt cache entry dropped (%s): %r", why, key.replace("\x00", " "))
        try:
            self._cache.delete(key)
        except OSError:
            pass

    async def read(self, url: str, validator: str, index: int, size: int, lo: int, hi: int) -> bytes | None:
        """Bytes ``[lo, hi)`` of a stored slice of ``size`` bytes, or None (miss / corrupt)."""
        return await self._run(self._read, url, validator, index, size, lo, hi)

    def _put(self, url: str, validator: str, index: int, data: bytes) -> None:
        self._cache.set(_slice_key(url, validator, index), data, tag=url)

    async def put_slice(self, url: str, validator: str, index: int, data: bytes) -> None:
        await self._run(self._put, url, validator, index, data)

    async def evict_object(self, url: str) -> int:
        """Drop every slice and the metadata of one object (all versions)."""
        return await self._run(self._cache.evict, url)

    async def volume(self) -> tuple[int, int]:
        """(bytes on disk, entries)."""
        return await self._run(lambda: (self._cache.volume(), len(self._cache)))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._cache.close()
