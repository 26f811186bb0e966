"""Sending a connection's raw bytes and reading the answers back, strictly, with a deadline.

The fuzzer cannot use an HTTP client: clients refuse to send malformed heads and hide framing.
Here the whole pipelined input is written at once (optionally followed by shutdown(SHUT_WR)),
then responses are parsed one after another (RFC 9112 section 6.3 for the body length), so a
close, a truncated body or a hang is seen exactly where it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field

__all__ = ["Exchange", "Response", "byteranges_parts", "exchange", "multipart_parts", "parse_content_range"]

MAX_HEAD = 256 * 1024
_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")  # any, so an answer in a version not spoken is seen as such


class _Closed(Exception):
    """The server closed (or reset) the connection."""


class _Malformed(Exception):
    """Bytes that are not an HTTP/1.x response."""


@dataclass
class Response:
    status: int
    version: str
    headers: list[tuple[str, str]]  # names lower-cased, in order
    body: bytes
    complete: bool  # the body arrived in full (framing satisfied)
    t_done: float = 0.0

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    @property
    def announces_close(self) -> bool:
        conn = ",".join(self.all("connection")).lower()
        return "close" in conn or (self.version == "HTTP/1.0" and "keep-alive" not in conn)


@dataclass
class Exchange:
    """What happened on one connection: the answers in order and how it ended."""

    responses: list[Response] = field(default_factory=list)
    t_start: float = 0.0
    t_end: float = 0.0
    timed_out: bool = False  # the deadline passed while waiting for an answer the input expects
    closed: bool = False  # the server closed before every request was answered
    malformed: str | None = None  # a response that could not be parsed (and its start)
    send_error: str | None = None


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as e:
        if e.partial:
            raise _Malformed(f"cut line {e.partial[:80]!r}") from None
        raise _Closed() from None
    except asyncio.LimitOverrunError:
        raise _Malformed("line too long") from None
    except (ConnectionError, OSError):
        raise _Closed() from None
    return line


async def _read_exactly(reader: asyncio.StreamReader, n: int) -> tuple[bytes, bool]:
    try:
        return await reader.readexactly(n), True
    except asyncio.IncompleteReadError as e:
        return e.partial, False
    except (ConnectionError, OSError):
        return b"", False


async def _read_chunked(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    parts: list[bytes] = []
    while True:
        try:
            line = await _read_line(reader)
            size = int(line.split(b";")[0].strip(), 16)
        except (_Closed, _Malformed, ValueError):
            return b"".join(parts), False
        if size == 0:
            try:
                while (await _read_line(reader)).strip():
                    pass
            except (_Closed, _Malformed):
                return b"".join(parts), False
            return b"".join(parts), True
        data, ok = await _read_exactly(reader, size + 2)
        parts.append(data[:size])
        if not ok:
            return b"".join(parts), False


async def _read_response(reader: asyncio.StreamReader, method: str) -> Response:
    while True:
        first = await _read_line(reader)
        parts = first.rstrip(b"\r\n").split(b" ", 2)
        if len(parts) < 2 or not _VERSION.fullmatch(parts[0]) or not parts[1].isdigit():
            rest = b""
            with contextlib.suppress(Exception):
                rest = await asyncio.wait_for(reader.read(200), 0.2)
            raise _Malformed(f"status line {(first + rest)[:200]!r}")
        status = int(parts[1])
        headers: list[tuple[str, str]] = []
        size = len(first)
        while True:
            line = await _read_line(reader)
            size += len(line)
            if size > MAX_HEAD:
                raise _Malformed("response head too long")
            if line in (b"\r\n", b"\n"):
                break
            k, sep, v = line.partition(b":")
            if not sep:
                raise _Malformed(f"field line {line[:80]!r}")
            headers.append((k.strip().lower().decode("latin-1"), v.strip().decode("latin-1")))
        if 100 <= status < 200 and status != 101:
            continue  # interim answer; the final one follows
        resp = Response(status, parts[0].decode(), headers, b"", True)
        if method == "HEAD" and status == 400 and resp.announces_close:
            # aiohttp refuses a malformed message with a bodied 400 in the place of the next answer,
            # which may be a HEAD's: read what it sends up to its close.
            with contextlib.suppress(Exception):
                resp.body = await reader.read()
            return resp
        if method == "HEAD" or status in (101, 204, 304) or 100 <= status < 200:
            return resp
        te = ",".join(resp.all("transfer-encoding")).lower()
        cls = resp.all("content-length")
        if "chunked" in te:
            resp.body, resp.complete = await _read_chunked(reader)
        elif cls:
            if len(set(cls)) != 1 or not cls[0].isdigit():
                raise _Malformed(f"Content-Length {cls}")
            resp.body, resp.complete = await _read_exactly(reader, int(cls[0]))
        else:
            try:
                resp.body = await reader.read()  # until the close (RFC 9112 section 6.3, item 8)
            except (ConnectionError, OSError):
                resp.complete = False
        return resp


async def exchange(port: int, raw: bytes, methods: list[str], half_close: bool, timeout: float,
                   host: str = "127.0.0.1") -> Exchange:
    """Open a connection, send ``raw`` (and shut down writing if ``half_close``), then read up to
    ``len(methods)`` answers within ``timeout`` seconds in all."""
    ex = Exchange(t_start=time.monotonic())
    deadline = ex.t_start + timeout
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=2**20), timeout)
    except (OSError, asyncio.TimeoutError) as e:
        ex.send_error = f"connect: {e!r}"
        ex.t_end = time.monotonic()
        return ex
    try:
        try:
            writer.write(raw)
            if half_close:
                writer.write_eof()
            await asyncio.wait_for(writer.drain(), timeout)
        except (ConnectionError, OSError) as e:
            ex.send_error = repr(e)  # the server stopped reading (after refusing the input): read what it said
        except asyncio.TimeoutError:
            ex.send_error = "send timed out"
        for method in methods:
            left = deadline - time.monotonic()
            try:
                resp = await asyncio.wait_for(_read_response(reader, method), max(0.001, left))
            except asyncio.TimeoutError:
                ex.timed_out = True
                break
            except _Closed:
                ex.closed = True
                break
            except _Malformed as e:
                ex.malformed = str(e)
                break
            resp.t_done = time.monotonic()
            ex.responses.append(resp)
            if not resp.complete:
                break
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        ex.t_end = time.monotonic()
    return ex


def parse_content_range(value: str | None) -> tuple[int, int, int] | None:
    """``bytes a-b/size`` -> (a, b, size); None for anything else (``*/size`` included)."""
    if not value:
        return None
    unit, _, rest = value.strip().partition(" ")
    span, _, size = rest.partition("/")
    a, _, b = span.partition("-")
    if unit.lower() != "bytes" or not (a.isdigit() and b.isdigit() and size.isdigit()):
        return None
    return int(a), int(b), int(size)


def multipart_parts(resp: Response) -> list[tuple[str | None, bytes]] | None:
    """The parts of a multipart/byteranges answer as (Content-Range, bytes); None if its body is
    not such a body."""
    return byteranges_parts(resp.header("content-type") or "", resp.body)


def byteranges_parts(content_type: str, body: bytes, cut: bool = False) -> list[tuple[str | None, bytes]] | None:
    """The parts of a multipart/byteranges body (RFC 9110 section 14.6) as (Content-Range, bytes);
    None if the body is not such a body. ``cut``: the body ended early, and the parts before the
    one being sent are what it holds (the fuzz's and the soak's judges both read them here)."""
    if not content_type.lower().startswith("multipart/byteranges"):
        return None
    boundary = None
    for p in content_type.split(";")[1:]:
        k, _, v = p.strip().partition("=")
        if k.lower() == "boundary":
            boundary = v.strip('"')
    if not boundary:
        return None
    delim = b"--" + boundary.encode("latin-1")
    parts: list[tuple[str | None, bytes]] = []
    pos = body.find(delim)
    if pos < 0:
        return parts if cut else None
    while True:
        pos += len(delim)
        if body[pos:pos + 2] == b"--":
            return parts
        head_end = body.find(b"\r\n\r\n", pos)
        if head_end < 0:
            return parts if cut else None
        crange: str | None = None
        for field_line in body[pos:head_end].split(b"\r\n"):
            fname, _, fvalue = field_line.partition(b":")
            if fname.strip().lower() == b"content-range":
                crange = fvalue.strip().decode("latin-1")
        start = head_end + 4
        span = parse_content_range(crange)
        if span is not None and body[start + span[1] - span[0] + 1:].startswith(b"\r\n" + delim):
            nxt = start + span[1] - span[0] + 1  # the part's own length: robust to the boundary in the bytes
        else:
            nxt = body.find(b"\r\n" + delim, start)
        if nxt < 0:
            return parts if cut else None
        parts.append((crange, body[start:nxt]))
        pos = nxt + 2
