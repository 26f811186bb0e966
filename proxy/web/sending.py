"""Writing a response body: bytes and zero-copy file pieces, fair turns between responses, cut on faults.

Response headers go out only once the first body byte exists, so an origin fault
before it is still a clean error status; after it, the connection is cut: a client
never sees a clean end of a response holding wrong or mixed bytes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import AsyncIterator

from aiohttp import web
from aiohttp.http_writer import StreamWriter
from multidict import CIMultiDict

from proxy.cache.hits import HeldBody
from proxy.cache.pieces import FilePiece, MetaLease, RequestTally, close_pieces, pread_exact
from proxy.core.slices import SlicePlan
from proxy.http.ranges import Span
from proxy.web.sendfile import sendfile_now, sendfile_on, socket_of, wait_flushed

__all__ = ["Reply", "ResponseInfo", "StreamedResponse", "write_piece", "send_files", "send_stream", "cut",
           "FAIR_TURN"]

log = logging.getLogger("rangeproxy.handlers")
# Bytes one response writes before it lets the others run. Writes to a socket with
# room never yield, so without this the first of 50 responses woken by the same
# origin bytes would copy megabytes before the last one sent its first byte.
FAIR_TURN = 256 * 1024


@dataclass(slots=True)
class ResponseInfo:
    """How one response was made: read by the access log and the metrics."""

    url: str = ""
    origin: str = ""  # the name of the origin that took the request ("" when none did)
    cache_status: str = "-"  # HIT | MISS | PARTIAL | PASS | ERROR | - (no body from the cache path)
    object_length: int | None = None
    tally: RequestTally = field(default_factory=RequestTally)
    started: float = field(default_factory=time.monotonic)
    first_byte: float | None = None
    finished: float | None = None
    aborted: bool = False
    restarted: bool = False  # answered again after the origin changed before the first byte

    def ttfb(self) -> float | None:
        return None if self.first_byte is None else self.first_byte - self.started


@dataclass(slots=True)
class Reply:
    """A GET or HEAD answered from the cache: status and headers, and the body as framing
    bytes and spans of the object (``pieces``), ``length`` bytes in all."""

    lease: MetaLease
    status: int
    headers: CIMultiDict[str]
    length: int
    pieces: tuple[bytes | Span, ...]
    spans: tuple[Span, ...]  # the object's spans in ``pieces``, in order
    plan: SlicePlan = SlicePlan((), frozenset())


def cut(request: web.Request) -> None:
    """Abort the connection: the client sees a broken response, never a clean wrong one."""
    transport = request.transport
    if transport is not None:
        transport.abort()


async def write_piece(request: web.Request, resp: web.StreamResponse, piece: bytes | FilePiece) -> int:
    """Write bytes, or send a file piece zero-copy and close its fd; returns the byte count."""
    if isinstance(piece, bytes):
        transport = request.transport
        if transport is not None and transport.get_write_buffer_size():
            # The transport still holds the tail of an earlier piece (and with it that
            # whole buffer): let it reach the kernel first. A slow client then pins
            # at most one piece in our memory, not a piece plus a tail.
            await wait_flushed(transport, request._payload_writer)
        await resp.write(piece)
        return len(piece)
    try:
        transport = request.transport
        sock = socket_of(transport)
        writer = request._payload_writer
        if sock is None or transport is None or writer is None:
            data = pread_exact(piece.fd, piece.count, piece.offset)
            if data is None:
                raise EOFError("slice file ended before the promised count was read")
            await resp.write(data)
        else:
            await wait_flushed(transport, writer)
            await sendfile_on(transport, sock, piece.fd, piece.offset, piece.count)
            writer.output_size += piece.count
        return piece.count
    finally:
        os.close(piece.fd)


def send_now(request: web.Request, body: HeldBody) -> list[bytes | FilePiece]:
    """Send what the socket takes at once, straight from the store's held fds (no await, so
    none of them can be closed meanwhile); returns the rest as the sender's own pieces."""
    transport, writer = request.transport, request._payload_writer
    sock = socket_of(transport)
    if sock is None or transport is None or writer is None:
        return body.detach(0)
    sfd = sock.fileno()
    for i, part in enumerate(body.parts):
        if transport.get_write_buffer_size():  # an earlier part is still queued: wait for it
            return body.detach(i)
        if isinstance(part, bytes):
            transport.write(part)
            writer.output_size += len(part)
            continue
        fd, offset, count = part
        sent = sendfile_now(sfd, fd, offset, count)
        writer.output_size += sent
        if sent < count:  # the socket is full
            return body.detach(i, sent)
    return []


