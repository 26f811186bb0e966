"""``python -m proxy``: load settings, run the aiohttp server on uvloop, stop cleanly on SIGTERM,
re-read the configuration on SIGHUP (with ``--workers``, each worker does)."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from proxy.core.config_error import shown
from proxy.core.settings import ConfigError, Settings, load

if TYPE_CHECKING:
    from proxy.core.node import Drain
    from proxy.web.guard import ConnectionGuard


def main(argv: Sequence[str] | None = None) -> int:
    def loader() -> Settings:
        return load(argv)

    try:
        settings = loader()
    except ConfigError as exc:
        print(f"rangeproxy: config error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        check_origins(settings)
        check_cache_dir(settings)
    except ConfigError as exc:
        print(f"rangeproxy: config error: {exc}", file=sys.stderr)
        return 2
    tls = None
    if settings.tls_cert:
        try:
            tls = tls_context(settings)
        except ConfigError as exc:
            print(f"rangeproxy: config error: {exc}", file=sys.stderr)
            return 2
    if settings.workers > 1:
        from dataclasses import replace

        from proxy.workers.supervisor import open_sockets, run_workers

        try:
            socks = open_sockets(settings.host, settings.port, settings.workers, settings.listen_backlog)
            tls_socks = (open_sockets(settings.host, settings.tls_port, settings.workers, settings.listen_backlog)
                         if tls else [])
        except OSError as exc:
            print(f"rangeproxy: cannot listen on {settings.host}: {exc}", file=sys.stderr)
            return 1
        settings = replace(settings, port=socks[0].getsockname()[1],
                           tls_port=tls_socks[0].getsockname()[1] if tls_socks else settings.tls_port)
        logging.getLogger("rangeproxy").info("rangeproxy: %d workers on http://%s:%d", settings.workers,
                                             settings.host, settings.port)
        final = settings

        def current() -> Settings:
            """A worker's settings as it starts: the file as it is now (a worker restarted after a
            reload runs what the others run), what only a restart changes as at start-up."""
            from proxy.app import RESTART_ONLY

            try:
                return replace(loader(), **{k: getattr(final, k) for k in RESTART_ONLY})
            except ConfigError:
                return final

        return run_workers(settings.workers, lambda index: serve(
            current(), index, [socks[index]], [tls_socks[index]] if tls_socks else [], tls, loader))
    from proxy.web.accepting import listen_sockets

    try:
        socks = listen_sockets(settings.host, settings.port, settings.listen_backlog)
        tls_socks = listen_sockets(settings.host, settings.tls_port, settings.listen_backlog) if tls else []
    except OSError as exc:
        print(f"rangeproxy: cannot listen on {settings.host}: {exc}", file=sys.stderr)
        return 1
    return serve(settings, 0, socks, tls_socks, tls, loader)


def check_origins(settings: Settings) -> None:
    """What only loading can tell (CA bundles, client certificates, credentials): a ConfigError
    naming the key before anything starts."""
    from proxy.cache.upstream import Upstream

    for origin in settings.origins:
        Upstream.for_origin(origin, settings.of_origin(origin))


def check_cache_dir(settings: Settings) -> None:
    """A cache directory on a read-only mount or a full disk stops start-up: diskcache cannot open
    its SQLite index there (it writes on open). One that becomes so later is served degraded
    (proxy.cache.writability)."""
    from proxy.cache.writability import start_fault

    reason = start_fault(settings.cache_dir)
    if reason is not None:
        raise ConfigError("cache_dir", f"{shown(settings.cache_dir)} cannot be written ({reason}): the cache "
                          "index cannot be opened there; make room, remount it read-write, or choose another directory")


def tls_context(settings: Settings) -> ssl.SSLContext:
    """The server side of HTTPS (TLS 1.2 and up), or a ConfigError naming the key at fault."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for key in ("tls_cert", "tls_key"):
        if not Path(getattr(settings, key)).is_file():
            raise ConfigError(key, f"must be a readable PEM file (got {getattr(settings, key)!r})")
    try:
        ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError("tls_cert", f"with tls_key, cannot be loaded: {exc}") from None
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def serve(settings: Settings, index: int, socks: Sequence[socket.socket], tls_socks: Sequence[socket.socket] = (),
          tls: ssl.SSLContext | None = None, loader: Callable[[], Settings] | None = None) -> int:
    """One server process (the only one, or worker ``index`` of ``settings.workers``) on its
    listening sockets (``tls_socks`` with ``tls``); SIGHUP re-reads the configuration with ``loader``."""
    import uvloop
    from aiohttp import web

    from proxy.web.accesslog import AccessLogger, access_logger_for
    from proxy.app import DRAIN, GUARD, build_app
    from proxy.workers.malloc import tune_malloc
    from proxy.workers.info import RUN_DIR_NAME, WorkerInfo

    tune_malloc()
    # Several workers publish their counters under the cache directory, so that any of
    # them can answer /metrics and /stats.json for the whole proxy.
    app = build_app(settings, worker=WorkerInfo(index=index, count=settings.workers,
                                                run_dir=Path(settings.cache_dir) / RUN_DIR_NAME))
    log = logging.getLogger("rangeproxy")
    if loader is not None:
        app.on_startup.append(lambda app: _reload_on_hangup(app, loader))
    log.info("rangeproxy%s on http://%s:%d -> %s (cache %s, slice %d bytes)",
             f" worker {index + 1}/{settings.workers}" if settings.workers > 1 else "",
             settings.host, settings.port,
             ", ".join(f"{o.name}: {' | '.join(o.upstreams)}" for o in settings.origins),
             settings.cache_dir, settings.slice_size)
    if tls is not None:
        log.info("rangeproxy%s on https://%s:%d", f" worker {index + 1}" if settings.workers > 1 else "",
                 settings.host, settings.tls_port)
    # SIGTERM/SIGINT are a graceful stop (Listeners.run): after SIGTERM, drain_period seconds of
    # draining first (serving on, /healthz 503); then stop accepting, let in-flight responses
    # finish for up to grace_period seconds, run cleanup (store closed), exit 0.
    runner_args: dict[str, Any] = {"shutdown_timeout": settings.grace_period, "access_log": access_logger_for(settings),
                                   "access_log_class": AccessLogger,
                                   "access_log_format": settings.access_log_format}
    listeners = Listeners(settings, [(sock, None) for sock in socks] + [(sock, tls) for sock in tls_socks], app[GUARD],
                          app[DRAIN])
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(listeners.run(app, runner_args))
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        loop.run_until_complete(listeners.stop())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return 0


