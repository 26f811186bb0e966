"""Byte ranges over WebTransport: the ``webtransport`` scope at ``/_ranges`` (:mod:`appserver.h3`).

Each client-opened bidirectional stream carries one request, a single line of ASCII (at most
4096 bytes, ending in ``\\n``)::

    GET <path> bytes=<range>\\n       e.g.  GET /video.mp4 bytes=0-1048575

``<path>`` is the URL path as in an HTTP request (percent-encoded, same file rules: the media root
only); ``<range>`` is one HTTP byte-range spec (``a-b``, ``a-``, ``-n``). The answer on the same
stream is one line, then (for 206 only) exactly those bytes, then the stream is finished (FIN):

    206 <count> <first>-<last>/<size>\\n<count bytes>
    400 <reason>\\n      (bad line, several ranges, not one request per stream)
    404 not found\\n
    416 */<size>\\n      (no byte of the range exists)

Errors close that stream only, never the session. A stream the client resets (or stops reading)
is abandoned. Datagrams are echoed (a liveness check); unidirectional streams are ignored. The
file is read in chunks and each chunk is sent with the server's back-pressure (the send returns
once the stream's unacknowledged bytes are low), so a range is never held whole in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from proxy.http import ranges as R
from .asgi import Message, Receive, Scope, Send

if TYPE_CHECKING:
    from .app import MediaApp

__all__ = ["WebTransportRanges", "RANGES_PATH", "MAX_REQUEST_LINE"]

log = logging.getLogger("appserver.wt")

RANGES_PATH = "/_ranges"
MAX_REQUEST_LINE = 4096
CHUNK = 256 * 1024


def parse_request(line: bytes) -> tuple[str, bytes, str] | str:
    """``(path, raw_path, range)`` from a request line, or the reason it is refused."""
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return "request line is not ASCII"
    parts = text.split(" ")
    if len(parts) != 3 or parts[0] != "GET" or not parts[2].startswith("bytes="):
        return "expected: GET <path> bytes=<range>"
    raw = parts[1].encode("ascii")
    if b"?" in raw or b"#" in raw:
        return "no query or fragment in a path"
    try:
        path = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return "path is not UTF-8"
    return path, raw, parts[2]


class WebTransportRanges:
    """The ``/_ranges`` session handler, one per app; file lookups go through the app's own rules."""

    def __init__(self, app: MediaApp, chunk_size: int = CHUNK) -> None:
        self.app = app
        self.chunk_size = chunk_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "webtransport.connect":
            return
        if scope.get("path") != RANGES_PATH:
            await send({"type": "webtransport.close"})  # not accepted: the server answers 403/404
            return
        await send({"type": "webtransport.accept"})
        buffers: dict[int, bytearray] = {}
        tasks: dict[int, asyncio.Task[None]] = {}
        try:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "webtransport.stream.receive":
                    self._stream_data(message, buffers, tasks, send)
                elif kind == "webtransport.datagram.receive":
                    with contextlib.suppress(OSError):
                        await send({"type": "webtransport.datagram.send", "data": message["data"]})
                elif kind in ("webtransport.stream.reset", "webtransport.stream.stop"):
                    buffers.pop(message["stream"], None)
                    task = tasks.pop(message["stream"], None)
                    if task is not None:
                        task.cancel()
                elif kind == "webtransport.disconnect":
                    return
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)

    def _stream_data(self, message: Message, buffers: dict[int, bytearray],
                     tasks: dict[int, asyncio.Task[None]], send: Send) -> None:
        stream = int(message["stream"])
        if stream & 0x2:  # unidirectional: nothing can be answered on it
            return
        if stream in tasks:
            return  # a request was already read; anything after it is ignored
        buf = buffers.setdefault(stream, bytearray())
        buf += message["data"]
        newline = buf.find(b"\n")
        line: bytes | None = None
        if newline >= 0 and newline <= MAX_REQUEST_LINE:
            line = bytes(buf[:newline]).rstrip(b"\r")
        elif len(buf) > MAX_REQUEST_LINE or message.get("end_stream"):
            line = None
        else:
            return  # wait for the rest of the line
        del buffers[stream]
        task = asyncio.ensure_future(self._answer(stream, line, send))
        tasks[stream] = task

        def forget(_task: asyncio.Task[None]) -> None:
            if tasks.get(stream) is _task:
                del tasks[stream]

        task.add_done_callback(forget)

    async def _answer(self, stream: int, line: bytes | None, send: Send) -> None:
        try:
            await self._serve(stream, line, send)
        except OSError:
            pass  # the stream or the session went away
        except Exception:
            log.exception("WebTransport range stream %d failed", stream)
            with contextlib.suppress(Exception):
                await send({"type": "webtransport.stream.reset", "stream": stream, "code": 1})

    async def _serve(self, stream: int, line: bytes | None, send: Send) -> None:
        async def status(text: str) -> None:
            await send({"type": "webtransport.stream.send", "stream": stream,
                        "data": text.encode("ascii") + b"\n", "end_stream": True})

        if line is None:
            await status(f"400 expected one request line of at most {MAX_REQUEST_LINE} bytes")
            return
        request = parse_request(line)
        if isinstance(request, str):
            await status(f"400 {request}")
            return
        path, raw_path, range_value = request
        specs = R.parse_range(range_value)
        if specs is None:
            await status("400 not a byte range")
            return
        if len(specs) != 1:
            await status("400 one range per stream")
            return
        f = self.app.open_file(path, raw_path)
        if f is None:
            await status("404 not found")
            return
        try:
            outcome = R.resolve(specs, f.size, max_ranges=1)
            if not isinstance(outcome, R.Satisfiable):
                await status(f"416 */{f.size}")
                return
            span = outcome.spans[0]
            head = f"206 {span.size} {span.start}-{span.end - 1}/{f.size}\n".encode("ascii")
            await send({"type": "webtransport.stream.send", "stream": stream, "data": head})
            pos = span.start
            while pos < span.end:
                n = min(self.chunk_size, span.end - pos)
                data = await asyncio.to_thread(os.pread, f.fd, n, pos)
                if not data:
                    raise RuntimeError("file shrank while being sent")
                pos += len(data)
                await send({"type": "webtransport.stream.send", "stream": stream, "data": data,
                            "end_stream": pos >= span.end})
        finally:
            os.close(f.fd)
