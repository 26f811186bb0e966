"""The aiohttp application: one engine (store + upstream session) per app, no globals.

One catch-all route: a request for an admin path (health, stats, metrics, purge;
see ``proxy.web.admin``) is answered by the proxy itself, anything else goes to the
origin that takes it (``proxy.web.sites``: by Host and path) through the slice cache.
Each app has its own metrics registry and stats; ``reload`` applies a new configuration.

With several worker processes (``worker.count`` > 1) each app publishes its state once a
second for the others and answers ``/metrics`` and ``/stats.json`` for the whole proxy
(see ``proxy.workers.peers``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import AsyncIterator

from aiohttp import web

from proxy.web.admin import Admin
from proxy.core.node import NODE_FIELD, Drain
from proxy.core.settings import Settings
from proxy.cache.engines import EngineSet
from proxy.web.feeds import OriginFeeds
from proxy.web.sites import Sites
from proxy.web.guard import REFUSALS, ConnectionGuard
from proxy.web.sending import ResponseInfo
from proxy.observe.metrics import Metrics, status_class
from proxy.workers.peers import Peers
from proxy.observe.stats import Stats, timings
from proxy.cache.store import SliceStore
from proxy.cache.scrubber import ScrubCounts, Scrubber
from proxy.workers.info import WorkerInfo

__all__ = ["build_app", "reload", "SITES", "SETTINGS", "METRICS", "DRAIN"]

log = logging.getLogger("rangeproxy")
SITES = web.AppKey("sites", Sites)
SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
GUARD = web.AppKey("guard", ConnectionGuard)
DRAIN = web.AppKey("drain", Drain)  # begun by SIGTERM (proxy.__main__), read by /healthz


async def _sample_every_second(stats: Stats, peers: Peers | None) -> None:
    """The per-second samples behind the charts and the last-minute rates (then, with several
    workers, this worker's state published for the others)."""
    loop = asyncio.get_running_loop()
    while True:
        now = loop.time()
        await asyncio.sleep(1.0 - (now % 1.0))
        stats.tick()
        if peers is not None:
            await peers.publish_or_log()


# Settings a reload cannot change in a running process (listening, stopping, the node's name, the
# cache directory and its size, the workers, the admin paths and token, logging): a reload that changes them says so
# and keeps them; the origins and everything an origin may set for itself do change.
RESTART_ONLY = ("host", "port", "tls_cert", "tls_key", "tls_port", "workers", "listen_backlog", "header_timeout",
                "keepalive_timeout", "max_connections", "cache_dir", "cache_size",
                "store_threads", "scrub_rate", "fill_memory", "grace_period", "drain_period", "node_name", "log_level",
                "access_log", "access_log_format", "admin_token", "protect_stats", "stats_path", "metrics_path",
                "health_path", "purge_prefix")


async def reload(app: web.Application, settings: Settings) -> list[str]:
    """Apply ``settings`` to new requests (responses under way finish as they began); the names of
    the origins that changed. A ConfigError (a CA bundle, credentials) leaves the old ones."""
    sites = app[SITES]
    old = sites.settings
    assert old is not None
    kept = [k for k in RESTART_ONLY if getattr(old, k) != getattr(settings, k)]
    if kept:
        log.warning("reload: %s only change on a restart; keeping the running values", ", ".join(kept))
    return await sites.apply(replace(settings, **{k: getattr(old, k) for k in RESTART_ONLY}))


def build_app(settings: Settings, *, worker: WorkerInfo | None = None) -> web.Application:
    """The app of one worker process (``worker``; default: the only one, index 0 of 1)."""
    worker = worker if worker is not None else WorkerInfo.single(settings)
    app = web.Application(client_max_size=0)
    app[SETTINGS] = settings
    drain = app[DRAIN] = Drain(settings.drain_period)
    node_name = settings.node_name

    async def name_the_node(request: web.Request, response: web.StreamResponse) -> None:
        # Every answer made here, proxied or the proxy's own, says which node of a fleet made it
        # (one the origin sent, from a proxy in front of it, is that hop's: replaced).
        response.headers[NODE_FIELD] = node_name

    app.on_response_prepare.append(name_the_node)

    def engine_or_none() -> EngineSet | None:
        sites = app.get(SITES)
        return sites.view if sites is not None else None

    stats = Stats(settings)
    scrub = ScrubCounts()  # stays 0 in a worker that does not scrub
    stats.scrub = scrub.as_dict
    guard = app[GUARD] = ConnectionGuard(settings.header_timeout, settings.keepalive_timeout, settings.max_connections)

    def purged(url: str) -> None:
        stats.forget_map(url)
        metrics.volume.updated = 0.0  # the next snapshot asks the store again

    # One subscription per origin feed for the whole proxy: the first worker's (proxy.web.feeds).
    feeds = OriginFeeds(worker.index == 0, purged)
    stats.feeds = lambda: {name: f.as_dict() for name, f in feeds.states.items()}

    def by_origin(what: str) -> dict[str, float]:
        return {name: float(getattr(f, what)) for name, f in feeds.states.items()}

    metrics = Metrics(settings, engine_or_none, extra=lambda: {
        "change_feed_connected": ("gauge", "1 while the origin's change feed is connected (proxy.cache.changefeed).",
                                  by_origin("connected"), "origin"),
        "change_feed_connects": ("counter", "Connections to the origin's change feed that were made.",
                                 by_origin("connects"), "origin"),
        "change_feed_failures": ("counter", "Tries to connect to the change feed that failed, and connections "
                                 "to it lost.", by_origin("failures"), "origin"),
        "change_feed_events": ("counter", "Changes the origin announced on its feed.", by_origin("events"), "origin"),
        "change_feed_purges": ("counter", "Cached objects purged because their origin announced a change.",
                               by_origin("purges"), "origin"),
        "purges": ("counter", "Objects purged through the admin API.", stats.purges),
        "client_connections": ("gauge", "Client connections open now (this worker).", guard.open),
        "client_connections_refused": ("counter", "Client connections closed by a limit: full (max_connections), "
                                       "header_timeout (408), version (not HTTP/1.x), malformed (a 4xx of "
                                       "the parser).", {r: guard.refused[r] for r in REFUSALS}),
        "cache_scrubbed_slices": ("counter", "Slice files read back by the scrubber and compared with their "
                                  "length and checksum.", scrub.slices),
        "cache_scrubbed_bytes": ("counter", "Bytes of slice files read back by the scrubber.", scrub.bytes),
        "cache_scrub_corrupt": ("counter", "Slice files the scrubber found damaged (wrong length or checksum) "
                                "and dropped.", scrub.corrupt),
        "cache_orphans_removed": ("counter", "Files of the cache directory no entry named (left by a process "
                                  "killed while writing one), removed by the scrubber's sweep.", scrub.orphans),
    })
    app[METRICS] = metrics
    peers = Peers(worker, stats, metrics, engine_or_none) if worker.count > 1 else None
    admin = Admin(settings, stats, metrics, lambda: app.get(SITES), peers=peers, drain=drain)

    def observe(request: web.Request, resp: web.StreamResponse | None, info: ResponseInfo) -> None:
        try:
            status = resp.status if resp is not None else 500
            sclass = status_class(status)
            duration, ttfb = timings(info)  # the handler has set info.finished (and first_byte)
            metrics.observe(request.method, status, info.cache_status, duration, ttfb, info.aborted, sclass)
            stats.observe(request.method, status, info, duration, ttfb, sclass)
        except Exception:  # noqa: BLE001 - accounting must never break a response
            log.exception("stats observer failed")

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        store = SliceStore(settings.cache_dir, settings.cache_size, settings.store_threads, load_in_background=True)
        sites = Sites(store, observe, feeds)
        await sites.apply(settings)
        app[SITES] = sites
        assert sites.view is not None
        stats.bind(sites.view)
        # One scrubber per cache directory: the first worker's (the supervisor restarts it as index 0).
        scrubber = Scrubber(store, settings.scrub_rate, scrub) if settings.scrub_rate and worker.index == 0 else None
        if scrubber is not None:
            scrubber.start()
        if peers is not None:
            await peers.publish_or_log()
        sampler = asyncio.get_running_loop().create_task(_sample_every_second(stats, peers))
        yield
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        if peers is not None:
            peers.publish_or_log_now()  # the final state (the others count it until this process is gone)
        if scrubber is not None:
            await scrubber.stop()
        await sites.close()
        store.close()

    app.cleanup_ctx.append(lifecycle)

    async def dispatch(request: web.Request) -> web.StreamResponse:
        handler = admin.match(request)
        if handler is not None:
            return await handler(request)
        return await request.app[SITES].handle(request)

    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app
