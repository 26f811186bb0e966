"""The watch page: ``/watch/<file>``, a small player for each video, with HTTP/2 push and 103 Early Hints.

``GET /watch/<file>`` (``<file>`` a regular file the app would serve at ``/<file>`` whose content type
is ``video/*``; anything else is 404) returns a small HTML page with ``<video src>`` on the file, by a
relative URL, so a page opened through the proxy plays through the proxy. Its style and script are
two static resources of their own, ``/_watch/player.css`` and ``/_watch/player.js`` (in
``appserver/static/``; nothing inline, nothing external), so the server can send them ahead:

- where ``scope["extensions"]`` has ``"http.response.early_hint"`` (Hypercorn on HTTP/2 and 3), a
  ``{"type": "http.response.early_hint", "links": [...]}`` goes out before the page's start: a
  ``103 Early Hints`` with ``Link: <...>; rel=preload; as=style|script``, which browsers act on;
- where it has ``"http.response.push"`` (Hypercorn on HTTP/2 and 3), after the page's
  ``http.response.start`` one ``{"type": "http.response.push", "path", "headers"}`` per resource:
  a PUSH_PROMISE, and the server runs the promised GET through the app. Browsers have dropped push
  (Chrome 106, Firefox 132): this is a protocol demonstration;
- where neither is offered (the project's runner, granian, any HTTP/1.1 request), nothing is tried.

Neither is sent for HEAD or a 304. Caching: the page is ``no-cache`` with a strong ETag (it says
whether the file exists, so it is revalidated); the resources' URLs carry ``?v=<hash of the
content>``, so with the current ``v`` they are ``immutable`` for a year, and ``no-cache`` otherwise.
"""

from __future__ import annotations

import functools
import hashlib
import html
import os
import stat
from dataclasses import dataclass
from typing import Callable
from urllib.parse import parse_qs, quote

from proxy.http import ranges as R
from .asgi import Message, Scope, Send

__all__ = ["ASSETS", "ASSETS_PREFIX", "EARLY_HINT", "PUSH", "WATCH_PREFIX", "Asset", "WatchPages", "page_html"]


WATCH_PREFIX = "/watch/"
ASSETS_PREFIX = "/_watch/"
PUSH = "http.response.push"
EARLY_HINT = "http.response.early_hint"
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
PAGE_CACHE = b"no-cache"
IMMUTABLE = b"public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    """One of the page's resources: its body, and how it is named, typed and preloaded."""

    name: str
    content_type: str
    destination: str  # the preload's ``as=``
    body: bytes

    @functools.cached_property
    def version(self) -> str:
        """The body's digest, computed once (every page view and asset request names it)."""
        return hashlib.sha256(self.body).hexdigest()[:12]

    @property
    def url_path(self) -> str:
        """The absolute path with its version: what the page links, the 103 names and a push promises."""
        return f"{ASSETS_PREFIX}{self.name}?v={self.version}"

    @property
    def etag(self) -> bytes:
        return f'"{self.version}"'.encode()

    @property
    def link(self) -> bytes:
        return f"<{self.url_path}>; rel=preload; as={self.destination}".encode()


def _load(name: str, content_type: str, destination: str) -> Asset:
    with open(os.path.join(STATIC_DIR, name), "rb") as fh:
        return Asset(name, content_type, destination, fh.read())


ASSETS: tuple[Asset, ...] = (
    _load("player.css", "text/css; charset=utf-8", "style"),
    _load("player.js", "text/javascript; charset=utf-8", "script"),
)


def page_html(name: str) -> bytes:
    """The page for the file served at ``/<name>``; every URL in it is relative to ``/watch/<name>``."""
    up = "../" * name.count("/") + "../"  # from /watch/<dirs...>/ back to /
    css, js = ASSETS
    title = html.escape(name)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="{html.escape(up + css.url_path[1:])}">
