"""Zero-copy sending of file bytes on an aiohttp connection, on any event loop.

uvloop's loop has no ``loop.sendfile`` for its transports (aiohttp's FileResponse
then falls back to read-and-write), so this calls ``os.sendfile`` on the
connection's socket itself, after the response headers have reached the kernel.
Shared by the proxy (cache hits from slice files) and the appserver's runner
(``http.response.pathsend`` with offset/count).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

__all__ = ["ConnectionGone", "wait_flushed", "sendfile_now", "sendfile_on", "socket_of", "MAX_SENDFILE"]

MAX_SENDFILE = 0x7FFFF000  # Linux caps one sendfile() at this many bytes
YIELD_EVERY = 4 * 1024 * 1024  # give other connections a turn on a fast socket


class ConnectionGone(ConnectionError):
    """The client connection closed while we were sending."""


def socket_of(transport: asyncio.BaseTransport | None) -> Any | None:
    """The plain TCP socket under ``transport``, or None (TLS or no socket: copy instead)."""
    if transport is None or transport.is_closing():
        return None
    if transport.get_extra_info("sslcontext") is not None:
        return None
    return transport.get_extra_info("socket")


async def wait_flushed(transport: asyncio.Transport, writer: Any) -> None:
    """Wait until the transport's own write buffer (the headers) reached the kernel."""
    if transport.get_write_buffer_size() == 0:
        return
    low, high = transport.get_write_buffer_limits()  # note the order
    transport.set_write_buffer_limits(high=0, low=0)  # pauses the protocol now
    try:
        await writer.drain()  # returns on resume_writing, i.e. an empty buffer
    finally:
        transport.set_write_buffer_limits(high=high, low=low)
    while transport.get_write_buffer_size() and not transport.is_closing():
        await asyncio.sleep(0.001)  # belt and braces; not reached in practice
    if transport.is_closing():
        raise ConnectionGone("connection lost")


async def _wait_writable(loop: asyncio.AbstractEventLoop, fd: int, timeout: float | None) -> None:
    fut = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_writer(fd, ready)
    try:
        await asyncio.wait_for(fut, timeout)
    finally:
        loop.remove_writer(fd)


def sendfile_now(sfd: int, fd: int, offset: int, count: int) -> int:
    """Bytes of ``fd`` from ``offset`` the socket ``sfd`` takes now, up to ``count``: never waits."""
    sent = 0
    while sent < count:
        try:
            n = os.sendfile(sfd, fd, offset + sent, min(count - sent, MAX_SENDFILE))
        except BlockingIOError:
            break
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ConnectionGone(str(exc)) from exc
        if n == 0:
            raise EOFError("file ended before the promised count was sent")
        sent += n
    return sent


async def sendfile_on(transport: asyncio.Transport, sock: Any, fd: int, offset: int, count: int,
                      timeout: float | None = 60.0) -> int:
    """Send ``count`` bytes of ``fd`` from ``offset``; returns the times the socket was full.

    Uses a ``dup()`` of the socket: asyncio and uvloop refuse ``add_writer`` on an
    fd a transport owns, and the transport may close its fd while we wait (client
    gone), after which that number could belong to another connection.
    """
    loop = asyncio.get_running_loop()
    sfd = os.dup(sock.fileno())
    waits = 0
    try:
        while count > 0:
            turn = min(count, YIELD_EVERY)
            n = sendfile_now(sfd, fd, offset, turn)
            offset += n
            count -= n
            if count == 0:
                break
            if transport.is_closing():
                raise ConnectionGone("connection lost")
            if n < turn:  # the socket is full
                waits += 1
                await _wait_writable(loop, sfd, timeout)
            else:  # a fast socket: give other connections a turn
                await asyncio.sleep(0)
    finally:
        os.close(sfd)
    return waits
