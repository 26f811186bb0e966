"""A real HTTP/2 client on a socket (the ``h2`` library): one GET, and everything the server sends
for it: 1xx responses, the response, and each pushed stream (its PUSH_PROMISE and its response).

``h2_get(port, path)`` speaks h2c with prior knowledge; with ``ssl_context`` it is TLS and ALPN
must pick ``h2``. Push is on (the client's default SETTINGS_ENABLE_PUSH = 1). Headers stay bytes,
in order, as the frames carried them.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings

__all__ = ["H2Exchange", "H2Stream", "h2_get"]

Headers = list[tuple[bytes, bytes]]


@dataclass
class H2Stream:
    """One stream's response: its informational (1xx) header blocks, final headers, body."""

    stream_id: int
    request_headers: Headers = field(default_factory=list)  # a pushed stream's promised request
    informational: list[Headers] = field(default_factory=list)
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    ended: bool = False
    reset: int | None = None

    @property
    def status(self) -> int:
        return int(dict(self.headers)[b":status"])

    def header(self, name: bytes) -> bytes | None:
        return dict(self.headers).get(name)

    def pseudo(self, name: bytes) -> bytes:
        """A pseudo-header of the promised request (``:path``, ``:authority``...)."""
        return dict(self.request_headers)[name]


@dataclass
class H2Exchange:
    """The request's stream, the streams pushed for it (in promise order) and the ALPN protocol."""

    main: H2Stream
    pushed: list[H2Stream]
    alpn: str | None
    push_promise_frames: int


def h2_get(port: int, path: str, *, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1",
           headers: Headers | None = None, method: str = "GET", enable_push: bool = True,
           timeout: float = 15.0) -> H2Exchange:
    """GET (or ``method``) ``path`` over a new HTTP/2 connection; return once the response and every
    pushed stream ended. ``enable_push=False`` sends SETTINGS_ENABLE_PUSH = 0 first, as browsers do now."""
    raw = socket.create_connection((host, port), timeout=timeout)
    sock: socket.socket = raw
    alpn = None
    try:
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(raw, server_hostname=host)
            alpn = sock.selected_alpn_protocol()  # type: ignore[attr-defined]
            if alpn != "h2":
                raise AssertionError(f"ALPN chose {alpn!r}, not h2")
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        conn.initiate_connection()
        if not enable_push:
            conn.update_settings({h2.settings.SettingCodes.ENABLE_PUSH: 0})
        scheme = b"https" if ssl_context is not None else b"http"
        request = [(b":method", method.encode()), (b":scheme", scheme), (b":authority", f"{host}:{port}".encode()),
                   (b":path", path.encode()), *(headers or [])]
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, request, end_stream=True)
        sock.sendall(conn.data_to_send())
        streams = {sid: H2Stream(sid, request)}
        pushed: list[H2Stream] = []
        promises = 0
        while not all(s.ended or s.reset is not None for s in streams.values()):
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed before every stream ended")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.PushedStreamReceived):
                    promises += 1
                    stream = H2Stream(event.pushed_stream_id, list(event.headers))
                    streams[event.pushed_stream_id] = stream
                    pushed.append(stream)
                elif isinstance(event, h2.events.InformationalResponseReceived):
                    streams[event.stream_id].informational.append(list(event.headers))
                elif isinstance(event, h2.events.ResponseReceived):
                    streams[event.stream_id].headers = list(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    streams[event.stream_id].body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    streams[event.stream_id].ended = True
                elif isinstance(event, h2.events.StreamReset):
                    streams[event.stream_id].reset = event.error_code
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
        conn.close_connection()
        sock.sendall(conn.data_to_send())
        return H2Exchange(streams[sid], pushed, alpn, promises)
    finally:
        sock.close()
