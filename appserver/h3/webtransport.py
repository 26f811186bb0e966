"""One WebTransport (draft-02) session run as an ASGI ``webtransport`` scope.

Messages to the app: ``webtransport.connect``; after the accept, ``webtransport.stream.receive``
``{stream, data, end_stream}``, ``webtransport.datagram.receive`` ``{data}``,
``webtransport.stream.reset`` ``{stream, code}`` (the peer reset its side of a stream),
``webtransport.stream.stop`` ``{stream, code}`` (the peer asked us to stop sending on it) and
``webtransport.disconnect`` (the session or the connection ended). From the app:
``webtransport.accept``, ``webtransport.close``, ``webtransport.stream.send`` ``{stream, data,
end_stream}`` (paced: it returns once the stream can take more), ``webtransport.stream.reset``
``{stream, code}`` and ``webtransport.datagram.send`` ``{data}``. The README has the reasons.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from email.utils import formatdate
from typing import Any, Callable

from aioquic.h3.connection import H3Connection
from aioquic.h3.events import DatagramReceived, H3Event, WebTransportStreamDataReceived

from .http import SERVER_NAME, App, Message
from .pacing import Pacer

__all__ = ["WebTransportHandler"]

log = logging.getLogger("appserver.h3")


def _client_uni(stream_id: int) -> bool:
    return stream_id & 0x3 == 0x2


class WebTransportHandler:
    """A session: the CONNECT stream, its streams and datagrams."""

    def __init__(self, connection: H3Connection, pacer: Pacer, scope: dict[str, Any], stream_id: int,
                 transmit: Callable[[], None]) -> None:
        self.connection = connection
        self.pacer = pacer
        self.scope = scope
        self.session_id = stream_id
        self.transmit = transmit
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        self.accepted = False
        self.closed = False  # our side: close sent (or the connection is gone)
        self.peer_closed = False  # their side: the client ended the session
        self.streams: set[int] = set()  # streams of this session seen so far
        self._backlog: deque[Message] = deque()  # what came before the accept

    # ------------------------------------------------------------- from the peer

    def _deliver(self, message: Message) -> None:
        if self.closed or self.peer_closed:
            return
        if self.accepted:
            self.queue.put_nowait(message)
        else:
            self._backlog.append(message)

    def event_received(self, event: H3Event) -> None:
        if isinstance(event, WebTransportStreamDataReceived):
            self.streams.add(event.stream_id)
            self._deliver({"type": "webtransport.stream.receive", "stream": event.stream_id,
                           "data": event.data, "end_stream": event.stream_ended})
        elif isinstance(event, DatagramReceived):
            self._deliver({"type": "webtransport.datagram.receive", "data": event.data})

    def session_data(self, stream_ended: bool) -> None:
        """Data on the CONNECT stream (draft-02 has no capsules); its end ends the session."""
        if stream_ended:
            self.disconnected()

    def stream_reset(self, stream_id: int, code: int) -> None:
        self._deliver({"type": "webtransport.stream.reset", "stream": stream_id, "code": code})

    def stream_stop(self, stream_id: int, code: int) -> None:
        self._deliver({"type": "webtransport.stream.stop", "stream": stream_id, "code": code})

    def disconnected(self, connection_lost: bool = False) -> None:
        """The client ended the session; the app's ``webtransport.close`` still ends ours (FIN)."""
        if not self.peer_closed:
            self.peer_closed = True
            if not self.closed:
                self.queue.put_nowait({"type": "webtransport.disconnect"})
        if connection_lost:
            self.closed = True
        self.pacer.poke()

    # ------------------------------------------------------------------ the app

    async def run_asgi(self, app: App) -> None:
        self.queue.put_nowait({"type": "webtransport.connect"})
        try:
            await app(self.scope, self.receive, self.send)
        except Exception:
            log.exception("ASGI app failed on WebTransport session %s", self.scope["path"])
        finally:
            if not self.closed:
                await self.send({"type": "webtransport.close"})

    async def receive(self) -> Message:
        return await self.queue.get()

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "webtransport.accept":
            if not self.accepted and not self.closed:
                self.accepted = True
                self.connection.send_headers(stream_id=self.session_id, headers=[
                    (b":status", b"200"),
                    (b"server", SERVER_NAME),
                    (b"date", formatdate(time.time(), usegmt=True).encode()),
                    (b"sec-webtransport-http3-draft", b"draft02"),
                ])
                while self._backlog:
                    self.queue.put_nowait(self._backlog.popleft())
        elif kind == "webtransport.close":
            if not self.closed:
                if self.accepted:
                    with contextlib.suppress(Exception):  # our side may have been reset meanwhile
                        self.connection.send_data(stream_id=self.session_id, data=b"", end_stream=True)
                else:
                    self.connection.send_headers(stream_id=self.session_id,
                                                 headers=[(b":status", b"403")], end_stream=True)
                self.closed = True
                self.pacer.poke()
        elif kind == "webtransport.datagram.send":
            self._check_open()
            self.connection.send_datagram(stream_id=self.session_id, data=bytes(message["data"]))
        elif kind == "webtransport.stream.send":
            await self._stream_send(message)
            return
        elif kind == "webtransport.stream.reset":
            self._check_open()
            self.connection._quic.reset_stream(int(message["stream"]), int(message.get("code", 0)))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} on a webtransport scope")
        self.transmit()

    def _check_open(self) -> None:
        if self.closed or self.peer_closed or not self.accepted:
            raise OSError("WebTransport session is not open")

    async def _stream_send(self, message: Message) -> None:
        self._check_open()
        stream_id = int(message["stream"])
        if stream_id not in self.streams or _client_uni(stream_id):
            raise RuntimeError(f"stream {stream_id} is not a sendable stream of this session")
        if self.pacer.backlog(stream_id) is None:
            raise OSError(f"WebTransport stream {stream_id} can no longer send")
        end = bool(message.get("end_stream", False))
        self.connection._quic.send_stream_data(stream_id, bytes(message.get("data", b"")), end_stream=end)
        self.transmit()
        await self.pacer.wait(stream_id)
        if self.closed or self.peer_closed:
            raise OSError("WebTransport session closed")
