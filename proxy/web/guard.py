"""Client connections held to limits: a whole request head within ``header_timeout``, idle ones
closed after ``keepalive_timeout``, at most ``max_connections`` open, HTTP/1.0 and 1.1 only.

aiohttp has only its keep-alive timer, which closes a connection that sent half a request head
after 75 s, and no cap on connections (issue 13: 3,000 half-sent heads were all held open).
:class:`ConnectionGuard` counts this process's connections and makes each one's protocol a
:class:`GuardedHandler`, aiohttp's own with a timer over the head being received.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from typing import Any, Callable

from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import Response, StreamResponse

__all__ = ["ConnectionGuard", "GuardedHandler", "REFUSALS"]

REFUSALS = ("full", "header_timeout", "version", "malformed")  # why a limit closed a connection

log = logging.getLogger("rangeproxy")


def _answer(status: str, text: str) -> bytes:
    """A whole response that ends the connection (written raw: the request is never handled)."""
    body = text.encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n").encode() + body


# RFC 9110 §15.5.9: no complete request within the time the server was prepared to wait.
TIMED_OUT = _answer("408 Request Timeout", "408 Request Timeout: the request head took too long\n")
# RFC 9110 §15.6.4 (with Retry-After, §10.2.3): refused at once, not queued.
FULL = _answer("503 Service Unavailable", "503 Service Unavailable: too many connections\n").replace(
    b"\r\nConnection: close", b"\r\nRetry-After: 1\r\nConnection: close", 1)
# RFC 9112 §2.3 / RFC 9110 §2.5: only HTTP/1.x messages are parsed here. A request line without
# a version (HTTP/0.9) would get a bare body with no status or fields: refused, as is any 0.x;
# a message claiming another major version gets 505 (§15.6.6).
OLD_VERSION = "400 Bad Request: HTTP/0.9 is not served; send HTTP/1.0 or 1.1\n"
OTHER_VERSION = "505 HTTP Version Not Supported: send HTTP/1.0 or 1.1\n"


class ConnectionGuard:
    """This process's client connections: how many are open, and the limits they are held to.

    ``refused`` counts what the limits turned away, by reason (``full``, ``header_timeout``,
    ``version``, ``malformed``), for the metrics.
    """

    __slots__ = ("header_timeout", "keepalive_timeout", "max_connections", "open", "refused")

    def __init__(self, header_timeout: float, keepalive_timeout: float, max_connections: int) -> None:
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.max_connections = max_connections
        self.open = 0  # connections whose protocol is made and not yet lost
        self.refused: Counter[str] = Counter()

    def runner_args(self) -> dict[str, Any]:
        """What aiohttp's runner is given: its keep-alive timer is the idle timeout."""
        return {"keepalive_timeout": self.keepalive_timeout}

    def admits(self, pending: int = 0) -> bool:
        """Whether one more connection may open (``pending``: accepted, protocol not made yet)."""
        return self.open + pending < self.max_connections

    def refuse(self, conn: socket.socket, plain: bool) -> None:
        """Turn away a connection the cap does not admit: a 503 where it is plain HTTP (a
        non-blocking send into an empty socket buffer), then closed; a TLS one is only closed."""
        self.refused["full"] += 1
        if plain:
            try:
                conn.send(FULL)
            except OSError:
                pass
        conn.close()

    def factory(self, server: Callable[[], RequestHandler]) -> Callable[[], RequestHandler]:
        """The protocol factory of a listening socket: aiohttp's server's, guarded."""
        manager: Any = server

        def make() -> RequestHandler:
            return GuardedHandler(self, manager, loop=manager._loop, **manager._kwargs)

        return make


