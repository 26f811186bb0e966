"""The demo origin's command line (``python -m appserver``, the ``rangeproxy-origin`` script).

``python -m appserver [--config F] [--media-dir D] [--host H] [--port P] [--server aiohttp|granian|hypercorn|h3]
[--cors-origin ORIGIN] [--events-token TOKEN] [--certfile C --keyfile K]``

``--server h3`` is the HTTP/3 + WebTransport prototype (:mod:`appserver.h3`) on UDP ``host:port``.
"""

from __future__ import annotations

import logging
import sys
from typing import Sequence

from .config import parse_args


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.server == "granian":
        from . import runner_granian

        return runner_granian.run(settings.media_dir, settings.host, settings.port,
                                  cors_origin=settings.cors_origin, events_token=settings.events_token)

    from .app import MediaApp

    app = MediaApp(settings.media_dir, cors_origin=settings.cors_origin, events_token=settings.events_token)
    if settings.server == "h3":
        from .h3 import server as h3_server

        assert settings.certfile is not None and settings.keyfile is not None  # config checks it
        return h3_server.run(app, settings.host, settings.port, certfile=settings.certfile,
                             keyfile=settings.keyfile)

    if settings.server == "hypercorn":
        from . import runner_hypercorn

        return runner_hypercorn.run(app, settings.host, settings.port, certfile=settings.certfile,
                                    keyfile=settings.keyfile)

    from . import runner_aiohttp

    return runner_aiohttp.run(app, settings.host, settings.port)


if __name__ == "__main__":
    sys.exit(main())