async def _reload_on_hangup(app: Any, loader: Callable[[], Settings]) -> None:
    """SIGHUP: a valid configuration applies to new requests; an invalid one is refused, naming
    the key, and the running one stays."""
    from proxy.app import reload
    from proxy.workers.collector import refreeze

    log = logging.getLogger("rangeproxy")
    loop = asyncio.get_running_loop()
    busy = asyncio.Lock()

    async def hangup() -> None:
        async with busy:  # one reload at a time, in the order the signals came
            try:
                changed = await reload(app, loader())
            except ConfigError as exc:
                log.error("reload refused: config error: %s; the running configuration stays", exc)
                return
            except Exception:  # noqa: BLE001 - a failed reload must never stop the proxy
                log.exception("reload failed; the running configuration stays")
                return
            log.info("reloaded the configuration (origins changed: %s)", ", ".join(changed) or "none")
            # Frozen objects are never collected: the origins an earlier reload replaced (finished
            # by now) go back to the collector, the new ones are frozen with the rest.
            refreeze()

    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(hangup()))


class Listeners:
    """The listening sockets of one process (plain, and HTTPS with their TLS context), run as
    ``web.run_app`` runs its sites, each an ``AcceptingSite`` (every queued connection taken at
    each turn of the loop, with ``listen_backlog``), until a signal stops them: SIGINT at once,
    SIGTERM after ``drain`` (a second SIGTERM ends a drain early)."""

    def __init__(self, settings: Settings, socks: list[tuple[socket.socket, ssl.SSLContext | None]],
                 guard: ConnectionGuard, drain: Drain) -> None:
        self.settings = settings
        self.socks = socks
        self.guard = guard  # the app's: its counts are in the metrics
        self.drain = drain  # the app's: /healthz reads it
        self.runner: Any = None

    async def run(self, app: Any, runner_args: dict[str, Any]) -> None:
        from aiohttp import web

        from proxy.web.accepting import AcceptingSite
        from proxy.workers.collector import tune_collector

        guard = self.guard
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        log = logging.getLogger("rangeproxy")

        def terminate() -> None:
            if self.drain.begin(loop.time()):
                log.info("SIGTERM: draining for %g s (serving on, %s answers 503) before stopping",
                         self.drain.period, self.settings.health_path)
                loop.call_later(self.drain.period, drained)
            else:
                done.set()

        def drained() -> None:
            log.info("drained: stopping (in-flight responses get up to %g s)", self.settings.grace_period)
            done.set()

        # Before start-up, so that a signal during it (a worker the supervisor stops as it starts)
        # stops it once its sites are up, as one later does.
        loop.add_signal_handler(signal.SIGINT, done.set)
        loop.add_signal_handler(signal.SIGTERM, terminate)
        self.runner = runner = web.AppRunner(app, handle_signals=False, **runner_args, **guard.runner_args())
        await runner.setup()
        tune_collector()  # start-up is done: what it made stays (issue 12: GC pauses at 1,000 connections)
        for sock, tls in self.socks:
            await AcceptingSite(runner, sock, guard, ssl_context=tls, backlog=self.settings.listen_backlog).start()
        await done.wait()  # until SIGINT, or SIGTERM and its drain

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
