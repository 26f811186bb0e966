"""The QUIC side: one :class:`H3ServerProtocol` per connection turns aioquic's H3 events into ASGI
scopes (:mod:`.http`, :mod:`.webtransport`); :func:`run` serves an app on UDP until SIGTERM/SIGINT,
with a minimal lifespan (startup before listening, shutdown after)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from typing import Any, Union
from urllib.parse import unquote

from aioquic.asyncio import QuicConnectionProtocol, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import (
    DatagramReceived,
    DataReceived,
    H3Event,
    HeadersReceived,
    WebTransportStreamDataReceived,
)
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import (
    ConnectionTerminated,
    ProtocolNegotiated,
    QuicEvent,
    StopSendingReceived,
    StreamReset,
)

from .http import App, HttpRequestHandler, Message
from .pacing import Pacer
from .webtransport import WebTransportHandler

__all__ = ["H3ServerProtocol", "make_configuration", "run", "serve_h3"]

log = logging.getLogger("appserver.h3")

Handler = Union[HttpRequestHandler, WebTransportHandler]
ASGI = {"version": "3.0", "spec_version": "2.4"}
MAX_DATAGRAM_FRAME_SIZE = 65536


def make_configuration(certfile: str, keyfile: str) -> QuicConfiguration:
    config = QuicConfiguration(alpn_protocols=H3_ALPN, is_client=False,
                               max_datagram_frame_size=MAX_DATAGRAM_FRAME_SIZE)
    config.load_cert_chain(certfile, keyfile)
    return config


class H3ServerProtocol(QuicConnectionProtocol):
    """One QUIC connection: H3 request streams and WebTransport sessions."""

    def __init__(self, *args: Any, app: App, server_addr: tuple[str, int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._app = app
        self._server_addr = server_addr
        self._http: H3Connection | None = None
        self._handlers: dict[int, Handler] = {}  # request stream or session id -> handler
        self._stream_session: dict[int, int] = {}  # WebTransport stream -> its session id
        self._pacer = Pacer(self._quic)
        self._tasks: set[asyncio.Task[None]] = set()

    def transmit(self) -> None:
        super().transmit()
        self._pacer.poke()  # ACKs were just processed, or a timer ran: senders may go on

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated):
            if event.alpn_protocol in H3_ALPN:
                self._http = H3Connection(self._quic, enable_webtransport=True)
        elif isinstance(event, ConnectionTerminated):
            self._pacer.close()
            for handler in self._handlers.values():
                if isinstance(handler, WebTransportHandler):
                    handler.disconnected(connection_lost=True)
                else:
                    handler.disconnected()
            self._handlers.clear()
            return
        elif isinstance(event, (StreamReset, StopSendingReceived)):
            self._reset_received(event)
        if self._http is not None:
            for h3_event in self._http.handle_event(event):
                self._h3_event_received(h3_event)

    def _reset_received(self, event: StreamReset | StopSendingReceived) -> None:
        sid = event.stream_id
        session = self._handlers.get(self._stream_session.get(sid, -1))
        if isinstance(session, WebTransportHandler):
            if isinstance(event, StreamReset):
                session.stream_reset(sid, event.error_code)
            else:
                session.stream_stop(sid, event.error_code)
            self._pacer.poke()
            return
        handler = self._handlers.get(sid)
        if handler is not None:
            handler.disconnected()
            if isinstance(handler, HttpRequestHandler):
                self._handlers.pop(sid, None)
        self._pacer.poke()

    def _h3_event_received(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            handler = self._handlers.get(event.stream_id)
            if handler is None:
                self._start(event)
            elif isinstance(handler, HttpRequestHandler):
                handler.headers_received(event.stream_ended)
        elif isinstance(event, DataReceived):
            handler = self._handlers.get(event.stream_id)
            if isinstance(handler, HttpRequestHandler):
                handler.data_received(event.data, event.stream_ended)
            elif isinstance(handler, WebTransportHandler):
                handler.session_data(event.stream_ended)
        elif isinstance(event, WebTransportStreamDataReceived):
            self._stream_session[event.stream_id] = event.session_id
            session = self._handlers.get(event.session_id)
            if isinstance(session, WebTransportHandler):
                session.event_received(event)
            elif self._http is not None:  # no such session: refuse the stream
                with contextlib.suppress(Exception):
                    self._quic.stop_stream(event.stream_id, 0)
                    if event.stream_id & 0x2 == 0:
                        self._quic.reset_stream(event.stream_id, 0)
        elif isinstance(event, DatagramReceived):
            session = self._handlers.get(event.stream_id)
            if isinstance(session, WebTransportHandler):
                session.event_received(event)

    def _scope(self, event: HeadersReceived) -> tuple[dict[str, Any], str, str | None]:
        headers: list[tuple[bytes, bytes]] = []
        method, raw_path, protocol = "", b"", None
        for name, value in event.headers:
            if name == b":authority":
                headers.append((b"host", value))
            elif name == b":method":
                method = value.decode("latin-1")
            elif name == b":path":
                raw_path = value
            elif name == b":protocol":
                protocol = value.decode("latin-1")
            elif not name.startswith(b":"):
                headers.append((name, value))
        path_bytes, _, query = raw_path.partition(b"?")
        addr = self._quic._network_paths[0].addr
        scope: dict[str, Any] = {
            "asgi": ASGI, "http_version": "3", "method": method, "scheme": "https",
            "path": unquote(path_bytes.decode("latin-1"), errors="surrogateescape"),
            "raw_path": path_bytes, "query_string": query, "root_path": "", "headers": headers,
            "client": (addr[0], addr[1]), "server": self._server_addr,
        }
        return scope, method, protocol

    def _start(self, event: HeadersReceived) -> None:
        assert self._http is not None
        scope, method, protocol = self._scope(event)
        handler: Handler
        if method == "CONNECT" and protocol == "webtransport":
            scope["type"] = "webtransport"
            handler = WebTransportHandler(self._http, self._pacer, scope, event.stream_id, self.transmit)
        else:
            # No pathsend: the app then streams files in chunks, each send paced (see .pacing).
            scope.update(type="http", extensions={})
            handler = HttpRequestHandler(self._http, self._pacer, scope, event.stream_id, self.transmit,
                                         event.stream_ended)
        self._handlers[event.stream_id] = handler
        task = asyncio.ensure_future(self._run(handler))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, handler: Handler) -> None:
        try:
            await handler.run_asgi(self._app)
        finally:
            if isinstance(handler, HttpRequestHandler) and self._handlers.get(handler.stream_id) is handler:
                del self._handlers[handler.stream_id]


async def serve_h3(app: App, host: str, port: int, configuration: QuicConfiguration,
                   stop: asyncio.Event) -> None:
    """Listen on UDP ``host:port`` until ``stop`` is set."""
    factory = functools.partial(H3ServerProtocol, app=app, server_addr=(host, port))
    server = await serve(host, port, configuration=configuration, create_protocol=factory)
    try:
        log.info("appserver (h3) listening on https://%s:%s (UDP, HTTP/3 + WebTransport)", host, port)
        await stop.wait()
    finally:
        server.close()


class _Lifespan:
    """Startup/shutdown for the app, as the other runners do (the app closes its feed on shutdown)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.outbox: asyncio.Queue[Message] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _send(self, message: Message) -> None:
        await self.outbox.put(message)

    async def phase(self, name: str) -> None:
        if self.task is None:
            scope = {"type": "lifespan", "asgi": ASGI, "state": {}}
            async def run() -> None:
                await self.app(scope, self.inbox.get, self._send)

            self.task = asyncio.create_task(run())
        await self.inbox.put({"type": f"lifespan.{name}"})
        getter = asyncio.ensure_future(self.outbox.get())
        done, _ = await asyncio.wait({getter, self.task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            raise RuntimeError(f"lifespan {name} did not complete")
        reply = getter.result()
        if reply["type"] != f"lifespan.{name}.complete":
            raise RuntimeError(f"lifespan {name} failed: {reply.get('message', '')}")


async def _main(app: App, host: str, port: int, certfile: str, keyfile: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    lifespan = _Lifespan(app)
    await lifespan.phase("startup")
    try:
        await serve_h3(app, host, port, make_configuration(certfile, keyfile), stop)
    finally:
        await lifespan.phase("shutdown")


def run(app: App, host: str, port: int, *, certfile: str, keyfile: str) -> int:
    """Blocking entry point used by ``python -m appserver --server h3``."""
    asyncio.run(_main(app, host, port, certfile, keyfile))
    return 0
