"""The aiohttp application: one engine (store + upstream session) per app, no globals."""

from __future__ import annotations

import logging
from typing import AsyncIterator

from aiohttp import web

from proxy.config import Settings
from proxy.engine import Engine
from proxy.handlers import ProxyHandler
from proxy.store import SliceStore
from proxy.upstream import Upstream

__all__ = ["build_app", "ENGINE", "SETTINGS"]

log = logging.getLogger("rangeproxy")
ENGINE = web.AppKey("engine", Engine)
SETTINGS = web.AppKey("settings", Settings)


def build_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=0)
    app[SETTINGS] = settings

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        store = SliceStore(settings.cache_dir, settings.cache_size, settings.store_threads)
        upstream = Upstream(settings.upstream, connections=settings.upstream_connections,
                            connect_timeout=settings.upstream_connect_timeout,
                            read_timeout=settings.upstream_read_timeout)
        await upstream.start()
        engine = Engine(settings, store, upstream)
        await engine.start()
        app[ENGINE] = engine
        handler = ProxyHandler(engine)
        app["handler"] = handler  # noqa: aiohttp warns on str keys; AppKey below is the typed route
        yield
        await engine.close()
        await upstream.close()
        store.close()

    app.cleanup_ctx.append(lifecycle)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def proxy(request: web.Request) -> web.StreamResponse:
        return await request.app["handler"].handle(request)

    app.router.add_route("GET", settings.health_path, healthz)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app
