"""The origins of one app at work: each one's upstream, engine and handler, routed by Host and path.

A reload builds what changed before it swaps anything (a config that cannot be started,
a CA bundle that does not load, is refused whole and the old origins stay), then new
requests go to the new origins while the replaced ones finish their responses and close.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from aiohttp import web

from proxy.cache.budget import ByteBudget
from proxy.cache.changefeed import ChangeFeed
from proxy.cache.engine import Engine
from proxy.cache.engines import EngineSet
from proxy.cache.store import SliceStore
from proxy.cache.upstream import Upstream
from proxy.core.origins import OriginConfig
from proxy.core.routing import Routed, Router, Unrouted
from proxy.core.settings import Settings
from proxy.web.feeds import OriginFeeds
from proxy.web.handlers import INFO_KEY, Observer, ProxyHandler
from proxy.web.sending import ResponseInfo
from proxy.workers.info import RUN_DIR_NAME
from proxy.workers.sync import SharedCacheDir

__all__ = ["Site", "Sites"]

log = logging.getLogger("rangeproxy")
RETIRE_POLL = 0.5  # seconds between looks at whether a replaced origin has finished its responses


class Site:
    """One origin: its config, the settings its engine runs with, its upstream, engine and handler,
    and its change feed's subscription (if it names one and this worker subscribes)."""

    def __init__(self, origin: OriginConfig, settings: Settings, upstream: Upstream, engine: Engine,
                 handler: ProxyHandler, feed: ChangeFeed | None = None) -> None:
        self.origin = origin
        self.settings = settings
        self.upstream = upstream
        self.engine = engine
        self.handler = handler
        self.feed = feed
        self.active = 0  # responses under way

    def same(self, origin: OriginConfig, settings: Settings) -> bool:
        return self.origin == origin and self.settings == settings

    async def close(self) -> None:
        if self.feed is not None:
            await self.feed.stop()
        await self.engine.close()
        await self.upstream.close()


class Sites:
    """The current origins, their router, and the engines as one view (:class:`EngineSet`)."""

    def __init__(self, store: SliceStore, observer: Observer, feeds: OriginFeeds | None = None) -> None:
        self.store = store
        self.observer = observer
        self.feeds = feeds
        self.view: EngineSet | None = None
        self.settings: Settings | None = None  # the ones applied last
        self.sites: dict[str, Site] = {}
        self.router = Router(())
        self._retiring: set[asyncio.Task[None]] = set()

    async def _build(self, settings: Settings, origin: OriginConfig, view: EngineSet) -> Site:
        own = settings.of_origin(origin)
        upstream = Upstream.for_origin(origin, own)
        await upstream.start()
        # Several worker processes share the cache directory: claims keep one origin fetch
        # per unit across them, and a log tells the others what one of them invalidated.
        sync = SharedCacheDir(Path(settings.cache_dir) / RUN_DIR_NAME) if settings.workers > 1 else None
        engine = Engine(own, self.store, upstream, sync, counters=view.counters_for(origin.name),
                        fill_budget=view.fill_budget)
        await engine.start()
        handler = ProxyHandler(engine, self.observer, origin)
        # The feed shares the upstream's session: its TLS settings, and one connection of its pool.
        feed = self.feeds.start(origin, engine, handler, upstream.session) if self.feeds is not None else None
        return Site(origin, own, upstream, engine, handler, feed)

    async def apply(self, settings: Settings) -> list[str]:
        """Start the origins of ``settings`` (at start-up, and on a reload); the names of those
        that changed. Nothing is swapped unless every new one started."""
        if self.view is None:
            self.view = EngineSet(self.store, ByteBudget(settings.fill_memory))
        view = self.view
        built: dict[str, Site] = {}
        try:
            for origin in settings.origins:
                old = self.sites.get(origin.name)
                if old is None or not old.same(origin, settings.of_origin(origin)):
                    built[origin.name] = await self._build(settings, origin, view)
        except BaseException:
            for site in built.values():
                await site.close()
            raise
        names = {o.name for o in settings.origins}
        if self.feeds is not None:
            self.feeds.forget(names)
        gone = [s for n, s in self.sites.items() if n in built or n not in names]
        self.sites = {o.name: built.get(o.name) or self.sites[o.name] for o in settings.origins}
        self.router = Router([s.origin for s in self.sites.values()])
        view.current = {n: s.engine for n, s in self.sites.items()}
        for site in gone:
            self._retire(site)
        self.settings = settings
        return sorted(built) + sorted(n for n in {s.origin.name for s in gone} if n not in names)

    def _retire(self, site: Site) -> None:
        assert self.view is not None
        self.view.retiring.add(site.engine)

        async def finish() -> None:
            while site.active:
                await asyncio.sleep(RETIRE_POLL)
            try:
                await site.close()
            finally:
                if self.view is not None:
                    self.view.retiring.discard(site.engine)

        task = asyncio.get_running_loop().create_task(finish())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        for site in self.sites.values():
            await site.close()
        self.sites = {}

    def route(self, host: str | None, target: str) -> tuple[Site, str] | Unrouted:
        """The origin that takes a request for ``target`` on ``host``, and the target sent upstream."""
        got = self.router.route(host, target)
        if isinstance(got, Routed):
            return self.sites[got.origin.name], got.target
        return got

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # Only a target not starting with "/" can be absolute-form (request.message warns per call).
        if not request.raw_path.startswith("/") and request.message.url.is_absolute():
            return self._refused(request, 400, "absolute-form request targets are not accepted")
        got = self.route(request.headers.get("Host"), request.raw_path)
        if isinstance(got, Unrouted):
            return self._refused(request, got.status, got.reason)
        site, target = got
        site.active += 1
        try:
            return await site.handler.handle(request, target)
        finally:
            site.active -= 1

    def _refused(self, request: web.Request, status: int, reason: str) -> web.StreamResponse:
        """A request no origin takes: a plain answer, counted like any other."""
        resp = web.Response(status=status, text=f"{status} {reason}\n", headers={"Cache-Control": "no-store"})
        info = request[INFO_KEY] = ResponseInfo()
        info.finished = info.first_byte = time.monotonic()
        self.observer(request, resp, info)
        return resp

