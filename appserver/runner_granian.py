"""Run :class:`appserver.app.MediaApp` under granian (``--interface asgi``).

granian imports the app by name in its worker process, so the media directory
travels in ``$RANGEPROXY_MEDIA_DIR`` (the CORS origin, if any, in
``$RANGEPROXY_CORS_ORIGIN``; the change feed's token, if any, in ``$RANGEPROXY_EVENTS_TOKEN``) and the target is the factory
``appserver.app:app_from_env``. The equivalent command line is::

    RANGEPROXY_MEDIA_DIR=media granian --interface asgi --factory \\
        --host 127.0.0.1 --port 8081 --workers 1 appserver.app:app_from_env

granian 2.8 advertises ``scope["extensions"] == {"http.response.pathsend": {},
"websocket.http.response": {}}``: plain pathsend, no ``ranges``. So under
granian full 200s go out as pathsend and single ranges are streamed by the app.
(granian also accepts ``offset``/``count`` keys in a pathsend message, ignores
them and sends the whole file — which is why the app never sends them here.)
"""

from __future__ import annotations

import os
import sys

from .app import CORS_ORIGIN_ENV, EVENTS_TOKEN_ENV, MEDIA_DIR_ENV

__all__ = ["TARGET", "run", "command"]

TARGET = "appserver.app:app_from_env"


def command(host: str, port: int) -> list[str]:
    """The equivalent ``granian`` CLI invocation (for docs and debugging)."""
    return [
        sys.executable, "-m", "granian",
        "--interface", "asgi", "--factory", "--workers", "1",
        "--host", host, "--port", str(port), TARGET,
    ]  # fmt: skip


def run(media_dir: str, host: str, port: int, *, log_access: bool = False, cors_origin: str | None = None,
        events_token: str | None = None) -> int:
    """Serve until SIGTERM/SIGINT (granian handles the signals and exits 0)."""
    from granian import Granian
    from granian.constants import Interfaces, Loops

    os.environ[MEDIA_DIR_ENV] = os.path.abspath(media_dir)
    if cors_origin:
        os.environ[CORS_ORIGIN_ENV] = cors_origin
    else:
        os.environ.pop(CORS_ORIGIN_ENV, None)
    if events_token:
        os.environ[EVENTS_TOKEN_ENV] = events_token
    else:
        os.environ.pop(EVENTS_TOKEN_ENV, None)
    # The worker imports TARGET: make sure the project root is importable there
    # even when we were started from elsewhere with PYTHONPATH unset.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    pp = os.environ.get("PYTHONPATH", "")
    if root not in pp.split(os.pathsep):
        os.environ["PYTHONPATH"] = root + (os.pathsep + pp if pp else "")
    if root not in sys.path:
        sys.path.insert(0, root)
    server = Granian(
        TARGET,
        address=host,
        port=port,
        interface=Interfaces.ASGI,  # with lifespan
        workers=1,
        loop=Loops.auto,  # uvloop when installed
        factory=True,
        log_access=log_access,
    )
    server.serve()
    return 0
