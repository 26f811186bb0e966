"""The aiohttp client side of the tests: ``fetch`` a whole answer (a cut body is
reported, not raised) and parse ``Content-Range`` and ``multipart/byteranges``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import aiohttp
from yarl import URL


@dataclass
class Outcome:
    """What a client saw: status, headers, body bytes received, and whether the
    body ended cleanly with as many bytes as announced."""

    status: int
    headers: Any
    body: bytes
    complete: bool
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cut(self) -> bool:
        return not self.complete

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


async def fetch(session: aiohttp.ClientSession, url: str | URL, method: str = "GET",
                headers: Mapping[str, str] | None = None, timeout: float = 30.0, **kw: Any) -> Outcome:
    """Request and read the whole body; a body cut short is reported, not raised."""
    to = aiohttp.ClientTimeout(total=timeout)
    async with session.request(method, url, headers=dict(headers or {}), timeout=to,
                               allow_redirects=False, **kw) as r:
        chunks: list[bytes] = []
        complete, error = True, None
        try:
            async for chunk in r.content.iter_any():
                chunks.append(chunk)
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError,
                ConnectionError) as e:
            complete, error = False, f"{type(e).__name__}: {e}"
        body = b"".join(chunks)
        cl = r.headers.get("Content-Length")
        if complete and cl is not None and method != "HEAD" and r.status not in (204, 304):
            if len(body) != int(cl):
                complete, error = False, f"received {len(body)} of Content-Length {cl}"
        return Outcome(r.status, r.headers, body, complete, error)


def parse_multipart_byteranges(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Split a ``multipart/byteranges`` body into ``[(part headers, part body)]``;
    strict about the framing (RFC 9110 section 14.6 / RFC 2046)."""
    assert content_type.lower().startswith("multipart/byteranges"), content_type
    boundary = None
    for param in content_type.split(";")[1:]:
        k, _, v = param.strip().partition("=")
        if k.strip().lower() == "boundary":
            boundary = v.strip().strip('"')
    assert boundary, f"no boundary in {content_type!r}"
    delim = b"--" + boundary.encode()
    # body: [preamble] --B CRLF headers CRLF CRLF data CRLF --B ... CRLF --B-- [CRLF]
    first = body.find(delim)
    assert first >= 0, "no first boundary"
    pos = first + len(delim)
    parts: list[tuple[dict[str, str], bytes]] = []
    while True:
        if body[pos:pos + 2] == b"--":
            rest = body[pos + 2:]
            assert rest in (b"", b"\r\n"), f"junk after the closing boundary: {rest[:40]!r}"
            return parts
        assert body[pos:pos + 2] == b"\r\n", f"no CRLF after boundary at {pos}: {body[pos:pos + 10]!r}"
        pos += 2
        hend = body.index(b"\r\n\r\n", pos)
        headers: dict[str, str] = {}
        for line in body[pos:hend].split(b"\r\n"):
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        pos = hend + 4
        nxt = body.find(b"\r\n" + delim, pos)
        assert nxt >= 0, "part not terminated by a boundary"
        parts.append((headers, body[pos:nxt]))
        pos = nxt + 2 + len(delim)


def content_range(value: str | None) -> tuple[int, int, int]:
    """``bytes a-b/len`` -> (a, b, len)."""
    assert value is not None, "no Content-Range"
    unit, _, rest = value.strip().partition(" ")
    assert unit == "bytes", value
    span, _, total = rest.partition("/")
    a, _, b = span.partition("-")
    return int(a), int(b), int(total)
