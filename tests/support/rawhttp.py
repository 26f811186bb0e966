"""Raw HTTP/1.1 for tests: exact request targets and bytes on one connection.

aiohttp's client normalises paths (``/../x`` becomes ``/x``) and hides framing;
:class:`RawConnection` sends requests as written and parses responses strictly,
so traversal attempts, keep-alive and "no body after HEAD" can be checked on the
wire; :func:`send_raw` sends any bytes at all and returns what came back.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class RawConnection:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 15.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def __enter__(self) -> "RawConnection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def send(self, method: str, target: str, headers: dict[str, str] | None = None) -> None:
        lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def read(self, method: str = "GET") -> RawResponse:
        status_line = self.file.readline()
        if not status_line:
            raise ConnectionError("connection closed before a response")
        parts = status_line.split(b" ", 2)
        assert parts[0] in (b"HTTP/1.1", b"HTTP/1.0"), status_line
        status = int(parts[1])
        headers: dict[str, str] = {}
        while True:
            line = self.file.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "content-length" in headers:
            n = int(headers["content-length"])
            body = self.file.read(n)
            if len(body) != n:
                raise ConnectionError(f"short body: {len(body)} of {n}")
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.file.readline().split(b";")[0], 16)
                if size == 0:
                    while self.file.readline() not in (b"\r\n", b""):
                        pass
                    break
                chunks.append(self.file.read(size))
                assert self.file.read(2) == b"\r\n"
            body = b"".join(chunks)
        else:
            body = self.file.read()
        return RawResponse(status, headers, body)

    def request(self, method: str, target: str, headers: dict[str, str] | None = None) -> RawResponse:
        self.send(method, target, headers)
        return self.read(method)


def raw_request(port: int, method: str, target: str, headers: dict[str, str] | None = None) -> RawResponse:
    with RawConnection(port) as conn:
        return conn.request(method, target, {"Connection": "close", **(headers or {})})


async def send_raw(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes, return everything the server sends until it closes (or
    until ``timeout``, or until one response with Content-Length is complete)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(request)
        await writer.drain()
        data = b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), max(0.01, deadline - loop.time()))
            except asyncio.TimeoutError:
                break
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length" and len(body) >= int(v.strip()):
                        return data
        return data
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
