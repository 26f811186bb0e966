"""``python -m proxy``: load settings, run the aiohttp server on uvloop, stop cleanly on SIGTERM."""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path
from typing import Sequence

from proxy.core.settings import ConfigError, Settings, load


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load(argv)
    except ConfigError as exc:
        print(f"rangeproxy: config error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.workers > 1:
        from dataclasses import replace

        from proxy.workers.supervisor import open_sockets, run_workers

        try:
            socks = open_sockets(settings.host, settings.port, settings.workers)
        except OSError as exc:
            print(f"rangeproxy: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
            return 1
        settings = replace(settings, port=socks[0].getsockname()[1])
        logging.getLogger("rangeproxy").info("rangeproxy: %d workers on http://%s:%d", settings.workers,
                                             settings.host, settings.port)
        final = settings
        return run_workers(settings.workers, lambda index: serve(final, index, socks[index]))
    return serve(settings, 0)


def serve(settings: Settings, index: int, sock: socket.socket | None = None) -> int:
    """One server process (the only one, or worker ``index`` of ``settings.workers``)."""
    import uvloop
    from aiohttp import web

    from proxy.web.accesslog import AccessLogger, access_logger_for
    from proxy.app import build_app
    from proxy.workers.malloc import tune_malloc
    from proxy.workers.info import RUN_DIR_NAME, WorkerInfo

    tune_malloc()
    # Several workers publish their counters under the cache directory, so that any of
    # them can answer /metrics and /stats.json for the whole proxy.
    app = build_app(settings, worker=WorkerInfo(index=index, count=settings.workers,
                                                run_dir=Path(settings.cache_dir) / RUN_DIR_NAME))
    log = logging.getLogger("rangeproxy")
    log.info("rangeproxy%s on http://%s:%d -> %s (cache %s, slice %d bytes)",
             f" worker {index + 1}/{settings.workers}" if settings.workers > 1 else "",
             settings.host, settings.port, settings.upstream, settings.cache_dir, settings.slice_size)
    # run_app turns SIGTERM/SIGINT into a graceful stop: stop accepting, let in-flight
    # responses finish for up to grace_period seconds, run cleanup (store closed), exit 0.
    where = {"sock": sock} if sock is not None else {"host": settings.host, "port": settings.port}
    web.run_app(app, **where, shutdown_timeout=settings.grace_period,
                access_log=access_logger_for(settings), access_log_class=AccessLogger,
                access_log_format=settings.access_log_format,
                print=None, loop=uvloop.new_event_loop(), handle_signals=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
