"""Listening sockets whose queued connections are all taken at each turn of the event loop.

uvloop's server (libuv) accepts one connection per turn of the loop (strace: one ``accept4``
per ``epoll_pwait``). Under load a turn lasts tens to hundreds of milliseconds, since every
ready connection is served once in it, so of 1,000 clients connecting at once a few hundred
waited in the kernel's accept queue for seconds (``ss -lnt``: 190 still queued 1.5 s into a
run, 138 after 10 s) and wrk counted requests unanswered after 5 s (issue 12). asyncio's
own loop accepts up to the backlog per turn; so does this site: it watches the listening
socket itself, accepts until the queue is empty (at most ``ACCEPT_PER_TURN`` at once) and
hands each connection to the loop with ``connect_accepted_socket`` (uvloop's transport and
TLS, aiohttp's protocol: nothing else changes).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from typing import Any, Callable

from aiohttp import web

from proxy.web.guard import ConnectionGuard

__all__ = ["AcceptingSite", "listen_sockets", "ACCEPT_PER_TURN"]

log = logging.getLogger("rangeproxy")
ACCEPT_PER_TURN = 256  # connections accepted in one turn of the loop, at most
# Out of descriptors or memory: accepting again at once would spin on a socket that stays
# readable; asyncio waits a second too.
_NO_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_RESOURCE_PAUSE = 1.0  # seconds


def listen_sockets(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Listening sockets on every address of ``host`` (as ``loop.create_server`` binds them:
    SO_REUSEADDR, IPv6 sockets IPv6 only); an OSError when one cannot be bound."""
    socks: list[socket.socket] = []
    try:
        seen = set()
        for family, type_, proto, _, addr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                  flags=socket.AI_PASSIVE):
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            s = socket.socket(family, type_, proto)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(addr)
            s.listen(backlog)
    except OSError:
        for s in socks:
            s.close()
        raise
    return socks


class _Acceptor(asyncio.AbstractServer):
    """Accepts from one listening socket for ``factory`` (aiohttp's server) until closed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, factory: Callable[[], Any],
                 tls: ssl.SSLContext | None, guard: ConnectionGuard) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._factory = factory
        self._tls = tls
        self._guard = guard
        self._handshakes: set[asyncio.Task[Any]] = set()  # connect_accepted_socket under way
        self._serving = True
        sock.setblocking(False)
        loop.add_reader(self._fd, self._accept)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self._sock,) if self._serving else ()

    def _accept(self) -> None:
        for _ in range(ACCEPT_PER_TURN):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # the queue is empty
            except ConnectionAbortedError:
                continue  # the client left while queued
            except OSError as exc:
                if exc.errno not in _NO_RESOURCES:
                    raise
                log.warning("cannot accept connections for %g s: %s", _RESOURCE_PAUSE, exc)
                self._loop.remove_reader(self._fd)
                self._loop.call_later(_RESOURCE_PAUSE, self._resume)
                return
            conn.setblocking(False)
            if not self._guard.admits(len(self._handshakes)):
                self._guard.refuse(conn, plain=self._tls is None)
                continue
            task = self._loop.create_task(self._connect(conn))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn, ssl=self._tls)
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as exc:
            # A TLS handshake that failed or timed out: the transport has closed the socket.
            log.debug("connection dropped before its first request: %r", exc)

    def _resume(self) -> None:
        if self._serving:
            self._loop.add_reader(self._fd, self._accept)

    def close(self) -> None:
        if not self._serving:
            return
        self._serving = False
        self._loop.remove_reader(self._fd)
        self._sock.close()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        return None  # serving from the start

    async def serve_forever(self) -> None:
        raise NotImplementedError("run by aiohttp's runner")

    async def wait_closed(self) -> None:
        return None  # aiohttp's server closes the connections (its shutdown)


class AcceptingSite(web.BaseSite):
    """An aiohttp site on a listening socket of ours (``listen_sockets``, or a worker's), which
    takes every queued connection at each turn of the loop."""

    __slots__ = ("_sock", "_guard")

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, guard: ConnectionGuard, *,
                 ssl_context: ssl.SSLContext | None = None, backlog: int = 128) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._sock = sock
        self._guard = guard

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self._ssl_context else 'http'}://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._sock.listen(self._backlog)  # the worker's socket too: its backlog is ours
        self._server = _Acceptor(asyncio.get_running_loop(), self._sock, self._guard.factory(server),
                                 self._ssl_context, self._guard)