async def send_files(request: web.Request, reply: Reply, body: HeldBody, info: ResponseInfo) -> web.StreamResponse:
    """A hit: framing bytes written, slice pieces sent zero-copy from their files."""
    resp = web.StreamResponse(status=reply.status, headers=reply.headers)
    resp.content_length = reply.length
    items: list[bytes | FilePiece] = []
    try:
        await resp.prepare(request)
        info.first_byte = time.monotonic()
        if not body.intact():  # prepare() waited and the store closed fds meanwhile: cut, never wrong bytes
            raise EOFError("a held slice file was closed while the headers were written")
        items = send_now(request, body)
        while items:
            await write_piece(request, resp, items.pop(0))  # it closes a piece's fd
        await resp.write_eof()
    except (ConnectionError, asyncio.TimeoutError):
        info.aborted = True
        cut(request)
    except EOFError as exc:  # a slice file shrank under us: never end cleanly
        log.warning("aborting hit for %s: %s", info.url, exc)
        info.aborted = True
        cut(request)
    finally:
        close_pieces(items)
    return resp


class StreamedResponse(web.StreamResponse):
    """A response whose headers wait in aiohttp's writer for its first body bytes and go
    out with them in one write (one segment, as nginx sends them): a cold answer's headers
    in a segment of their own cost a send and a wake-up of the client for 300 bytes."""

    _send_headers_immediately = False


async def send_stream(request: web.Request, resp: web.StreamResponse, first: bytes | FilePiece,
                      body: AsyncIterator[bytes | FilePiece], reply: Reply, info: ResponseInfo) -> None:
    """Send a prepared-to-be response: its first part, then the rest in fair turns.

    A client that goes away ends it quietly; an origin fault after the headers (or a
    body shorter than promised) cuts the connection.
    """
    sent, length = 0, reply.length
    pending = first  # closed here if never sent (prepare failed)
    try:
        await resp.prepare(request)
        if isinstance(pending, FilePiece):  # sendfile bypasses the writer: the headers first
            writer = request._payload_writer
            if isinstance(writer, StreamWriter):
                writer.send_headers()
        if pending:
            piece, pending = pending, b""
            sent += await write_piece(request, resp, piece)
        info.first_byte = time.monotonic()
        # Responses woken by the same bytes (collapsed onto one fill) each send
        # their first bytes before any of them goes on: then turns of FAIR_TURN.
        await asyncio.sleep(0)
        turn = 0
        while sent < length:
            n = await write_piece(request, resp, await body.__anext__())
            sent += n
            turn += n
            if turn >= FAIR_TURN:
                turn = 0
                await asyncio.sleep(0)
    except (ConnectionResetError, ConnectionError):
        info.aborted = True
        return  # the client went away; runs it started finish their current slice
    except Exception as exc:  # an origin fault after the headers: cut, never end cleanly
        log.warning("aborting response for %s after %d of %d bytes: %s", reply.lease.meta.url, sent, length, exc)
        info.aborted = True
        cut(request)
        return
    finally:
        if isinstance(pending, FilePiece):
            os.close(pending.fd)
    if sent != length:
        info.aborted = True
        cut(request)
        return
    await resp.write_eof()
