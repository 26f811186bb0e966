"""HTTP glue: a client request -> 200 / 206 / multipart 206 / 304 / 416, or a pass-through.

Decisions come from the pure modules (``ranges``, ``representation``, ``slices``);
bytes come from ``Engine.stream``. Response headers are sent only once the first
body byte exists, so an origin fault before that is still a clean 502/504 (or the
origin's own status); after it, the connection is cut: a client never sees a clean
end of a response holding wrong or mixed bytes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from aiohttp import web

from proxy.cache.assemble import part_size
from proxy.cache.engine import Engine, FilePiece, MetaLease, RequestTally, close_pieces
from proxy.http.errors import ProxyError, RangeNotSatisfiable, UpstreamError, UpstreamStatus, VersionChanged
from proxy.http.dates import parse_http_date
from proxy.http.ranges import (
    Conflict,
    Ignore,
    Satisfiable,
    Span,
    Unsatisfiable,
    etag_matches_weak,
    evaluate,
    format_content_range,
    format_unsatisfied,
    if_range_matches,
    multipart,
    parse_range,
    select_range_header,
)
from proxy.core.representation import ObjectMeta
from proxy.core.slices import SlicePlan, Unit, block_units, prefers_blocks
from proxy.http.target import split_target
from proxy.web.sendfile import sendfile_on, socket_of, wait_flushed

__all__ = ["ProxyHandler", "ResponseInfo", "INFO_KEY"]
INFO_KEY = "rangeproxy"  # request[INFO_KEY] -> ResponseInfo, for the access log and metrics

log = logging.getLogger("rangeproxy.handlers")
VIA = "1.1 rangeproxy"
HOP_BY_HOP = frozenset(
    h.lower() for h in ("Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
                        "Transfer-Encoding", "Upgrade", "Host", "Content-Length")
)
UNSAFE = frozenset(("POST", "PUT", "DELETE", "PATCH"))
# Bytes one response writes before it lets the others run. Writes to a socket with
# room never yield, so without this the first of 50 responses woken by the same
# origin bytes would copy megabytes before the last one sent its first byte.
FAIR_TURN = 256 * 1024
# A hit up to this size is read from its files and sent with its headers in one write:
# cheaper than a header write, a dup, a sendfile and a close per piece (w4: +29%). Above
# it the extra copy costs more than those calls (64 KiB ranges: -15%).
SMALL_HIT = 32 * 1024



def _pread_piece(piece: FilePiece) -> bytes:
    """A file piece's bytes, copied; a short read means the file shrank (EOFError)."""
    data = os.pread(piece.fd, piece.count, piece.offset)
    if len(data) != piece.count:
        raise EOFError("slice file ended before the promised count was read")
    return data

@dataclass
class ResponseInfo:
    """How one response was made: read by the access log and the metrics."""

    url: str = ""
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


class _Restart(Exception):
    """Start the response over: the object changed before its first byte was sent."""


Observer = Callable[[web.Request, web.StreamResponse | None, ResponseInfo], None]


