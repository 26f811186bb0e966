"""Run :class:`appserver.app.MediaApp` under Hypercorn: HTTP/2 with server push and 103 Early Hints.

Hypercorn is here for what the project's runner (aiohttp has no HTTP/2 server) and granian do not
offer: on an HTTP/2 (or HTTP/3) request Hypercorn 0.18 advertises ``scope["extensions"]`` with
``"http.response.push": {}``, ``"http.response.early_hint": {}`` and ``"http.response.trailers": {}``
(on HTTP/1.1 none of them), and no pathsend: every body is streamed by the app. The watch page
(:mod:`appserver.watch`) uses the first two.

Plain TCP serves HTTP/1.1 and h2c with prior knowledge (``curl --http2-prior-knowledge``; Hypercorn
also takes the ``Upgrade: h2c`` dance). With ``certfile``/``keyfile`` the port is TLS only and ALPN
offers ``h2`` then ``http/1.1``. The app is served in this process (``hypercorn.asyncio.serve``, one
worker, uvloop when installed); SIGTERM/SIGINT shut it down gracefully and the exit status is 0.
The equivalent command line is::

    RANGEPROXY_MEDIA_DIR=media hypercorn --bind 127.0.0.1:8081 [--certfile C --keyfile K] \\
        appserver.app:app_from_env()
"""

from __future__ import annotations

import asyncio
import logging
import signal

from .app import MediaApp

__all__ = ["bind_address", "run"]


def bind_address(host: str, port: int) -> str:
    """Hypercorn's ``host:port`` form (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run(app: MediaApp, host: str, port: int, *, certfile: str | None = None, keyfile: str | None = None) -> int:
    """Serve until SIGTERM/SIGINT, then return 0."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [bind_address(host, port)]
    config.certfile = certfile
    config.keyfile = keyfile
    config.errorlog = logging.getLogger("hypercorn.error")  # "Running on ...", errors: our log; no access log
    config.graceful_timeout = 5.0

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # MediaApp's plain dict messages against Hypercorn's TypedDicts: same shapes, not the same type.
        await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio works too
        asyncio.run(main())
    else:
        uvloop.run(main())
    return 0
