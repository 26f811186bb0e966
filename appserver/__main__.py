"""The demo origin's command line (``python -m appserver``, the ``rangeproxy-origin`` script).

``python -m appserver [--config F] [--media-dir D] [--host H] [--port P] [--server aiohttp|granian]
[--cors-origin ORIGIN]``
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
                                  cors_origin=settings.cors_origin)

    from . import runner_aiohttp
    from .app import MediaApp

    app = MediaApp(settings.media_dir, cors_origin=settings.cors_origin)
    return runner_aiohttp.run(app, settings.host, settings.port)


if __name__ == "__main__":
    sys.exit(main())
