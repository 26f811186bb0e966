"""The demo media origin: a raw ASGI 3 app (no framework) serving one directory.

Range semantics come from :mod:`proxy.http.ranges` (pure); this module only does the
HTTP plumbing and the file I/O:

- GET / HEAD; anything else is 405 with ``Allow: GET, HEAD`` (but see CORS below).
- ``/`` is a JSON catalogue ``[{name, size, type, etag}]``; ``/healthz`` is ``ok``.
- ``/watch/<video>`` is a player page, with its script and style under ``/_watch/``, pushed or
  announced by 103 Early Hints where the server offers that (:mod:`appserver.watch`).
- Strong ETag ``"<inode hex>-<size hex>-<mtime_ns hex>"``, ``Last-Modified``,
  ``Accept-Ranges: bytes``, Content-Type by extension.
- Preconditions in RFC 9110 §13.2.2 order: If-Match, If-Unmodified-Since (412),
  If-None-Match, If-Modified-Since (304), then If-Range.
- ``Range`` (and the ``?range=a-b`` query form) on GET: single 206, multipart
  206, 416 ``bytes */len``; malformed or refused ranges get 200. HEAD answers with
  the headers a GET without Range would get (RFC 9110 §14.2: GET is the only method
  with range handling; a server MUST ignore Range on others).
- Nothing outside the media root is ever served: ``..``/``.`` segments (decoded or
  percent-encoded, checked in both ``path`` and ``raw_path``), empty segments,
  NUL bytes, backslashes, symlinks resolving outside the root, non-regular files:
  all 404.

WebTransport (``--server h3`` only): ``/_ranges`` fetches byte ranges, one per stream
(:mod:`appserver.wt_ranges`); any other webtransport scope is not accepted.

WebSocket: ``/_events`` is the origin's change feed, off unless ``events_token`` is set
(:mod:`appserver.events`, :mod:`appserver.changes`); any other websocket scope is refused 404.

CORS, off by default: with ``MediaApp(..., cors_origin="*")`` (``--cors-origin``,
``cors_origin`` in the TOML file) every response also carries
``Access-Control-Allow-Origin: <cors_origin>``, ``Timing-Allow-Origin:
<cors_origin>`` and ``Access-Control-Expose-Headers`` naming the range fields a
script needs (``Accept-Ranges, Content-Range, Content-Length, Content-Encoding,
ETag, Last-Modified``: pdf.js reads ``Accept-Ranges`` to decide on range requests);
a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) gets 204 allowing
GET/HEAD and the range and conditional request fields. So a page on another origin
can play ``<video crossorigin>`` and fetch ranges. One fixed value, whatever the
request's ``Origin``: nothing varies, so no ``Vary: Origin``; no credentials.

Body transport, by what the server advertises in ``scope["extensions"]``:

- ``"http.response.pathsend": {"ranges": True}`` — a full 200 is a plain pathsend
  and a single range is ``{"type": "http.response.pathsend", "path", "offset",
  "count"}`` (the draft "offset and count" extension; django/asgiref#469).
- ``"http.response.pathsend": {}`` (granian) — plain pathsend for a full 200 only;
  a single range is streamed. ``offset``/``count`` are never sent to a server that
  did not advertise ``ranges``: granian 2.8 accepts and ignores them and sends the
  wrong bytes.
- no extension — everything is streamed with ``os.pread`` in chunks.
- multipart bodies are always streamed (pathsend is a single message).
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import os
import stat
from typing import Any, Iterable
from urllib.parse import parse_qs, unquote_to_bytes

from proxy.http import ranges as R
from proxy.http.dates import format_http_date, parse_http_date

from .asgi import Message, Receive, Scope, Send
from .events import EventsEndpoint
from .files import inside_root, make_etag, url_segments
from .watch import WatchPages
from .wt_ranges import WebTransportRanges

__all__ = [
    "MediaApp", "app_from_env", "factory", "CORS_ORIGIN_ENV", "EVENTS_TOKEN_ENV", "MEDIA_DIR_ENV", "make_etag",
]

log = logging.getLogger("appserver")


MEDIA_DIR_ENV = "RANGEPROXY_MEDIA_DIR"
CORS_ORIGIN_ENV = "RANGEPROXY_CORS_ORIGIN"
EVENTS_TOKEN_ENV = "RANGEPROXY_EVENTS_TOKEN"
PATHSEND = "http.response.pathsend"
DEFAULT_CHUNK_SIZE = 256 * 1024
_INLINE_READ = 64 * 1024  # reads up to this size are done on the loop, larger in a thread
ALLOW = b"GET, HEAD"
CORS_EXPOSE = b"Accept-Ranges, Content-Range, Content-Length, Content-Encoding, ETag, Last-Modified"
CORS_ALLOW_HEADERS = b"Range, If-Range, If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since"
CORS_MAX_AGE = b"600"

# The stdlib's built-in table only (MimeTypes() ignores /etc/mime.types), plus the
# media types this project cares about, so results do not depend on the machine.
_MIME = mimetypes.MimeTypes()
for _ext, _type in {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".m4a": "audio/mp4",
    ".m4s": "video/iso.segment",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".mov": "video/quicktime",
    ".ts": "video/mp2t",
    ".m3u8": "application/vnd.apple.mpegurl",
    ".mpd": "application/dash+xml",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".flac": "audio/flac",
    ".pdf": "application/pdf",
    ".json": "application/json",
}.items():
    _MIME.add_type(_type, _ext)


def content_type_for(name: str) -> str:
    ctype, _ = _MIME.guess_type(name, strict=False)
    return ctype or "application/octet-stream"


def _strong_match(if_match: str, etag: str) -> bool:
    value = if_match.strip(" \t")
    if value == "*":
        return True
    return any(t.strip(" \t") == etag for t in value.split(",") if not t.strip(" \t").startswith("W/"))


class _Headers:
    """Request headers from an ASGI scope: first value, or comma-joined for lists."""

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]):
        self._d: dict[str, list[str]] = {}
        for name, value in raw:
            self._d.setdefault(bytes(name).decode("latin-1").lower(), []).append(
                bytes(value).decode("latin-1")
            )

    def get(self, name: str) -> str | None:
        values = self._d.get(name)
        return None if values is None else values[0]

    def joined(self, name: str) -> str | None:
        values = self._d.get(name)
        return None if values is None else ", ".join(values)

    def count(self, name: str) -> int:
        return len(self._d.get(name, ()))


class _File:
    __slots__ = ("fd", "path", "st", "etag", "last_modified", "ctype")

    def __init__(self, fd: int, path: str, st: os.stat_result):
        self.fd = fd
        self.path = path
        self.st = st
        self.etag = make_etag(st)
        self.last_modified = format_http_date(st.st_mtime)
        self.ctype = content_type_for(path)

    @property
    def size(self) -> int:
        return self.st.st_size


class MediaApp:
    """ASGI 3 app serving the regular files under ``media_dir``."""

    def __init__(
        self,
        media_dir: str | os.PathLike[str],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_ranges: int = R.DEFAULT_MAX_RANGES,
        cors_origin: str | None = None,
        events_token: str | None = None,
    ):
        root = os.path.realpath(os.fspath(media_dir))
        if not os.path.isdir(root):
            raise ValueError(f"media_dir is not a directory: {media_dir}")
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.root = root
        self.chunk_size = chunk_size
        self.max_ranges = max_ranges
        self.cors_origin = cors_origin or None
        self.events = EventsEndpoint(root, events_token or None)
        self.watch = WatchPages(self._resolve, content_type_for)
        self.ranges = WebTransportRanges(self)
        self._cors: list[tuple[bytes, bytes]] = []
        if self.cors_origin is not None:
            origin = self.cors_origin.encode("latin-1")
            self._cors = [
                (b"access-control-allow-origin", origin),
                (b"access-control-expose-headers", CORS_EXPOSE),
                (b"timing-allow-origin", origin),
            ]

    # ------------------------------------------------------------------ entry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self.events(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "webtransport":
            await self.ranges(scope, receive, send)
        else:  # anything newer: not served
            raise RuntimeError(f"unsupported ASGI scope type {kind!r}")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.events.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._cors:
            send = self._with_cors(send)
        method = scope["method"]
        path = scope["path"]
        if method == "OPTIONS" and self._cors and _Headers(scope.get("headers", ())).get(
            "access-control-request-method"
        ) is not None:
            await _simple(send, 204, b"", method, [
                (b"access-control-allow-methods", ALLOW),
                (b"access-control-allow-headers", CORS_ALLOW_HEADERS),
                (b"access-control-max-age", CORS_MAX_AGE),
            ])
            return
        if method not in ("GET", "HEAD"):
            await _simple(send, 405, b"method not allowed\n", method, [(b"allow", ALLOW)])
            return
        if path == "/healthz":
            await _simple(send, 200, b"ok", method, [], b"text/plain; charset=utf-8")
            return
        if path == "/":
            await self._catalogue(send, method)
            return
        if self.watch.handles(path):
            await self.watch(scope, send)
            return
        f = self._open(scope)
        if f is None:
            await _simple(send, 404, b"not found\n", method)
            return
        try:
            await self._serve_file(scope, receive, send, f)
        finally:
            os.close(f.fd)

    def _with_cors(self, send: Send) -> Send:
        """``send`` with the CORS fields appended to the response start."""
        cors = self._cors

        async def send_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *cors]}
            await send(message)

        return send_cors

    # ---------------------------------------------------------------- lookups

    def _resolve(self, scope: Scope) -> str | None:
        parts = url_segments(scope["path"])
        if parts is None:
            return None
        raw = scope.get("raw_path")
        if raw:
            # The server already decoded `path`; check what the client really sent
            # too (and refuse undecodable bytes), so `%2e%2e` can never slip past a
            # server that normalises differently from us.
            target = bytes(raw).split(b"?", 1)[0]
            try:
                decoded = unquote_to_bytes(target).decode("utf-8")
            except UnicodeDecodeError:
                return None
            if url_segments(decoded) is None:
                return None
        real = os.path.realpath(os.path.join(self.root, *parts))
        if not inside_root(self.root, real):
            return None  # a symlink (or anything) leading out of the media root
        return real

    def _open(self, scope: Scope) -> _File | None:
        real = self._resolve(scope)
        if real is None:
            return None
        try:
            # O_NONBLOCK: opening a FIFO must not hang; it is refused below anyway.
            fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            return None
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        return _File(fd, real, st)

    def open_file(self, path: str, raw_path: bytes | None = None) -> _File | None:
        """A served file by URL path under the same rules as a GET (the caller closes ``.fd``)."""
        return self._open({"path": path, "raw_path": raw_path})

    def catalogue(self) -> list[dict[str, Any]]:
        """Every regular file under the root (symlinks only if they stay inside)."""
        items: list[dict[str, Any]] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(dirpath, d)))
            for fn in filenames:
                full = os.path.join(dirpath, fn)
                real = os.path.realpath(full)
                if os.path.commonpath((self.root, real)) != self.root:
                    continue
                try:
                    st = os.stat(real)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                name = os.path.relpath(full, self.root).replace(os.sep, "/")
                if url_segments("/" + name) is None:
                    continue  # e.g. a name with a backslash: it could not be fetched
                items.append(
                    {"name": name, "size": st.st_size, "type": content_type_for(fn), "etag": make_etag(st)}
                )
        items.sort(key=lambda i: i["name"])
        return items

    async def _catalogue(self, send: Send, method: str) -> None:
        items = await asyncio.to_thread(self.catalogue)
        body = json.dumps(items, separators=(",", ":")).encode()
        await _simple(send, 200, body, method, [(b"cache-control", b"no-cache")], b"application/json")

    # ---------------------------------------------------------------- serving

    async def _serve_file(self, scope: Scope, receive: Receive, send: Send, f: _File) -> None:
        method = scope["method"]
        h = _Headers(scope.get("headers", ()))
        validators = [
            (b"etag", f.etag.encode()),
            (b"last-modified", f.last_modified.encode()),
        ]
        base = [(b"accept-ranges", b"bytes"), *validators]

        # RFC 9110 §13.2.2 steps 1-4.
        if_match = h.joined("if-match")
        if if_match is not None:
            if not _strong_match(if_match, f.etag):
                await _simple(send, 412, b"", method, base)
                return
        else:
            ius = h.get("if-unmodified-since")
            if ius is not None and h.count("if-unmodified-since") == 1:
                when = parse_http_date(ius)
                if when is not None and int(f.st.st_mtime) > when:
                    await _simple(send, 412, b"", method, base)
                    return
        inm = h.joined("if-none-match")
        if inm is not None:
            if R.etag_matches_weak(inm, f.etag):
                await _not_modified(send, validators)
                return
        else:
            ims = h.get("if-modified-since")
            if ims is not None and h.count("if-modified-since") == 1:
                when = parse_http_date(ims)
                if when is not None and int(f.st.st_mtime) <= when:
                    await _not_modified(send, validators)
                    return

        outcome: R.RangeOutcome | R.Conflict = R.Ignore("no Range")
        if method == "GET":
            query = _query_range(scope.get("query_string", b""))
            selected = R.select_range_header(h.get("range"), query)
            if_range = h.get("if-range")
            if selected is not None and if_range is not None and not R.if_range_matches(
                if_range, f.etag, f.last_modified
            ):
                selected = None  # RFC 9110 §13.1.5: validator changed, send it all
            if isinstance(selected, R.Conflict):
                outcome = R.Unsatisfiable(f.size)
            else:
                outcome = R.evaluate(selected, f.size, max_ranges=self.max_ranges)

        if isinstance(outcome, R.Unsatisfiable):
            await _simple(
                send,
                416,
                b"",
                method,
                [*base, (b"content-range", R.format_unsatisfied(outcome.length).encode())],
            )
            return

        ext = (scope.get("extensions") or {}).get(PATHSEND)
        pathsend_ok = isinstance(ext, dict)
        ranges_ok = isinstance(ext, dict) and ext.get("ranges") is True

        if isinstance(outcome, R.Satisfiable) and len(outcome.spans) == 1:
            span = outcome.spans[0]
            await _start(
                send,
                206,
                [
                    *base,
                    (b"content-type", f.ctype.encode()),
                    (b"content-range", R.format_content_range(span, f.size).encode()),
                    (b"content-length", str(span.size).encode()),
                ],
            )
            if ranges_ok:
                await send(
                    {"type": PATHSEND, "path": f.path, "offset": span.start, "count": span.size}
                )
            else:
                await self._stream(f.fd, (span,), receive, send)
            return

        if isinstance(outcome, R.Satisfiable):
            mp = R.multipart(outcome.spans, f.size, f.ctype)
            await _start(
                send,
                206,
                [
                    *base,
                    (b"content-type", mp.content_type.encode()),
                    (b"content-length", str(mp.content_length).encode()),
                ],
            )
            await self._stream(f.fd, mp.pieces, receive, send)
            return

        # 200 with the whole representation (Range absent, ignored or refused).
        await _start(
            send,
            200,
            [*base, (b"content-type", f.ctype.encode()), (b"content-length", str(f.size).encode())],
        )
        if method == "HEAD" or f.size == 0:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif pathsend_ok:
            await send({"type": PATHSEND, "path": f.path})
        else:
            await self._stream(f.fd, (R.Span(0, f.size),), receive, send)

    async def _stream(
        self,
        fd: int,
        pieces: Iterable[bytes | R.Span],
        receive: Receive,
        send: Send,
    ) -> None:
        """Send framing bytes and file spans in order as ``http.response.body`` chunks.

        Stops quietly when the client goes away (``http.disconnect`` or an OSError
        from ``send``). A file that shrinks under us raises: the server must then
        close the connection, since the promised Content-Length cannot be met.
        """
        gone = asyncio.Event()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        watcher = asyncio.create_task(watch())
        chunk = self.chunk_size
        pending = b""  # framing bytes ride along with the next data chunk
        try:
            for piece in pieces:
                if isinstance(piece, bytes):
                    pending += piece
                    continue
                pos, end = piece
                while pos < end:
                    n = min(chunk, end - pos)
                    if n <= _INLINE_READ:
                        data = os.pread(fd, n, pos)
                        await asyncio.sleep(0)  # let the disconnect watcher run
                    else:
                        data = await asyncio.to_thread(os.pread, fd, n, pos)
                    if not data:
                        raise RuntimeError("file shrank while being sent")
                    pos += len(data)
                    if gone.is_set():
                        return
                    await send({"type": "http.response.body", "body": pending + data, "more_body": True})
                    pending = b""
            if gone.is_set():
                return
            await send({"type": "http.response.body", "body": pending, "more_body": False})
        except OSError:
            return  # ASGI 2.4: send() on a closed connection raises an OSError
        finally:
            watcher.cancel()
            try:
                await watcher
            except (asyncio.CancelledError, Exception):
                pass


def _query_range(query_string: bytes) -> str | None:
    if not query_string:
        return None
    values = parse_qs(bytes(query_string).decode("latin-1"), keep_blank_values=True).get("range")
    return values[0] if values else None


async def _start(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _simple(
    send: Send,
    status: int,
    body: bytes,
    method: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    content_type: bytes = b"text/plain; charset=utf-8",
) -> None:
    hdrs = list(headers or ())
    if body or status == 200:
        hdrs.append((b"content-type", content_type))
    if status != 204:  # RFC 9110 §8.6: no Content-Length in a 204
        hdrs.append((b"content-length", str(len(body)).encode()))
    await _start(send, status, hdrs)
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body, "more_body": False})


async def _not_modified(send: Send, validators: list[tuple[bytes, bytes]]) -> None:
    await _start(send, 304, list(validators))
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def app_from_env() -> MediaApp:
    """ASGI app factory for servers that import by name (granian ``--factory``).

    Reads the media directory from ``$RANGEPROXY_MEDIA_DIR``, the CORS origin
    (optional) from ``$RANGEPROXY_CORS_ORIGIN`` and the change feed's token (optional)
    from ``$RANGEPROXY_EVENTS_TOKEN``.
    """
    media_dir = os.environ.get(MEDIA_DIR_ENV)
    if not media_dir:
        raise RuntimeError(f"{MEDIA_DIR_ENV} is not set")
    return MediaApp(media_dir, cors_origin=os.environ.get(CORS_ORIGIN_ENV) or None,
                    events_token=os.environ.get(EVENTS_TOKEN_ENV) or None)


factory = app_from_env
