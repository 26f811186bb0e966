"""WebSocket on raw sockets for tests: the handshake's refusal as bytes, and a client that reads
frames only when told to.

A browser's WebSocket API never shows a refused handshake's status or body, and aiohttp's client
reads ahead into its own buffers, so the wire bytes (:func:`raw_upgrade`) and a client that truly
reads nothing (:class:`RawWebSocket`, with a small receive buffer) are what the tests use for those.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time
from typing import Mapping

__all__ = ["RawWebSocket", "dechunk", "raw_upgrade", "split_response", "upgrade_request"]

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def upgrade_request(port: int, path: str, headers: Mapping[str, str] | None = None) -> bytes:
    """An RFC 6455 opening handshake request (with a random key)."""
    key = base64.b64encode(os.urandom(16)).decode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    return request.encode("latin-1")


async def raw_upgrade(port: int, path: str, headers: Mapping[str, str] | None = None) -> bytes:
    """Send a WebSocket upgrade request on a raw socket and read until the server closes (10 s at most)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request(port, path, headers))
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(-1), 10)  # EOF: the server closed after the denial
    finally:
        writer.close()


def split_response(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return status_line, headers, body


def dechunk(body: bytes) -> bytes:
    """RFC 9112 7.1: the body of a chunked response (no trailers expected)."""
    out = b""
    while True:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert rest == b"\r\n"
            return out
        out += rest[:size]
        assert rest[size : size + 2] == b"\r\n"
        body = rest[size + 2 :]


class RawWebSocket:
    """A blocking WebSocket client on one socket: handshake, then frames read one by one on demand.

    ``rcvbuf`` shrinks the socket's receive buffer before connecting, so a client that stops
    reading pushes back on the server after a few KiB instead of megabytes.
    """

    def __init__(self, port: int, path: str, headers: Mapping[str, str] | None = None,
                 rcvbuf: int | None = None, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self._buf = b""
        request = upgrade_request(port, path, headers)
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self._buf:
            self._fill()
        head, _, self._buf = self._buf.partition(b"\r\n\r\n")
        self.status_line, self.headers, _ = split_response(head + b"\r\n\r\n")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RawWebSocket":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self._buf += data

    def _take(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def read_frame(self) -> tuple[int, bytes]:
        """``(opcode, payload)`` of the next frame from the server (unfragmented, unmasked)."""
        b0, b1 = self._take(2)
        assert b0 & 0x80, "fragmented frames are not expected from this server"
        assert not b1 & 0x80, "a server must not mask its frames (RFC 6455 5.1)"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._take(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._take(8))
        return b0 & 0x0F, self._take(n)

    def read_until_close(self, deadline: float) -> tuple[list[bytes], int | None]:
        """Every text frame, then the close frame's code (None: no code), reading until ``deadline``
        (``time.monotonic()``); a reply Close frame is sent back."""
        texts: list[bytes] = []
        while time.monotonic() < deadline:
            op, payload = self.read_frame()
            if op == OP_TEXT:
                texts.append(payload)
            elif op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                self.send_frame(OP_CLOSE, payload[:2])
                return texts, code
        raise AssertionError(f"no Close frame before the deadline ({len(texts)} text frames read)")

    def send_frame(self, opcode: int, payload: bytes) -> None:
        """One masked frame (RFC 6455 5.3: clients mask)."""
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)
