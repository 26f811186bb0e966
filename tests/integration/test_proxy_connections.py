"""Many clients connecting at once (issue 12): the listen backlog is ``listen_backlog``, and every
queued connection is taken at each turn of the event loop.

While the proxy is stopped (SIGSTOP) the kernel still completes handshakes, as long as
the accept queue has room; a connection beyond it has its handshake dropped and waits for
a retry 1 s (then 3 s) later, which is where requests waiting whole seconds came from.
Here 600 connections are opened while the proxy cannot accept: with the default backlog
all of them are established at once and all are answered once it goes on; with
``listen_backlog=16`` only about 16 are (so the setting is what the socket got), alone
and with ``--workers 2`` (whose sockets aiohttp listens on again).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from contextlib import ExitStack, contextmanager
from typing import Iterator

import pytest

from tests.integration.test_proxy_workers import children_of, listening_sockets
from tests.support.fault_origin import FaultOrigin

CLIENTS = 600


@contextmanager
def stopped(pids: list[int]) -> Iterator[None]:
    """The processes ``pids`` stopped (SIGSTOP) inside the block, going on (SIGCONT) after it."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def established_within(socks: list[socket.socket], port: int, seconds: float) -> list[socket.socket]:
    """Start a non-blocking connect on each of ``socks``; those connected within ``seconds``."""
    for s in socks:
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
    pending = {s.fileno(): s for s in socks}
    done: list[socket.socket] = []
    poll = select.poll()
    for fd in pending:
        poll.register(fd, select.POLLOUT)
    deadline = time.monotonic() + seconds
    while pending and (left := deadline - time.monotonic()) > 0:
        for fd, _ in poll.poll(left * 1000):
            s = pending.pop(fd)
            poll.unregister(fd)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                done.append(s)
    return done


def answered(socks: list[socket.socket], seconds: float) -> int:
    """Send ``GET /healthz`` on each socket; how many got a 200 within ``seconds``."""
    for s in socks:
        s.setblocking(True)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        s.setblocking(False)
    pending = {s.fileno(): (s, bytearray()) for s in socks}
    poll = select.poll()
    for fd in pending:
        poll.register(fd, select.POLLIN)
    ok = 0
    deadline = time.monotonic() + seconds
    while pending and (left := deadline - time.monotonic()) > 0:
        for fd, _ in poll.poll(left * 1000):
            s, buf = pending[fd]
            chunk = s.recv(65536)
            buf += chunk
            if not chunk:
                ok += buf.startswith(b"HTTP/1.1 200 ")
                poll.unregister(fd)
                del pending[fd]
    return ok


@pytest.mark.parametrize("workers", [1, 2])
def test_clients_connecting_at_once_are_all_queued_and_answered(
        fault_origin: FaultOrigin, proxy_factory, workers: int) -> None:
    proxy = proxy_factory(fault_origin.url, workers=workers)
    port = int(proxy.url.rsplit(":", 1)[1])
    deadline = time.monotonic() + 15
    while listening_sockets(port) < workers and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [proxy.pid, *children_of(proxy.pid)] if workers > 1 else [proxy.pid]
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(CLIENTS)]
        with stopped(pids):
            up = established_within(socks, port, 1.0)
        assert len(up) == CLIENTS
        assert answered(up, 10.0) == CLIENTS


def test_listen_backlog_is_the_accept_queue_the_socket_gets(fault_origin: FaultOrigin, proxy_factory) -> None:
    proxy = proxy_factory(fault_origin.url, listen_backlog=16)
    port = int(proxy.url.rsplit(":", 1)[1])
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(100)]
        with stopped([proxy.pid]):
            up = established_within(socks, port, 0.5)
        # Linux queues backlog + 1 connections; the others' handshakes wait for a retry.
        assert 16 <= len(up) <= 17


def test_connections_queued_during_busy_turns_are_all_taken_at_the_next() -> None:
    """uvloop's own server takes one connection per turn of the loop; an AcceptingSite takes
    every queued one. A task holding the loop 50 ms in every turn makes every turn long: 40
    clients connecting meanwhile are answered within a few turns, not 40 (2 s and more)."""
    import asyncio
    import threading

    import uvloop
    from aiohttp import web

    from proxy.web.accepting import AcceptingSite, listen_sockets
    from proxy.web.guard import ConnectionGuard

    async def handle(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def hold_every_turn() -> None:
        while True:
            time.sleep(0.05)  # a long turn of the loop, on purpose
            await asyncio.sleep(0)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    [sock] = listen_sockets("127.0.0.1", 0, 4096)
    port = sock.getsockname()[1]
    loop = uvloop.new_event_loop()
    runner = web.AppRunner(app)
    busy: list[asyncio.Task[None]] = []

    def serve() -> None:
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(AcceptingSite(runner, sock, ConnectionGuard(60.0, 75.0, 10000), backlog=4096).start())
        busy.append(loop.create_task(hold_every_turn()))
        loop.run_forever()
        busy[0].cancel()
        loop.run_until_complete(asyncio.gather(busy[0], return_exceptions=True))
        loop.run_until_complete(runner.cleanup())
        loop.close()

    server = threading.Thread(target=serve)
    server.start()
    try:
        time.sleep(0.3)
        with ExitStack() as stack:
            socks = [stack.enter_context(socket.socket()) for _ in range(40)]
            t0 = time.monotonic()
            up = established_within(socks, port, 1.0)
            assert len(up) == 40
            assert answered(up, 10.0) == 40
            took = time.monotonic() - t0
        assert took < 1.0, f"40 new connections took {took:.2f} s during busy turns"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        server.join(10)
