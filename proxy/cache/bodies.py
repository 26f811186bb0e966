"""An upstream answer's body in pieces of at most ``piece`` bytes, read straight from its socket.

aiohttp's client copies every byte twice on its way in (the loop's read into a new
bytes object of up to 256 KiB, then the parser's slice of it for the body), and with
glibc's fixed mmap threshold (:mod:`proxy.workers.malloc`) each of those is a fresh
mapping, faulted in page by page: measured, a third of the CPU of a cold full GET.
For a long body on a plain TCP connection this takes the socket over once the
headers are in: what aiohttp has buffered comes first, then each ``os.read`` of at
most ``piece`` bytes is a piece as it is (one copy, from the kernel, into a heap
block). The connection is closed afterwards (aiohttp's parser is left mid-body), so
short bodies, TLS and chunked answers stay on aiohttp's own reads.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, AsyncGenerator, AsyncIterator

import aiohttp

from proxy.http.errors import UpstreamError, UpstreamTimeout

__all__ = ["body_pieces", "TAKEOVER_MIN"]

TAKEOVER_MIN = 2 * 1024 * 1024  # body bytes left worth a connection of its own (it is not reused)
TURN = 256 * 1024  # bytes read before the loop runs others (as uvloop's reads of 256 KiB did)


async def body_pieces(resp: aiohttp.ClientResponse, piece: int,
                      timeout: float | None) -> AsyncGenerator[bytes, None]:
    """The body's bytes in order, each piece at most ``piece`` bytes (none empty).

    A body that ends early just ends (the caller counts); a reset raises
    :class:`UpstreamError`, and ``timeout`` seconds without a byte :class:`UpstreamTimeout`.
    """
    taken = _take_over(resp)
    if taken is None:
        async for chunk in _aiohttp_pieces(resp.content, piece):
            yield chunk
        return
    fd, buffered, left = taken
    try:
        for at in range(0, len(buffered), piece):
            yield buffered[at:at + piece]
        async for chunk in _socket_pieces(fd, left, piece, timeout):
            yield chunk
    finally:
        os.close(fd)
        resp.close()  # mid-message for aiohttp's parser: never back in the pool


async def _aiohttp_pieces(content: aiohttp.StreamReader, piece: int) -> AsyncIterator[bytes]:
    while True:
        # readchunk hands over each buffered chunk as is (readany joins them: a copy).
        chunk, end_of_http_chunk = await content.readchunk()
        if not chunk:
            if end_of_http_chunk:
                continue
            return
        if len(chunk) <= piece:
            yield chunk
            continue
        # Pieces of at most ``piece``: a slow reader holds on to the piece it is sending,
        # and a view of a 256 KiB read would keep all of it alive.
        view = memoryview(chunk)
        for at in range(0, len(chunk), piece):
            yield bytes(view[at:at + piece])


def _take_over(resp: aiohttp.ClientResponse) -> tuple[int, bytes, int] | None:
    """(a dup of the socket, the body bytes aiohttp holds, the bytes left to read), or
    None when aiohttp should go on reading (short, TLS, chunked, paused, or not a socket)."""
    conn = resp.connection
    length = resp.content_length
    content = resp.content
    if conn is None or length is None or resp.headers.get("Transfer-Encoding"):
        return None
    proto: Any = conn.protocol
    transport = conn.transport
    if proto is None or transport is None or transport.is_closing():
        return None
    if transport.get_extra_info("sslcontext") is not None or transport.get_extra_info("socket") is None:
        return None
    left = length - content.total_bytes
    # A paused parser may hold unparsed body bytes of its own: then leave it to aiohttp.
    if left < TAKEOVER_MIN or content.exception() is not None or content.is_eof() \
            or getattr(proto, "_reading_paused", True) or getattr(proto, "_buffer_paused", True) \
            or getattr(proto, "_parser", None) is None:
        return None
    fd = os.dup(transport.get_extra_info("socket").fileno())
    # No await from here: nothing can arrive between the drain and the pause.
    buffered = content.read_nowait()
    proto.pause_reading()  # the transport stops reading, and aiohttp's read timer with it
    return fd, buffered, left


async def _socket_pieces(fd: int, left: int, piece: int, timeout: float | None) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    since_turn = 0
    while left > 0:
        if since_turn >= TURN:
            # A socket that always has bytes would never give the loop back: the readers
            # of these pieces (and everybody else) get their turn every TURN bytes.
            since_turn = 0
            await asyncio.sleep(0)
        try:
            data = os.read(fd, min(piece, left))
        except BlockingIOError:
            since_turn = 0
            await _readable(loop, fd, timeout)
            continue
        except OSError as exc:  # a reset: typed as aiohttp's faults are (proxy.cache.upstream)
            raise UpstreamError(f"origin connection failed in the body: {exc.__class__.__name__}: {exc}") from exc
        if not data:
            return
        left -= len(data)
        since_turn += len(data)
        yield data


async def _readable(loop: asyncio.AbstractEventLoop, fd: int, timeout: float | None) -> None:
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    def late() -> None:
        if not fut.done():
            fut.set_exception(UpstreamTimeout(f"origin sent nothing for {timeout} s"))

    loop.add_reader(fd, ready)
    timer = loop.call_later(timeout, late) if timeout else None
    try:
        await fut
    finally:
        loop.remove_reader(fd)
        if timer is not None:
            timer.cancel()
