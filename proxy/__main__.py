"""``python -m proxy``: load settings, run the aiohttp server on uvloop, stop cleanly on SIGTERM."""

from __future__ import annotations

import logging
import sys
from typing import Sequence

from proxy.config import ConfigError, Settings, load


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

        from proxy.supervisor import pick_port, run_workers

        # Every worker binds the same concrete port with SO_REUSEPORT.
        settings = replace(settings, port=pick_port(settings.host, settings.port))
        logging.getLogger("rangeproxy").info("rangeproxy: %d workers on http://%s:%d", settings.workers,
                                             settings.host, settings.port)
        final = settings
        return run_workers(settings.workers, lambda index: serve(final, index))
    return serve(settings, 0)


def serve(settings: Settings, index: int) -> int:
    """One server process (the only one, or worker ``index`` of ``settings.workers``)."""
    import uvloop
    from aiohttp import web

    from proxy.accesslog import AccessLogger, access_logger_for
    from proxy.app import build_app

    app = build_app(settings)
    log = logging.getLogger("rangeproxy")
    log.info("rangeproxy%s on http://%s:%d -> %s (cache %s, slice %d bytes)",
             f" worker {index + 1}/{settings.workers}" if settings.workers > 1 else "",
             settings.host, settings.port, settings.upstream, settings.cache_dir, settings.slice_size)
    # run_app turns SIGTERM/SIGINT into a graceful stop: stop accepting, let in-flight
    # responses finish for up to grace_period seconds, run cleanup (store closed), exit 0.
    web.run_app(app, host=settings.host, port=settings.port, shutdown_timeout=settings.grace_period,
                access_log=access_logger_for(settings), access_log_class=AccessLogger,
                access_log_format=getattr(settings, "access_log_format", "combined"),
                print=None, loop=uvloop.new_event_loop(), handle_signals=True,
                reuse_port=settings.workers > 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
