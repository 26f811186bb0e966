"""Headless Chromium for the browser tests: its flags, pdf.js from Debian, and a page server.

* :data:`CHROMIUM_ARGS` -- the flags Debian's ``chromium`` needs here (no sandbox, no GPU,
  no QUIC, nothing that phones home); the browser is driven by playwright with
  ``executable_path=require_tool("chromium")``. :data:`CHROMIUM_ARGS_QUIC` is the same with
  QUIC left on, for WebTransport (which runs over HTTP/3 only).
* :func:`require_pdfjs` -- the directory of Debian's ``libjs-pdf`` (``build/pdf.js``,
  ``build/pdf.worker.js``, ``web/standard_fonts/``), found with ``dpkg -L`` at run time.
* :class:`PageServer` -- a small aiohttp server on its own loopback port, so the pages it
  serves have an origin of their own (``http://127.0.0.1:<port>``), different from the
  proxy's: what they load through the proxy is cross-origin and subject to CORS.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Mapping

from aiohttp import web

from tests.support.tools import require_package_file

__all__ = ["CHROMIUM_ARGS", "CHROMIUM_ARGS_QUIC", "PageServer", "require_pdfjs"]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHROMIUM_ARGS_QUIC = [arg for arg in CHROMIUM_ARGS if arg != "--disable-quic"]


def require_pdfjs() -> Path:
    """The root of Debian's pdf.js (the directory holding ``build/`` and ``web/``); the test is
    skipped when ``libjs-pdf`` is missing (a failure under CI=true, see ``tests.support.tools``)."""
    return require_package_file("libjs-pdf", "/build/pdf.js").parent.parent


class PageServer:
    """Serves fixed HTML pages and static directories on ``127.0.0.1:<free port>``::

        async with PageServer({"/": html}, static={"/pdfjs": pdfjs_dir}) as pages:
            await page.goto(pages.url + "/?...")

    It sends no CORS headers of its own (it needs none: the page's scripts are same-origin).
    """

    def __init__(self, pages: Mapping[str, str], static: Mapping[str, Path] | None = None) -> None:
        self.pages = dict(pages)
        self.static = dict(static or {})
        self.requests: list[str] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> "PageServer":
        @web.middleware
        async def log(request: web.Request, handler):  # type: ignore[no-untyped-def]
            self.requests.append(request.path_qs)
            return await handler(request)

        app = web.Application(middlewares=[log])
        for path, html in self.pages.items():
            app.router.add_get(path, self._page(html))
        for prefix, directory in self.static.items():
            app.router.add_static(prefix, directory)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server  # the bound port: asyncio's server behind the site
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @staticmethod
    def _page(html: str):  # type: ignore[no-untyped-def]
        async def handler(request: web.Request) -> web.Response:
            return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})
        return handler
