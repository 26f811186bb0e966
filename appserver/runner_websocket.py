"""The runner's ASGI ``websocket`` scope, on aiohttp's ``WebSocketResponse``.

One ``WebSocketSession`` per upgrade request carries out the ASGI WebSocket
message set (connect, accept, receive, send, disconnect, close) and the
WebSocket Denial Response extension (``websocket.http.response``): instead of
accepting, the app may answer the upgrade request with a plain HTTP response
(``websocket.http.response.start`` + ``.body``), after which the connection is
closed, because a client that asked to upgrade has no use for keep-alive.

Back-pressure: ``WebSocketResponse.send_*`` awaits the transport's drain once
aiohttp's writer buffer is over its limit, so an app's ``await send(...)``
waits for a slow client. A client that goes away makes ``send`` raise an
OSError (ASGI 2.4) and the next ``receive`` return ``websocket.disconnect``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import WSMsgType, web
from multidict import CIMultiDict

from appserver.asgi import DENIAL
from appserver.asgi import App as ASGIApp

__all__ = ["DENIAL", "WebSocketSession", "asgi_headers", "is_websocket_upgrade", "until_done_or_gone", "websocket_scope"]

log = logging.getLogger("appserver.aiohttp")

_ABNORMAL = 1006  # RFC 6455 7.4.1: closed without a Close frame
_INTERNAL_ERROR = 1011  # RFC 6455 7.4.1: the server met an unexpected condition



class WebSocketGone(ConnectionResetError):
    """send() after the client disconnected (ASGI 2.4: an OSError subclass)."""


async def until_done_or_gone(request: web.BaseRequest, done: asyncio.Event) -> None:
    """Wait until ``done`` is set or the client's connection goes (checked every 0.5 s): what an
    app's receive waits on once nothing more will come from the client (HTTP and WebSocket)."""
    while not done.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(done.wait(), 0.5)


def is_websocket_upgrade(request: web.BaseRequest) -> bool:
    """RFC 6455 4.1: a GET with ``Upgrade: websocket`` asks for a WebSocket."""
    upgrade = request.headers.get("Upgrade", "")
    return request.method == "GET" and "websocket" in [t.strip().lower() for t in upgrade.split(",")]


def websocket_scope(http_scope: dict[str, Any], request: web.BaseRequest) -> dict[str, Any]:
    """The ASGI ``websocket`` scope, built from the runner's ``http`` scope of the same request."""
    offered = ",".join(request.headers.getall("Sec-WebSocket-Protocol", []))
    scope = {k: v for k, v in http_scope.items() if k != "method"}
    scope.update(
        type="websocket",
        scheme="wss" if request.secure else "ws",
        subprotocols=[p.strip() for p in offered.split(",") if p.strip()],
    )
    scope["extensions"] = {**http_scope.get("extensions", {}), DENIAL: {}}
    return scope


