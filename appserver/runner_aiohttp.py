"""A small, strict ASGI 3 server on aiohttp's low-level server, run on uvloop.

What it adds over a generic ASGI server is the draft "offset and count" pathsend
extension (django/asgiref#469): it advertises

    scope["extensions"] = {"http.response.pathsend": {"ranges": True}}

and answers ``{"type": "http.response.pathsend", "path", "offset"?, "count"?}``
by sending exactly ``count`` bytes from ``offset`` with ``os.sendfile`` (zero-copy).

Why not aiohttp's ``FileResponse``/``loop.sendfile``: uvloop's loop has no native
``sendfile`` for its transports, so ``loop.sendfile`` there either raises
NotImplementedError or falls back to read-and-write. This module calls
``os.sendfile`` on the connection's socket itself:

1. ``await resp.prepare(request)``: a plain ``StreamResponse`` writes its headers
   to the transport at once (``_send_headers_immediately``); anything the kernel
   did not take stays in the transport's buffer, so we wait until that buffer is
   empty (lower the high-water mark to 0 and ``drain``) before the first sendfile.
2. ``os.sendfile(sock, fd, offset, n)`` in a loop, handling partial sends; on
   ``BlockingIOError`` wait for writability with ``loop.add_writer``, then retry.
   Both the sendfile and the ``add_writer`` use a ``dup()`` of the socket fd:
   asyncio and uvloop refuse ``add_writer`` on an fd a transport owns, and the
   transport may close its fd while we wait (client gone), after which that fd
   number could be reused by another connection.
3. ``await resp.write_eof()``. With ``Content-Length`` set and no chunking, the
   aiohttp writer writes nothing at EOF and keeps no byte count that it checks
   later, so bytes written behind its back do not confuse it (its own
   ``FileResponse._sendfile`` relies on the same thing); keep-alive works.
   ``output_size`` is bumped so access logs show the right size.

Any failure once headers are out (client gone, file shorter than promised,
send timeout) aborts the connection: the framing can no longer be trusted.

``stats`` counts which path served each pathsend, so tests can assert that the
zero-copy path really ran.

An ``Upgrade: websocket`` request gets an ASGI ``websocket`` scope instead,
carried out by ``appserver.runner_websocket`` (with the ``websocket.http.response``
denial-response extension advertised).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
import sys
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

from aiohttp import web

from appserver.asgi import App as ASGIApp
from appserver.runner_websocket import (WebSocketSession, asgi_headers, is_websocket_upgrade, until_done_or_gone,
                                         websocket_scope)
from proxy.web.sendfile import ConnectionGone, sendfile_on, wait_flushed

__all__ = ["ASGIServer", "SendStats", "serve", "run", "SENDFILE_MODES"]

log = logging.getLogger("appserver.aiohttp")

PATHSEND = "http.response.pathsend"
SENDFILE_MODES = ("os", "loop", "copy")
_COPY_CHUNK = 256 * 1024


@dataclass
class SendStats:
    """Which path served each ``http.response.pathsend``."""

    os_sendfile: int = 0  # responses sent with os.sendfile (zero-copy)
    loop_sendfile: int = 0  # responses sent with loop.sendfile (native)
    copy: int = 0  # responses sent by read-and-write (fallback or mode "copy")
    sendfile_bytes: int = 0  # bytes sent by either sendfile path
    copy_bytes: int = 0
    eagain_waits: int = 0  # times os.sendfile hit a full socket and waited
    aborted: int = 0  # pathsends that failed part-way (connection aborted)
    last_path: str | None = None  # "os" | "loop" | "copy"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _ClientGone(ConnectionResetError):
    """send() after the client disconnected (ASGI 2.4: an OSError subclass)."""


def _scope_path(raw_target: str) -> tuple[str, bytes, bytes]:
    """(decoded path, raw path bytes, query bytes) from an HTTP request-target."""
    target = raw_target
    if not target.startswith("/") and "://" in target:  # absolute-form
        parts = urlsplit(target)
        target = (parts.path or "/") + (("?" + parts.query) if parts.query else "")
    path_part, sep, query = target.partition("?")
    raw = path_part.encode("utf-8", "surrogateescape")
    # ASGI: `path` is percent-decoded UTF-8. Undecodable bytes survive as surrogates
    # so an app can refuse them; no dot-segment normalisation is done here.
    path = unquote(path_part, encoding="utf-8", errors="surrogateescape")
    return path, raw, query.encode("latin-1", "surrogateescape")


def _addr(info: Any) -> list[Any] | None:
    if isinstance(info, tuple) and len(info) >= 2:
        return [str(info[0]), int(info[1])]
    return None


class _Exchange:
    """One request/response: the ASGI receive() and send() callables."""

    def __init__(self, server: "ASGIServer", request: web.BaseRequest):
        self.server = server
        self.request = request
        self.start: dict[str, Any] | None = None
        self.resp: web.StreamResponse | None = None
        self.complete = False  # final body sent
        self.aborted = False
        self.body_done = False
        self.finished = asyncio.Event()  # response complete or app returned

    # ------------------------------------------------------------- receive

    async def receive(self) -> dict[str, Any]:
        if not self.body_done:
            content = self.request.content
            try:
                chunk = await content.readany()
            except (ConnectionError, asyncio.CancelledError):
                raise
            except Exception:  # payload error: treat as a disconnect
                self.body_done = True
                return {"type": "http.disconnect"}
            more = not content.at_eof()
            if not more:
                self.body_done = True
            return {"type": "http.request", "body": bytes(chunk), "more_body": more}
        # Body consumed: block until the response is done or the client goes away.
        await until_done_or_gone(self.request, self.finished)
        return {"type": "http.disconnect"}

    # ---------------------------------------------------------------- send

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.start is not None:
                raise RuntimeError("http.response.start sent twice")
            status = int(message["status"])
            if not 100 <= status <= 999:
                raise ValueError(f"bad status {status}")
            self.start = message
            return
        if self.start is None:
            raise RuntimeError(f"{kind} before http.response.start")
        if self.complete:
            raise RuntimeError(f"{kind} after the response was complete")
        if self.aborted:
            raise _ClientGone("connection aborted")
        if kind == "http.response.body":
            await self._body(message)
        elif kind == PATHSEND:
            await self._pathsend(message)
        else:
            raise RuntimeError(f"unsupported ASGI message {kind!r}")

    def _make_response(self, content_length: int | None = None, *, strict: bool = False) -> web.StreamResponse:
        """Build (not yet send) the response.

        ``content_length`` is used when the app declared none; with ``strict`` a
        different declared value is an error (pathsend: the count is exact).
        """
        assert self.start is not None
        headers = asgi_headers(self.start)
        declared = headers.getall("Content-Length", [])
        if content_length is not None:
            if not declared:
                headers["Content-Length"] = str(content_length)
            elif strict and declared != [str(content_length)]:
                raise ValueError(f"Content-Length {declared} but the body has {content_length} bytes")
        # aiohttp frames the body itself (Content-Length or chunked).
        headers.popall("Transfer-Encoding", None)
        return web.StreamResponse(status=int(self.start["status"]), headers=headers)

    async def _prepare(self, resp: web.StreamResponse) -> None:
        try:
            await resp.prepare(self.request)
        except ConnectionError as exc:
            self._abort()
            raise _ClientGone(str(exc)) from exc

    async def _body(self, message: dict[str, Any]) -> None:
        body = message.get("body", b"")
        more = bool(message.get("more_body", False))
        resp = self.resp
        try:
            if resp is None:
                # A single-message body gets a Content-Length if the app gave none.
                head_only = self.request.method == "HEAD"
                resp = self._make_response(None if more or head_only else len(body))
                self.resp = resp
                await self._prepare(resp)
            if body:
                await resp.write(body)  # drains when aiohttp's buffer is over its limit
            if not more:
                await resp.write_eof()
                self._done()
        except ConnectionError as exc:
            self._abort()
            raise _ClientGone(str(exc)) from exc

    async def _pathsend(self, message: dict[str, Any]) -> None:
        if self.resp is not None:
            raise RuntimeError("http.response.pathsend after http.response.body")
        path = message["path"]
        if not os.path.isabs(path):
            raise ValueError("pathsend path must be absolute")
        offset = message.get("offset")
        count = message.get("count")
        ranges_ok = self.server.extensions.get(PATHSEND, {}).get("ranges") is True
        if (offset is not None or count is not None) and not ranges_ok:
            raise RuntimeError("pathsend offset/count used but not advertised")
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ValueError("pathsend path is not a regular file")
            size = st.st_size
            offset = 0 if offset is None else int(offset)
            count = size - offset if count is None else int(count)
            if offset < 0 or count < 0 or offset + count > size:
                raise ValueError(f"pathsend span {offset}+{count} outside a {size}-byte file")
            head_only = self.request.method == "HEAD"
            resp = self._make_response(None if head_only else count, strict=True)
            self.resp = resp
            await self._prepare(resp)
            if head_only or count == 0 or resp.status in (204, 304) or resp.status < 200:
                await resp.write_eof()
                self._done()
                return
            try:
                await self.server._send_file(self.request, resp, fd, offset, count)
            except BaseException:
                self.server.stats.aborted += 1
                self._abort()
                raise
            await resp.write_eof()
            self._done()
        finally:
            os.close(fd)

    def _done(self) -> None:
        self.complete = True
        self.finished.set()

    def _abort(self) -> None:
        self.aborted = True
        self.finished.set()
        transport = self.request.transport
        if transport is not None:
            transport.abort()


class ASGIServer:
    """Serve an ASGI 3 app over HTTP/1.1 with aiohttp's low-level server."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sendfile_mode: str = "os",
        send_timeout: float = 60.0,
        lifespan: str = "auto",
        access_log: bool = False,
        shutdown_timeout: float = 5.0,
    ):
        if sendfile_mode not in SENDFILE_MODES:
            raise ValueError(f"sendfile_mode must be one of {SENDFILE_MODES}")
        if lifespan not in ("auto", "on", "off"):
            raise ValueError("lifespan must be auto, on or off")
        self.app = app
        self.host = host
        self.port = port
        self.sendfile_mode = sendfile_mode
        self.send_timeout = send_timeout
        self.lifespan = lifespan
        self.access_log = access_log
        self.shutdown_timeout = shutdown_timeout
        self.extensions: dict[str, Any] = {PATHSEND: {"ranges": True}}
        self.stats = SendStats()
        self.state: dict[str, Any] = {}
        self._runner: web.ServerRunner | None = None
        self._lifespan_task: asyncio.Task | None = None
        self._lifespan_queue: asyncio.Queue | None = None
        self._lifespan_events: dict[str, asyncio.Future] = {}
        self._lifespan_supported = False
        self.addresses: list[Any] = []

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self.lifespan != "off":
            await self._lifespan_startup()
        kwargs: dict[str, Any] = {}
        if not self.access_log:
            kwargs["access_log"] = None
        server = web.Server(self._handle, **kwargs)
        self._runner = web.ServerRunner(server, shutdown_timeout=self.shutdown_timeout)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.addresses = list(self._runner.addresses)

    @property
    def port_bound(self) -> int:
        return int(self.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._lifespan_supported:
            await self._lifespan_shutdown()

    async def __aenter__(self) -> "ASGIServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # ------------------------------------------------------------- lifespan

    async def _lifespan_startup(self) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        self._lifespan_queue = queue
        events = self._lifespan_events = {
            "startup": loop.create_future(),
            "shutdown": loop.create_future(),
        }

        async def send(message: dict[str, Any]) -> None:
            kind = message["type"]
            for phase in ("startup", "shutdown"):
                if kind == f"lifespan.{phase}.complete" and not events[phase].done():
                    events[phase].set_result(None)
                elif kind == f"lifespan.{phase}.failed" and not events[phase].done():
                    events[phase].set_exception(RuntimeError(f"lifespan {phase} failed: {message.get('message', '')}"))

        async def run() -> None:
            scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.4"}, "state": self.state}
            try:
                await self.app(scope, queue.get, send)
            except BaseException as exc:
                if not events["startup"].done():
                    # The app does not do lifespan: that is allowed unless "on".
                    events["startup"].set_exception(exc if self.lifespan == "on" else _NoLifespan())
                    return
                log.exception("lifespan task failed")
            finally:
                for fut in events.values():
                    if not fut.done():
                        fut.set_exception(_NoLifespan())
                        fut.exception()  # nobody may await it (no shutdown without startup)

        self._lifespan_task = asyncio.create_task(run())
        await queue.put({"type": "lifespan.startup"})
        try:
            await events["startup"]
        except _NoLifespan:
            return
        self._lifespan_supported = True

    async def _lifespan_shutdown(self) -> None:
        assert self._lifespan_queue is not None
        await self._lifespan_queue.put({"type": "lifespan.shutdown"})
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._lifespan_events["shutdown"], self.shutdown_timeout)
        if self._lifespan_task is not None:
            self._lifespan_task.cancel()
            with contextlib.suppress(BaseException):
                await self._lifespan_task

    # -------------------------------------------------------------- requests

    def _scope(self, request: web.BaseRequest) -> dict[str, Any]:
        path, raw_path, query = _scope_path(request.raw_path)
        transport = request.transport
        peer = sock = None
        if transport is not None:
            peer = transport.get_extra_info("peername")
            sock = transport.get_extra_info("sockname")
        version = request.version
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": f"{version.major}.{version.minor}",
            "method": request.method,
            "scheme": "https" if request.secure else "http",
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": [(bytes(n).lower(), bytes(v)) for n, v in request.raw_headers],
            "client": _addr(peer),
            "server": _addr(sock),
            "extensions": {k: dict(v) for k, v in self.extensions.items()},
            "state": dict(self.state),
        }

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if is_websocket_upgrade(request):
            return await WebSocketSession(request).run(self.app, websocket_scope(self._scope(request), request))
        ex = _Exchange(self, request)
        try:
            await self.app(self._scope(request), ex.receive, ex.send)
        except Exception as exc:
            if ex.resp is None and not ex.aborted:
                log.exception("ASGI app failed before responding")
                ex.finished.set()
                return web.Response(status=500, text="internal server error\n")
            if not isinstance(exc, ConnectionError):
                log.exception("ASGI app failed after the response started")
            ex._abort()
        finally:
            ex.finished.set()
        if ex.resp is None:
            if ex.aborted:
                raise ConnectionResetError("client gone before the response started")
            log.error("ASGI app returned without a response")
            return web.Response(status=500, text="internal server error\n")
        if not ex.complete:
            # Response started but never finished: the framing is broken.
            ex._abort()
        return ex.resp

    # -------------------------------------------------------------- sendfile

    async def _send_file(
        self, request: web.BaseRequest, resp: web.StreamResponse, fd: int, offset: int, count: int
    ) -> None:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise _ClientGone("connection lost")
        writer = request._payload_writer  # the writer resp.prepare() wrote headers to
        mode = self.sendfile_mode
        if mode == "os":
            sock = transport.get_extra_info("socket")
            if sock is None or transport.get_extra_info("sslcontext") is not None:
                mode = "copy"  # TLS or no socket: no zero-copy possible
        if mode == "os":
            await _wait_flushed(transport, writer)
            if transport.is_closing():
                raise _ClientGone("connection lost")
            await self._os_sendfile(transport, sock, fd, offset, count)
            self.stats.os_sendfile += 1
            self.stats.sendfile_bytes += count
        elif mode == "loop":
            await _wait_flushed(transport, writer)
            loop = asyncio.get_running_loop()
            with open(fd, "rb", closefd=False) as fobj:
                try:
                    await loop.sendfile(transport, fobj, offset, count, fallback=False)
                    self.stats.loop_sendfile += 1
                    self.stats.sendfile_bytes += count
                except (NotImplementedError, RuntimeError) as exc:
                    if transport.is_closing():
                        raise _ClientGone(str(exc)) from exc
                    mode = "copy"
                    log.debug("loop.sendfile unavailable (%s); copying", exc)
        if mode == "copy":
            await self._copy(resp, fd, offset, count)
            self.stats.copy += 1
            self.stats.copy_bytes += count
        self.stats.last_path = mode
        writer.output_size += count if mode != "copy" else 0

    async def _os_sendfile(self, transport: asyncio.Transport, sock: Any, fd: int, offset: int, count: int) -> None:
        """Send ``count`` bytes of ``fd`` from ``offset`` zero-copy (shared with the proxy)."""
        try:
            self.stats.eagain_waits += await sendfile_on(transport, sock, fd, offset, count, self.send_timeout)
        except ConnectionGone as exc:
            raise _ClientGone(str(exc)) from exc
        except EOFError as exc:
            raise RuntimeError(str(exc)) from exc

    async def _copy(self, resp: web.StreamResponse, fd: int, offset: int, count: int) -> None:
        end = offset + count
        while offset < end:
            data = await asyncio.to_thread(os.pread, fd, min(_COPY_CHUNK, end - offset), offset)
            if not data:
                raise RuntimeError("file ended before the promised count was sent")
            await resp.write(data)
            offset += len(data)


class _NoLifespan(Exception):
    pass


async def _wait_flushed(transport: asyncio.Transport, writer: Any) -> None:
    try:
        await wait_flushed(transport, writer)
    except ConnectionGone as exc:
        raise _ClientGone(str(exc)) from exc


# ------------------------------------------------------------------ entry points


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        log.warning("uvloop not installed; using the asyncio loop")
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def serve(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[ASGIServer], None] | None = None,
    **options: Any,
) -> None:
    """Run until SIGTERM/SIGINT (or ``stop`` is set), then shut down gracefully."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    server = ASGIServer(app, host=host, port=port, **options)
    await server.start()
    try:
        for addr in server.addresses:
            log.info("appserver (aiohttp) listening on http://%s:%s", *addr[:2])
        if ready is not None:
            ready(server)
        await stop.wait()
    finally:
        await server.stop()
        for sig in installed:
            loop.remove_signal_handler(sig)


def run(app: ASGIApp, host: str, port: int, **options: Any) -> int:
    """Blocking entry point used by ``python -m appserver --server aiohttp``."""
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        runner.run(serve(app, host, port, **options))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: python -m appserver --server aiohttp")