class GuardedHandler(RequestHandler):
    """aiohttp's protocol for one connection, with a timer over each request head.

    The timer starts when the first bytes of a head arrive while no request is under way (aiohttp's
    keep-alive timer stops then: from here the head timeout applies) and stops when the parser
    yields the request. If it fires with the head still incomplete, the client gets 408 and the
    connection is closed. A head pipelined behind a request under way is timed from when that
    request is done. A parsed request of another version than 1.0/1.1 never reaches the app: it
    is answered as a malformed one, and the connection closed.
    """

    __slots__ = ("_guard", "_head_timer", "_eof_timer")

    def __init__(self, guard: ConnectionGuard, manager: Any, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._head_timer: asyncio.TimerHandle | None = None
        self._eof_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._guard.open += 1
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._guard.open -= 1
        self._stop_head_timer()
        if self._eof_timer is not None:
            self._eof_timer.cancel()
            self._eof_timer = None
        super().connection_lost(exc)

    def _idle(self) -> bool:
        """No request under way and none parsed: the handler waits for the next one."""
        return not self._messages and self._waiter is not None and not self._waiter.done()

    def eof_received(self) -> bool | None:  # type: ignore[override]
        """A client that half-closes (``shutdown(SHUT_WR)``) after its requests still gets their
        answers, then the connection closes; aiohttp would let the transport close at once and
        drop them. A head left incomplete can never end: it is closed when the rest is answered."""
        if self._idle() or self.transport is None:
            return None  # nothing to answer: the transport closes
        self._close_when_idle()
        return True  # keep the sending half open

    def _close_when_idle(self) -> None:
        self._eof_timer = None
        if self.transport is None or self._force_close:
            return
        if self._idle():
            self.force_close()
        else:
            self._eof_timer = self._loop.call_later(0.05, self._close_when_idle)

    def data_received(self, data: bytes) -> None:
        heads = self._payload_parser is None and not self._upgraded and not self._force_close and not self._close
        queued = len(self._messages)
        super().data_received(data)
        if not heads:
            return
        if len(self._messages) > queued:
            self._stop_head_timer()
            self._check_versions(queued)
        elif data and self._head_timer is None and self.transport is not None:
            if self._keepalive_handle is not None:  # the head timeout applies now, not the idle one
                self._keepalive_handle.cancel()
                self._keepalive_handle = None
            self._head_timer = self._loop.call_later(self._guard.header_timeout, self._head_due)

    def _check_versions(self, first: int) -> None:
        """Turn a parsed request of another version than 1.x into an error aiohttp answers (and
        closes after); requests pipelined behind it are dropped."""
        messages = self._messages
        for i in range(first, len(messages)):
            version = getattr(messages[i][0], "version", None)
            if version is None or version[0] == 1:  # the parser's own error, or HTTP/1.x
                continue
            status, text = (400, OLD_VERSION) if version[0] < 1 else (505, OTHER_VERSION)
            messages[i] = (_ErrInfo(status=status, exc=BadHttpMessage(text), message=text), EMPTY_PAYLOAD)
            while len(messages) > i + 1:
                messages.pop()
            return

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> StreamResponse:
        """A malformed request (4xx) is answered and the connection closed without a traceback in
        the log: clients (and scanners) send them all day; a 500 goes to aiohttp's own handling."""
        ours = message in (OLD_VERSION, OTHER_VERSION)
        if (status >= 500 and not ours) or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        self._guard.refused["version" if ours else "malformed"] += 1
        log.debug("malformed request from %s: %s", request.remote, exc)
        resp = Response(status=status, text=message or f"{status}\n", headers={"Cache-Control": "no-store"})
        resp.force_close()
        return resp

    def _head_due(self) -> None:
        self._head_timer = None
        if self.transport is None or self._force_close:
            return
        if self._messages or self._waiter is None or self._waiter.done():  # a request under way: later
            self._head_timer = self._loop.call_later(min(1.0, self._guard.header_timeout), self._head_due)
            return
        self._guard.refused["header_timeout"] += 1
        log.debug("closed a connection whose request head took over %g s", self._guard.header_timeout)
        self._finish(TIMED_OUT)

    def _finish(self, answer: bytes) -> None:
        """Write ``answer`` and close: nothing else is being written (no request is under way)."""
        if self.transport is not None:
            self.transport.write(answer)
        self.force_close()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