def asgi_headers(message: dict[str, Any]) -> CIMultiDict[str]:
    """The header fields of an ASGI start message, as aiohttp takes them."""
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in message.get("headers", ()):
        headers.add(bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
    return headers


class WebSocketSession:
    """One WebSocket upgrade request: the ASGI receive() and send() callables, and the result."""

    def __init__(self, request: web.BaseRequest):
        self.request = request
        self.connected = False  # websocket.connect handed to the app
        self.ws: web.WebSocketResponse | None = None  # set on websocket.accept
        self.denial_start: dict[str, Any] | None = None
        self.denial: web.StreamResponse | None = None  # set on the first denial body
        self.denial_done = False
        self.closed = False  # the app sent websocket.close
        self.disconnect: dict[str, Any] | None = None  # what receive() returns once the client is gone
        self.finished = asyncio.Event()  # the app returned

    # ------------------------------------------------------------- receive

    async def receive(self) -> dict[str, Any]:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        if self.disconnect is not None:
            return self.disconnect
        ws = self.ws
        if ws is None or self.closed:
            # Not accepted (or already closed by the app): nothing can arrive, so wait
            # until the client goes away or the app is done, as for an HTTP request.
            await until_done_or_gone(self.request, self.finished)
            return self._gone(_ABNORMAL)
        msg = await ws.receive()
        if msg.type == WSMsgType.TEXT:
            return {"type": "websocket.receive", "text": msg.data}
        if msg.type == WSMsgType.BINARY:
            return {"type": "websocket.receive", "bytes": bytes(msg.data)}
        if msg.type == WSMsgType.CLOSE:
            return self._gone(int(msg.data), msg.extra or "")
        return self._gone(ws.close_code or _ABNORMAL)

    def _gone(self, code: int, reason: str = "") -> dict[str, Any]:
        self.disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
        return self.disconnect

    # ---------------------------------------------------------------- send

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if self.closed or self.denial_done:
            raise RuntimeError(f"{kind} after the WebSocket was closed or denied")
        if self.disconnect is not None:
            raise WebSocketGone("client disconnected")
        try:
            if kind == "websocket.accept":
                await self._accept(message)
            elif kind == "websocket.send":
                await self._send(message)
            elif kind == "websocket.close":
                await self._close(message)
            elif kind == "websocket.http.response.start":
                self._denial_start(message)
            elif kind == "websocket.http.response.body":
                await self._denial_body(message)
            else:
                raise RuntimeError(f"unsupported ASGI message {kind!r}")
        except ConnectionError as exc:
            if not isinstance(exc, WebSocketGone):
                raise WebSocketGone(str(exc)) from exc
            raise

    async def _accept(self, message: dict[str, Any]) -> None:
        if self.ws is not None or self.denial_start is not None:
            raise RuntimeError("websocket.accept after the handshake was answered")
        subprotocol = message.get("subprotocol")
        # aiohttp picks the first offered protocol it knows: give it only the app's choice.
        ws = web.WebSocketResponse(protocols=(subprotocol,) if subprotocol else (), autoclose=True)
        ws.headers.extend(asgi_headers(message))
        self.ws = ws
        await ws.prepare(self.request)  # type: ignore[arg-type]  # BaseRequest suffices at run time

    async def _send(self, message: dict[str, Any]) -> None:
        ws = self.ws
        if ws is None:
            raise RuntimeError("websocket.send before websocket.accept")
        if ws.closed:
            raise WebSocketGone("WebSocket closed")
        text, data = message.get("text"), message.get("bytes")
        if text is not None:
            await ws.send_str(text)
        elif data is not None:
            await ws.send_bytes(bytes(data))
        else:
            raise ValueError("websocket.send needs text or bytes")

    async def _close(self, message: dict[str, Any]) -> None:
        if self.denial_start is not None:
            raise RuntimeError("websocket.close during a denial response")
        self.closed = True
        if self.ws is None:
            # ASGI: a close before accept refuses the handshake with 403.
            self.denial = web.Response(status=403)
            self.denial.force_close()
            self.denial_done = True
            return
        code = int(message.get("code", 1000))
        reason = str(message.get("reason") or "")
        await self.ws.close(code=code, message=reason.encode("utf-8"))

    def _denial_start(self, message: dict[str, Any]) -> None:
        if self.ws is not None or self.denial_start is not None:
            raise RuntimeError("websocket.http.response.start after the handshake was answered")
        status = int(message["status"])
        if not 100 <= status <= 999:
            raise ValueError(f"bad status {status}")
        self.denial_start = message

    async def _denial_body(self, message: dict[str, Any]) -> None:
        if self.denial_start is None:
            raise RuntimeError("websocket.http.response.body before websocket.http.response.start")
        body = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        resp = self.denial
        if resp is None:
            headers = asgi_headers(self.denial_start)
            headers.popall("Transfer-Encoding", None)
            if not more and "Content-Length" not in headers:
                headers["Content-Length"] = str(len(body))
            resp = web.StreamResponse(status=int(self.denial_start["status"]), headers=headers)
            resp.force_close()  # the upgrade was refused: the connection ends with this response
            self.denial = resp
            await resp.prepare(self.request)
        if body:
            await resp.write(body)
        if not more:
            await resp.write_eof()
            self.denial_done = True

    # --------------------------------------------------------------- result

    async def run(self, app: ASGIApp, scope: dict[str, Any]) -> web.StreamResponse:
        """Run the app on this session and return what aiohttp is to finish the request with."""
        try:
            await app(scope, self.receive, self.send)
        except Exception as exc:
            if self.ws is None and self.denial is None:
                log.exception("ASGI app failed before answering the WebSocket handshake")
                return _refusal(500)
            if not isinstance(exc, ConnectionError):
                log.exception("ASGI app failed on a WebSocket")
            if self.ws is not None and not self.ws.closed:
                with contextlib.suppress(Exception):
                    await self.ws.close(code=_INTERNAL_ERROR)
        finally:
            self.finished.set()
        if self.ws is not None:
            if not self.ws.closed:
                with contextlib.suppress(Exception):
                    await self.ws.close()  # the app returned without closing: a normal close
            return self.ws
        if self.denial is not None:
            if not self.denial_done:
                self._abort()  # the denial body was cut short: its framing is broken
            return self.denial
        # ASGI: returning without accepting refuses the handshake with 403.
        return _refusal(403)

    def _abort(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.abort()


def _refusal(status: int) -> web.Response:
    resp = web.Response(status=status)
    resp.force_close()
    return resp
