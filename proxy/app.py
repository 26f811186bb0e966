"""The aiohttp application: one engine (store + upstream session) per app, no globals.

One catch-all route: a request for an admin path (health, stats, metrics, purge;
see ``proxy.admin``) is answered by the proxy itself, anything else goes to the
origin through the slice cache. Each app has its own metrics registry and stats.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator

from aiohttp import web

from proxy.admin import Admin
from proxy.config import Settings
from proxy.engine import Engine
from proxy.handlers import ProxyHandler, ResponseInfo
from proxy.metrics import Metrics
from proxy.stats import Stats
from proxy.store import SliceStore
from proxy.upstream import Upstream

__all__ = ["build_app", "ENGINE", "SETTINGS", "STATS", "METRICS", "HANDLER"]

log = logging.getLogger("rangeproxy")
ENGINE = web.AppKey("engine", Engine)
SETTINGS = web.AppKey("settings", Settings)
STATS = web.AppKey("stats", Stats)
METRICS = web.AppKey("metrics", Metrics)
HANDLER = web.AppKey("handler", ProxyHandler)


async def _sample_every_second(stats: Stats) -> None:
    """The per-second samples behind the charts and the last-minute rates."""
    loop = asyncio.get_running_loop()
    while True:
        now = loop.time()
        await asyncio.sleep(1.0 - (now % 1.0))
        stats.tick()


def build_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=0)
    app[SETTINGS] = settings

    def engine_or_none() -> Engine | None:
        return app.get(ENGINE)

    stats = Stats(settings)
    metrics = Metrics(settings, engine_or_none, extra=lambda: {
        "purges": ("counter", "Objects purged through the admin API.", stats.purges),
    })
    app[STATS] = stats
    app[METRICS] = metrics
    admin = Admin(settings, stats, metrics, engine_or_none)

    def observe(request: web.Request, resp: web.StreamResponse | None, info: ResponseInfo) -> None:
        try:
            status = resp.status if resp is not None else 500
            finished = info.finished if info.finished is not None else time.monotonic()
            metrics.observe(request.method, status, info.cache_status, finished - info.started, info.ttfb(),
                            info.aborted)
            stats.observe(request.method, status, info)
        except Exception:  # noqa: BLE001 - accounting must never break a response
            log.exception("stats observer failed")

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        store = SliceStore(settings.cache_dir, settings.cache_size, settings.store_threads)
        upstream = Upstream(settings.upstream, connections=settings.upstream_connections,
                            connect_timeout=settings.upstream_connect_timeout,
                            read_timeout=settings.upstream_read_timeout)
        await upstream.start()
        engine = Engine(settings, store, upstream)
        await engine.start()
        app[ENGINE] = engine
        app[HANDLER] = ProxyHandler(engine, observe)
        stats.bind(engine)
        sampler = asyncio.get_running_loop().create_task(_sample_every_second(stats))
        yield
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        await engine.close()
        await upstream.close()
        store.close()

    app.cleanup_ctx.append(lifecycle)

    async def dispatch(request: web.Request) -> web.StreamResponse:
        handler = admin.match(request)
        if handler is not None:
            return await handler(request)
        return await request.app[HANDLER].handle(request)

    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app
