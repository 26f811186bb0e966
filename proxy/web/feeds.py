"""The change feeds of this worker's origins: which it subscribes, their states, and the purge.

With ``--workers`` only the first worker subscribes (``subscribe``): one connection per origin
for the whole proxy, and its purges reach the other workers through the invalidation log all of
them share (``proxy.workers.sync``), as an admin purge does, within ``INVALIDATION_POLL``. A
worker the supervisor restarts as index 0 subscribes again.
"""

from __future__ import annotations

import logging
from typing import Callable, Protocol

import aiohttp

from proxy.cache.changefeed import ChangeFeed, FeedState
from proxy.cache.engine import Engine
from proxy.core.changes import OriginChange, upstream_target
from proxy.core.origins import OriginConfig

__all__ = ["OriginFeeds"]

log = logging.getLogger("rangeproxy.changefeed")


class KeyMaker(Protocol):
    def cache_key(self, target: str) -> str: ...


class OriginFeeds:
    """One :class:`ChangeFeed` per origin that names a feed (in the subscribing worker only)."""

    def __init__(self, subscribe: bool, purged: Callable[[str], None]) -> None:
        self.subscribe = subscribe
        self.purged = purged  # told each URL purged (the stats forget its slice map)
        self.states: dict[str, FeedState] = {}  # by origin name: the current origins' feeds

    def start(self, origin: OriginConfig, engine: Engine, keys: KeyMaker,
              session: aiohttp.ClientSession) -> ChangeFeed | None:
        if not origin.change_feed or not self.subscribe:
            return None
        state = self.states[origin.name] = FeedState(origin.change_feed)

        async def on_change(change: OriginChange) -> int:
            return await self.purge(origin, engine, keys, change)

        feed = ChangeFeed(origin.name, origin.change_feed_token, session, on_change, state)
        feed.start()
        return feed

    def forget(self, names: set[str]) -> None:
        """Origins no longer configured: their states leave the metrics and the stats."""
        for name in list(self.states):
            if name not in names:
                del self.states[name]

    async def purge(self, origin: OriginConfig, engine: Engine, keys: KeyMaker, change: OriginChange) -> int:
        """Drop the object the change names, and the same path under any query (a query is part
        of the key unless the origin's cache_key rule drops it); the number of objects purged."""
        target = upstream_target(origin.primary, change.path)
        if target is None:
            return 0
        key = keys.cache_key(target)
        reason = f"{change.kind} at the origin (change feed)"
        known = await engine.held_meta(key) is not None  # a purge of something the cache held
        await engine.invalidate(key, reason)  # known or not: a fill under way fails too
        gone = int(known)
        if known:
            self.purged(key)
        for url in await engine.invalidate_under(key + "?", reason):
            self.purged(url)
            gone += 1
        log.info("origin %s: %s %s: %d object%s purged", origin.name, change.kind, change.path, gone,
                 "" if gone == 1 else "s")
        return gone
