"""One HTTP/3 request stream run as an ASGI ``http`` scope (as in aioquic's example, plus
back-pressure, ``http.disconnect`` on a reset or a lost connection, and a 500 or a stream reset
when the app fails)."""

from __future__ import annotations

import asyncio
import logging
import time
from email.utils import formatdate
from typing import Any, Callable

from aioquic.h3.connection import ErrorCode, H3Connection

from ..asgi import App, Message
from .pacing import Pacer

__all__ = ["HttpRequestHandler", "SERVER_NAME"]

log = logging.getLogger("appserver.h3")

SERVER_NAME = b"rangeproxy-appserver-h3"


class HttpRequestHandler:
    """Request body in, response out, for one request stream."""

    def __init__(self, connection: H3Connection, pacer: Pacer, scope: dict[str, Any], stream_id: int,
                 transmit: Callable[[], None], stream_ended: bool) -> None:
        self.connection = connection
        self.pacer = pacer
        self.scope = scope
        self.stream_id = stream_id
        self.transmit = transmit
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        self.started = False
        self.finished = False
        self.gone = False
        if stream_ended:
            self.queue.put_nowait({"type": "http.request", "body": b"", "more_body": False})

    def data_received(self, data: bytes, stream_ended: bool) -> None:
        self.queue.put_nowait({"type": "http.request", "body": data, "more_body": not stream_ended})

    def headers_received(self, stream_ended: bool) -> None:  # trailers
        if stream_ended:
            self.queue.put_nowait({"type": "http.request", "body": b"", "more_body": False})

    def disconnected(self) -> None:
        """The peer reset the stream, asked us to stop sending, or the connection is gone."""
        if not self.gone:
            self.gone = True
            self.queue.put_nowait({"type": "http.disconnect"})

    async def run_asgi(self, app: App) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except Exception:
            log.exception("ASGI app failed on %s %s", self.scope["method"], self.scope["path"])
            if self.gone or self.finished:
                return
            if not self.started:
                await self.send({"type": "http.response.start", "status": 500,
                                 "headers": [(b"content-length", b"0")]})
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})
            else:  # the promised body cannot be completed: abort the stream
                self.connection._quic.reset_stream(self.stream_id, ErrorCode.H3_INTERNAL_ERROR)
                self.transmit()
        else:
            if not self.finished and not self.gone:
                log.error("ASGI app returned without completing the response to %s", self.scope["path"])
                self.connection._quic.reset_stream(self.stream_id, ErrorCode.H3_INTERNAL_ERROR)
                self.transmit()

    async def receive(self) -> Message:
        return await self.queue.get()

    async def send(self, message: Message) -> None:
        if self.gone:
            raise OSError("HTTP/3 stream closed by the peer")  # ASGI 2.4: send on a closed connection
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self.connection.send_headers(
                stream_id=self.stream_id,
                headers=[
                    (b":status", str(message["status"]).encode()),
                    (b"server", SERVER_NAME),
                    (b"date", formatdate(time.time(), usegmt=True).encode()),
                    *[(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", ())],
                ],
            )
        elif kind == "http.response.body":
            if not self.started or self.finished:
                raise RuntimeError("http.response.body out of order")
            more = bool(message.get("more_body", False))
            self.connection.send_data(stream_id=self.stream_id, data=bytes(message.get("body", b"")),
                                      end_stream=not more)
            self.finished = not more
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} on an http scope")
        self.transmit()
        await self.pacer.wait(self.stream_id)
        if self.pacer.backlog(self.stream_id) is None and not self.finished:
            self.disconnected()
            raise OSError("HTTP/3 stream can no longer send")
