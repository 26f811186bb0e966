"""Object metadata: hot in memory (LRU-bounded), all of it in the store, written in the background."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from proxy.cache.store import SliceStore
from proxy.cache.tasks import Jobs, register_until_done
from proxy.core.representation import ObjectMeta

__all__ = ["MetaCache", "META_MEMORY"]

log = logging.getLogger("rangeproxy.engine")
META_MEMORY = 100_000  # objects whose metadata is kept in memory (about 0.5 KiB each; the store has all)


class MetaCache:
    """Where an object's metadata is kept; nobody reads back what is being evicted."""

    def __init__(self, store: SliceStore, jobs: Jobs, memory: int = META_MEMORY) -> None:
        self.store = store
        self.jobs = jobs
        self.memory = memory
        self._hot: OrderedDict[str, ObjectMeta] = OrderedDict()
        self._reads: dict[str, asyncio.Task[ObjectMeta | None]] = {}
        self._writes: dict[str, asyncio.Task[None]] = {}  # background metadata writes
        self._evicting: dict[str, asyncio.Future[None]] = {}
        self._dropped_meanwhile: set[str] | None = None  # while a preload reads the store

    def hot(self, url: str) -> ObjectMeta | None:
        """Metadata in memory (no await, no LRU touch)."""
        return self._hot.get(url)

    def touch(self, url: str) -> None:
        self._hot.move_to_end(url)

    def keep(self, meta: ObjectMeta) -> None:
        """Keep ``meta`` in memory (the least recently used beyond the bound leave)."""
        self._hot[meta.url] = meta
        self._hot.move_to_end(meta.url)
        while len(self._hot) > self.memory:
            self._hot.popitem(last=False)

    async def preload(self, prefix: str) -> int:
        """Fill memory from the store at start-up, the most recently used objects under ``prefix``
        (an origin's) first: hits then find their metadata here from the first request on."""
        self._dropped_meanwhile = set()
        try:
            metas = await self.store.recent_metas(prefix, self.memory)
            dropped = self._dropped_meanwhile
        finally:
            self._dropped_meanwhile = None
        n = 0
        for meta in reversed(metas):  # the most recent last: the LRU's newest end
            # Learnt since start-up (newer than the stored one), or dropped meanwhile: left alone.
            if meta.url not in self._hot and meta.url not in dropped:
                self._hot[meta.url] = meta
                n += 1
        while len(self._hot) > self.memory:
            self._hot.popitem(last=False)
        return n

    async def load(self, url: str) -> ObjectMeta | None:
        """Stored metadata, once any eviction of it is done; concurrent first requests for
        one URL share one index read."""
        evicting = self._evicting.get(url)
        if evicting is not None:
            await asyncio.shield(evicting)
        task = self._reads.get(url)
        if task is None:
            task = asyncio.get_running_loop().create_task(self.store.get_meta(url))
            register_until_done(self._reads, url, task)
        return await asyncio.shield(task)

    async def remember(self, meta: ObjectMeta) -> None:
        """Keep ``meta`` and write it to the store before going on."""
        self.keep(meta)
        if meta.storable:
            await self.store.put_meta(meta)

    def persist(self, meta: ObjectMeta) -> None:
        """Write metadata in the background (a clean stop waits for it, like slices)."""
        async def write() -> None:
            try:
                await self.store.put_meta(meta)
            except Exception as exc:  # noqa: BLE001 - memory still has it; the next discovery rewrites it
                log.error("cannot store the metadata of %s: %r", meta.url, exc)

        register_until_done(self._writes, meta.url, self.jobs.store(write()))

    def keys_under(self, prefix: str) -> list[str]:
        """Keys of the metadata in memory that start with ``prefix``."""
        return [k for k in self._hot if k.startswith(prefix)]

    def forget(self, url: str) -> None:
        self._hot.pop(url, None)
        if self._dropped_meanwhile is not None:
            self._dropped_meanwhile.add(url)

    async def evict(self, url: str) -> None:
        """Drop the object from the store; until that is done nobody reads its metadata back."""
        done = asyncio.get_running_loop().create_future()
        self._evicting[url] = done
        if self._dropped_meanwhile is not None:
            self._dropped_meanwhile.add(url)
        try:
            pending = self._writes.get(url)
            if pending is not None:  # a write landing after the eviction would bring it back
                await asyncio.wait([pending])
            await self.store.evict_object(url)
        finally:
            done.set_result(None)
            if self._evicting.get(url) is done:
                del self._evicting[url]