<script src="{html.escape(up + js.url_path[1:])}" defer></script></head>
<body><main><h1>{title}</h1>
<video src="{html.escape(up + quote(name))}" controls preload="metadata" playsinline></video>
<p>position <output id="time">0.00</output> s</p></main></body></html>
""".encode()


class WatchPages:
    """Serves ``/watch/<file>`` and ``/_watch/<resource>`` for :class:`appserver.app.MediaApp`.

    ``resolve(scope)`` is the app's own path check (the real path or None), ``content_type(path)``
    its type table: a page exists exactly for the videos a GET of ``/<file>`` would return.
    """

    def __init__(self, resolve: Callable[[Scope], str | None], content_type: Callable[[str], str]) -> None:
        self._resolve = resolve
        self._content_type = content_type
        self._assets = {a.name: a for a in ASSETS}

    @staticmethod
    def handles(path: str) -> bool:
        return path.startswith((WATCH_PREFIX, ASSETS_PREFIX))

    async def __call__(self, scope: Scope, send: Send) -> None:
        if scope["path"].startswith(ASSETS_PREFIX):
            await self._asset(scope, send)
        else:
            await self._page(scope, send)

    def _video_name(self, scope: Scope) -> str | None:
        """The file's name under the media root if ``/watch/<name>`` names a video, else None."""
        prefix = WATCH_PREFIX[:-1]
        raw = bytes(scope.get("raw_path") or scope["path"].encode("utf-8"))
        if not raw.startswith(prefix.encode() + b"/"):
            return None  # e.g. "/%77atch/...": not this route's spelling
        inner = {**scope, "path": scope["path"][len(prefix):], "raw_path": raw[len(prefix):]}
        real = self._resolve(inner)
        if real is None or not self._content_type(real).startswith("video/"):
            return None
        try:
            if not stat.S_ISREG(os.stat(real).st_mode):
                return None
        except OSError:
            return None
        return str(inner["path"])[1:]

    async def _page(self, scope: Scope, send: Send) -> None:
        name = self._video_name(scope)
        if name is None:
            await _respond(send, scope, 404, b"not found\n", b"text/plain; charset=utf-8", [])
            return
        body = page_html(name)
        etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'.encode()
        headers = [(b"cache-control", PAGE_CACHE), (b"etag", etag)]
        if _not_modified(scope, etag):
            await _respond(send, scope, 304, b"", None, headers)
            return
        extensions = scope.get("extensions") or {}
        ahead = scope["method"] == "GET"
        if ahead and EARLY_HINT in extensions:
            await send({"type": EARLY_HINT, "links": [a.link for a in ASSETS]})
        pushes = [
            {"type": PUSH, "path": a.url_path, "headers": [(b"accept", b"*/*")]}
            for a in ASSETS
        ] if ahead and PUSH in extensions else []
        await _respond(send, scope, 200, body, b"text/html; charset=utf-8", headers, pushes)

    async def _asset(self, scope: Scope, send: Send) -> None:
        asset = self._assets.get(scope["path"][len(ASSETS_PREFIX):])
        if asset is None:
            await _respond(send, scope, 404, b"not found\n", b"text/plain; charset=utf-8", [])
            return
        version = parse_qs(bytes(scope.get("query_string") or b"").decode("latin-1")).get("v")
        cache = IMMUTABLE if version == [asset.version] else PAGE_CACHE
        headers = [(b"cache-control", cache), (b"etag", asset.etag)]
        if _not_modified(scope, asset.etag):
            await _respond(send, scope, 304, b"", None, headers)
            return
        await _respond(send, scope, 200, asset.body, asset.content_type.encode(), headers)


def _not_modified(scope: Scope, etag: bytes) -> bool:
    values = [bytes(v).decode("latin-1") for k, v in scope.get("headers", ()) if bytes(k).lower() == b"if-none-match"]
    return bool(values) and R.etag_matches_weak(", ".join(values), etag.decode())


async def _respond(send: Send, scope: Scope, status: int, body: bytes, content_type: bytes | None,
                   headers: list[tuple[bytes, bytes]], after_start: list[Message] | None = None) -> None:
    """One whole response; ``after_start`` (push messages) go between its start and its body."""
    hdrs = list(headers)
    if content_type is not None:
        hdrs.append((b"content-type", content_type))
    if status != 304:
        hdrs.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    for message in after_start or ():
        await send(message)
    head = scope["method"] == "HEAD" or status == 304
    await send({"type": "http.response.body", "body": b"" if head else body, "more_body": False})
