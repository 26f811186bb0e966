"""A demo media origin: a raw ASGI app serving a directory with full Range support.

It exists to exercise the ASGI "pathsend with offset/count" extension (the draft
asgiref change "Add offset and count to Path Send"): a server that advertises
``scope["extensions"]["http.response.pathsend"] == {"ranges": True}`` lets the app
hand a byte span of a file to the server, which sends it zero-copy.

- :mod:`appserver.app` — the ASGI app (:class:`~appserver.app.MediaApp`).
- :mod:`appserver.runner_aiohttp` — a small ASGI server on aiohttp + uvloop that
  advertises ``{"ranges": True}`` and implements pathsend with ``os.sendfile``.
- :mod:`appserver.runner_granian` — the same app under granian (plain pathsend).
- :mod:`appserver.runner_hypercorn` — the same app under Hypercorn: HTTP/2 (h2c, TLS h2), with
  the server push and Early Hints extensions the watch pages (:mod:`appserver.watch`) use.
- :mod:`appserver.h3` — an HTTP/3 + WebTransport server prototype on aioquic (``--server h3``);
  :mod:`appserver.wt_ranges` is the app's WebTransport endpoint (byte ranges, one per stream).
- ``python -m appserver`` — the command line (:mod:`appserver.config`).
"""

__all__ = ["MediaApp", "app_from_env"]


def __getattr__(name: str):  # lazy: `python -m appserver --help` stays cheap
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(name)
