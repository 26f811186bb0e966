"""A tiny raw HTTP/1.1 client for tests: exact request targets, one connection.

aiohttp's client normalises paths (``/../x`` becomes ``/x``) and hides framing;
this one sends bytes as written and parses responses strictly, so traversal
attempts, keep-alive and "no body after HEAD" can be checked on the wire.
"""

from __future__ import annotations

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