class ProxyHandler:
    def __init__(self, engine: Engine, observer: Observer | None = None) -> None:
        self.engine = engine
        self.observer = observer
        self.settings = engine.settings
        self.S = engine.slice_size

    def hint(self, header: str | None) -> list[Unit]:
        """What to fetch first for an object we know nothing about yet (its length unknown).

        A small single range fetches only the blocks covering it; a suffix needs the
        length first (learnt from slice 0); anything else starts at the first slice
        it needs, for up to ``max_run_slices``.
        """
        max_run = self.settings.max_run_slices
        S, B = self.S, self.engine.block_size
        specs = parse_range(header)
        if specs is None:
            return list(range(0, max_run))
        if any(s.first is None for s in specs):
            return [0]
        first = min(s.first for s in specs if s.first is not None)
        last = specs[0].last
        if len(specs) == 1 and last is not None:
            if prefers_blocks(last + 1 - first, S, B, sequential=False):
                return block_units(Span(first, last + 1), S, B)
            stop = last // S + 1
        else:
            stop = first // S + max_run
        start = first // S
        return list(range(start, min(stop, start + max_run)))

    # --- GET / HEAD from slices ---------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        info = ResponseInfo()
        request[INFO_KEY] = info
        resp: web.StreamResponse | None = None
        try:
            try:
                resp = await self._handle(request, info)
            except _Restart:
                # The origin changed before a byte went out: answer from the new version instead.
                info.tally = RequestTally()
                resp = await self._handle(request, info)
            return resp
        finally:
            info.finished = time.monotonic()
            if info.first_byte is None:
                info.first_byte = info.finished
            if self.observer is not None:
                self.observer(request, resp, info)

    async def _handle(self, request: web.Request, info: ResponseInfo) -> web.StreamResponse:
        if request.message.url.is_absolute():
            return web.Response(status=400, text="absolute-form request targets are not accepted\n")
        target, range_q = split_target(request.raw_path)
        url = self.engine.upstream.url_for(target)
        info.url = url
        if request.method not in ("GET", "HEAD"):
            info.cache_status = "PASS"
            return await self.passthrough(request, url)
        header = select_range_header(request.headers.get("Range"), range_q)
        try:
            fresh = self.engine.fresh_meta(url)  # the hot path: known and fresh, no await
            if fresh is not None:
                lease = MetaLease(fresh)
            else:
                hint = self.hint(header if isinstance(header, str) else None)
                if request.method == "HEAD":
                    hint = hint[:1]
                t0, wall = time.monotonic(), time.time()
                lease = await self.engine.object_meta(url, hint)
                if lease.meta.stored_at >= wall:  # learnt or revalidated just now: it asked the origin
                    info.tally.upstream_seconds += time.monotonic() - t0
        except UpstreamStatus as exc:
            info.cache_status = "ERROR"
            return web.Response(status=exc.status, body=exc.body, headers={**exc.headers, "Via": VIA})
        except RangeNotSatisfiable as exc:
            return self._unsatisfiable(exc.length)
        except ProxyError as exc:
            info.cache_status = "ERROR"
            return self._error(exc)
        info.object_length = lease.meta.length
        return await self.respond(request, url, lease, header, info)

    def _error(self, exc: ProxyError) -> web.Response:
        status = exc.status_hint if 400 <= exc.status_hint < 600 else 502
        text = {504: "Gateway Timeout", 502: "Bad Gateway"}.get(status, "Error")
        return web.Response(status=status, text=f"{status} {text}: {exc}\n", headers={"Via": VIA})

    def _unsatisfiable(self, length: int, meta: ObjectMeta | None = None) -> web.Response:
        headers = {"Content-Range": format_unsatisfied(length), "Accept-Ranges": "bytes", "Via": VIA}
        if meta is not None:
            headers.update(self._validators(meta))
        return web.Response(status=416, headers=headers)

    @staticmethod
    def _validators(meta: ObjectMeta) -> dict[str, str]:
        out = {}
        if meta.etag:
            out["ETag"] = meta.etag
        if meta.last_modified:
            out["Last-Modified"] = meta.last_modified
        return out

    @staticmethod
    def _not_modified(request: web.Request, meta: ObjectMeta) -> bool:
        """RFC 9110 §13.2.2: If-None-Match wins over If-Modified-Since."""
        inm = request.headers.get("If-None-Match")
        if inm is not None:
            return etag_matches_weak(inm, meta.etag)
        ims = request.headers.get("If-Modified-Since")
        if ims is not None and meta.last_modified:
            since, lm = parse_http_date(ims), parse_http_date(meta.last_modified)
            return since is not None and lm is not None and lm <= since
        return False

    async def respond(self, request: web.Request, url: str, lease: MetaLease,
                      header: str | Conflict | None, info: ResponseInfo) -> web.StreamResponse:
        meta = lease.meta
        engine = self.engine
        try:
            base = {"Accept-Ranges": "bytes", "Via": VIA, "Age": str(meta.age(time.time())),
                    **self._validators(meta)}
            if self._not_modified(request, meta):
                return web.Response(status=304, headers=base)
            if isinstance(header, Conflict):
                return self._unsatisfiable(meta.length, meta)
            ir = request.headers.get("If-Range")
            if header is not None and ir is not None and not if_range_matches(ir, meta.etag, meta.last_modified):
                header = None  # RFC 9110 §13.1.5: a failed If-Range means send the whole (200)
            outcome = evaluate(header, meta.length, max_ranges=self.settings.max_ranges)
            if isinstance(outcome, Unsatisfiable):
                return self._unsatisfiable(meta.length, meta)
            ctype = meta.content_type or "application/octet-stream"
            pieces: tuple[bytes | Span, ...]
            if isinstance(outcome, Ignore):
                status, spans = 200, (Span(0, meta.length),) if meta.length else ()
                pieces, length = spans, meta.length
                base["Content-Type"] = ctype
            elif isinstance(outcome, Satisfiable) and len(outcome.spans) == 1:
                status, spans = 206, outcome.spans
                pieces, length = spans, spans[0].size
                base["Content-Type"] = ctype
                base["Content-Range"] = format_content_range(spans[0], meta.length)
            else:
                assert isinstance(outcome, Satisfiable)
                status, spans = 206, outcome.spans
                mp = multipart(spans, meta.length, ctype)
                pieces, length = mp.pieces, mp.content_length
                base["Content-Type"] = mp.content_type
            plan = await engine.plan(meta, spans, lease.held)
            base["X-Cache"] = info.cache_status = plan.status
            if request.method == "HEAD":
                head = web.StreamResponse(status=status, headers=base)
                head.content_length = length
                await head.prepare(request)
                await head.write_eof()
                return head
            if plan.status == "HIT" and length <= SMALL_HIT:
                body = engine.hit_bytes(meta, pieces, info.tally)
                if body is not None:
                    engine.note_hits(meta, spans)
                    info.first_byte = time.monotonic()
                    return web.Response(status=status, headers=base, body=body)
            elif plan.status == "HIT":
                files = engine.hit_files(meta, pieces, info.tally)
                if files is not None:
                    engine.note_hits(meta, spans)
                    return await self._send_files(request, status, base, length, files, info)
            return await self._send(request, status, base, length, pieces, meta, spans, plan, lease, info)
        finally:
            if lease.held is not None:  # the discovery run's interest, held for this response
                engine.release_held(meta, lease.held)

    async def _body(self, meta: ObjectMeta, pieces: tuple[bytes | Span, ...], spans: tuple[Span, ...],
                    plan: SlicePlan, lease: MetaLease, tally: RequestTally,
                    files: bool) -> AsyncIterator[bytes | FilePiece]:
        stream = self.engine.stream(meta, spans, plan, tally, lease.held, files)
        try:
            for piece in pieces:
                if isinstance(piece, bytes):
                    yield piece
                    continue
                want = piece.size
                while want:
                    chunk = await stream.__anext__()
                    want -= part_size(chunk)
                    yield chunk
        finally:
            await stream.aclose()

    @staticmethod
    async def _write_piece(request: web.Request, resp: web.StreamResponse, piece: bytes | FilePiece) -> int:
        """Write bytes, or send a file piece zero-copy and close its fd; returns the byte count."""
        if isinstance(piece, bytes):
            transport = request.transport
            if transport is not None and transport.get_write_buffer_size():
                # The transport still holds the tail of an earlier piece (and with it that
                # whole buffer): let it reach the kernel first. A slow client then pins
                # at most one piece in our memory, not a piece plus a tail.
                await wait_flushed(transport, request._payload_writer)  # type: ignore[arg-type]
            await resp.write(piece)
            return len(piece)
        try:
            transport = request.transport
            sock = socket_of(transport)
            writer = request._payload_writer
            if sock is None or transport is None or writer is None:
                await resp.write(_pread_piece(piece))
            else:
                await wait_flushed(transport, writer)  # type: ignore[arg-type]
                await sendfile_on(transport, sock, piece.fd, piece.offset, piece.count)  # type: ignore[arg-type]
                writer.output_size += piece.count
            return piece.count
        finally:
            os.close(piece.fd)

    async def _send(self, request: web.Request, status: int, headers: dict[str, str], length: int,
                    pieces: tuple[bytes | Span, ...], meta: ObjectMeta, spans: tuple[Span, ...],
                    plan: SlicePlan, lease: MetaLease, info: ResponseInfo) -> web.StreamResponse:
        body = self._body(meta, pieces, spans, plan, lease, info.tally, socket_of(request.transport) is not None)
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = length
        sent = 0
        first: bytes | FilePiece = b""
        try:
            if length:
                # Headers wait for the first byte: a fault before it is still a clean error status.
                try:
                    first = await body.__anext__()
                    while not first:
                        first = await body.__anext__()
                except UpstreamStatus as exc:
                    info.cache_status = "ERROR"
                    return web.Response(status=exc.status, body=exc.body, headers={**exc.headers, "Via": VIA})
                except VersionChanged as exc:
                    if not info.restarted:
                        info.restarted = True
                        raise _Restart from exc
                    info.cache_status = "ERROR"
                    return self._error(exc)
                except ProxyError as exc:
                    info.cache_status = "ERROR"
                    return self._error(exc)
            try:
                await resp.prepare(request)
                if first:
                    piece, first = first, b""
                    sent += await self._write_piece(request, resp, piece)
                info.first_byte = time.monotonic()
                # Responses woken by the same bytes (collapsed onto one fill) each send
                # their first bytes before any of them goes on: then turns of FAIR_TURN.
                await asyncio.sleep(0)
                turn = 0
                while sent < length:
                    n = await self._write_piece(request, resp, await body.__anext__())
                    sent += n
                    turn += n
                    if turn >= FAIR_TURN:
                        turn = 0
                        await asyncio.sleep(0)
            except (ConnectionResetError, ConnectionError):
                info.aborted = True
                return resp  # the client went away; runs it started finish their current slice
            except Exception as exc:  # an origin fault after the headers: cut, never end cleanly
                log.warning("aborting response for %s after %d of %d bytes: %s", meta.url, sent, length, exc)
                info.aborted = True
                self._cut(request)
                return resp
            if sent != length:
                info.aborted = True
                self._cut(request)
                return resp
            await resp.write_eof()
            return resp
        finally:
            if isinstance(first, FilePiece):  # fetched, never sent (prepare failed)
                os.close(first.fd)
            await body.aclose()

    async def _send_files(self, request: web.Request, status: int, headers: dict[str, str], length: int,
                          items: list[bytes | FilePiece], info: ResponseInfo) -> web.StreamResponse:
        """A hit: framing bytes written, slice pieces sent zero-copy from their files."""
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = length
        try:
            await resp.prepare(request)
            info.first_byte = time.monotonic()
            while items:
                await self._write_piece(request, resp, items.pop(0))  # it closes a piece's fd
            await resp.write_eof()
        except (ConnectionError, asyncio.TimeoutError):
            info.aborted = True
            self._cut(request)
        except EOFError as exc:  # a slice file shrank under us: never end cleanly
            log.warning("aborting hit for %s: %s", info.url, exc)
            info.aborted = True
            self._cut(request)
        finally:
            close_pieces(items)
        return resp

    @staticmethod
    def _cut(request: web.Request) -> None:
        transport = request.transport
        if transport is not None:
            transport.abort()

    # --- other methods: straight through, uncached ------------------------------------

    async def passthrough(self, request: web.Request, url: str) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Via"] = VIA
        data = None
        if request.body_exists:
            if request.content_length is not None:
                headers["Content-Length"] = str(request.content_length)
            data = request.content.iter_chunked(64 * 1024)
        try:
            async with self.engine.upstream.get(url, None, headers, method=request.method, data=data) as up:
                # Fetched with the client's own headers: pass the origin's answer back as is.
                out = {k: v for k, v in up.headers.items() if k.lower() not in HOP_BY_HOP}
                out["Via"] = VIA
                resp = web.StreamResponse(status=up.status, headers=out)
                if up.content_length is not None:
                    resp.content_length = up.content_length
                if request.method in UNSAFE and 200 <= up.status < 400:
                    # RFC 9111 §4.4: a successful unsafe method invalidates the target URI.
                    await self.engine.invalidate(url, f"{request.method} {up.status}")
                await resp.prepare(request)
                try:
                    async for chunk in up.content.iter_any():
                        await resp.write(chunk)
                except (ConnectionResetError, ConnectionError):
                    return resp
                except Exception as exc:
                    log.warning("aborting pass-through of %s: %s", url, exc)
                    self._cut(request)
                    return resp
                await resp.write_eof()
                return resp
        except UpstreamError as exc:
            return self._error(exc)
