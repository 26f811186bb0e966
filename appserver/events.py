"""``/_events``: the origin's change feed over an ASGI ``websocket`` scope (issue 14).

- The token (``events_token``) comes as ``Authorization: Bearer <token>`` or, for browser clients
  that cannot set headers, ``?token=<token>`` (percent-encoded); compared with hmac.compare_digest.
- Refusals use the WebSocket Denial Response (``websocket.http.response``), JSON bodies with
  ``Cache-Control: no-store``: no token 401 (with ``WWW-Authenticate: Bearer
  realm="rangeproxy-origin"``), a wrong one 403, the feed off (no token configured) or any other
  path 404. A server without that extension gets ``websocket.close`` 1008 before accept, which
  it answers with a bare 403.
- Accepted: ``{"type": "hello", "version": 1}``, then one text message per change (see
  :mod:`appserver.changes`). Client messages are read and ignored; a disconnect ends the
  subscription; a subscriber too far behind is closed with 1013.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from urllib.parse import parse_qs

from .asgi import DENIAL, Message, Receive, Scope, Send
from .changes import ChangeHub, Subscription

__all__ = ["EVENTS_PATH", "HELLO", "EventsEndpoint"]

log = logging.getLogger("appserver.events")


EVENTS_PATH = "/_events"
HELLO = json.dumps({"type": "hello", "version": 1})
REALM = b'Bearer realm="rangeproxy-origin"'
CLOSE_POLICY = 1008  # RFC 6455 7.4.1: refused by policy (the fallback without the denial extension)
CLOSE_TIMEOUT = 10.0  # s: a close to a client that reads nothing must not hold the handler for ever


def presented_token(scope: Scope) -> str | None:
    """The token the client presents: ``Authorization: Bearer`` first, else ``?token=``."""
    for name, value in scope.get("headers", ()):
        if bytes(name).lower() == b"authorization":
            scheme, _, credentials = bytes(value).decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    values = parse_qs(query, keep_blank_values=False).get("token")
    return values[0] if values else None


def refusal(scope: Scope, token: str | None) -> tuple[int, str, str] | None:
    """``(status, error, detail)`` if this request may not subscribe, else None."""
    if scope.get("path") != EVENTS_PATH:
        return 404, "not_found", f"no WebSocket endpoint here; the change feed is at {EVENTS_PATH}"
    if token is None:
        return 404, "not_found", "the change feed is off (no events_token is configured on this origin)"
    presented = presented_token(scope)
    if presented is None:
        return 401, "unauthorized", "present the feed's token as 'Authorization: Bearer <token>' or ?token=<token>"
    if not hmac.compare_digest(presented.encode("utf-8", "replace"), token.encode("ascii")):
        return 403, "forbidden", "the token presented is not this origin's events_token"
    return None


async def deny(scope: Scope, send: Send, status: int, error: str, detail: str) -> None:
    """Refuse the handshake with a JSON denial response, or with close 1008 if the server cannot."""
    if DENIAL not in (scope.get("extensions") or {}):
        await send({"type": "websocket.close", "code": CLOSE_POLICY})
        return
    body = json.dumps({"error": error, "detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"cache-control", b"no-store"),
        (b"content-length", str(len(body)).encode()),
        # The upgrade is refused, so the connection has no further use. The project's runner closes
        # it anyway; granian 2.8 keeps it open (and says "connection: upgrade") unless told so.
        (b"connection", b"close"),
    ]
    if status == 401:
        headers.append((b"www-authenticate", REALM))
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body, "more_body": False})


class EventsEndpoint:
    """The ASGI ``websocket`` side of the media app: the change feed, and refusals for the rest."""

    def __init__(self, root: str, token: str | None) -> None:
        self.token = token
        self.hub = ChangeHub(root)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        refused = refusal(scope, self.token)
        if refused is not None:
            await deny(scope, send, *refused)
            return
        try:
            sub = await self.hub.subscribe()
        except Exception:
            log.exception("change feed: cannot watch %s", self.hub.root)
            await deny(scope, send, 503, "unavailable", "the origin cannot watch its media directory")
            return
        try:
            await self._serve(sub, receive, send)
        finally:
            self.hub.unsubscribe(sub)

    async def close(self) -> None:
        await self.hub.close()

    async def _serve(self, sub: Subscription, receive: Receive, send: Send) -> None:
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": HELLO})
        gone = asyncio.ensure_future(_until_disconnect(receive))
        pump = asyncio.ensure_future(_pump(sub, send))
        ended = asyncio.ensure_future(sub.ended.wait())
        try:
            await asyncio.wait({gone, pump, ended}, return_when=asyncio.FIRST_COMPLETED)
            if gone.done() or (pump.done() and pump.exception() is not None):
                return  # the client left (send raised OSError, ASGI 2.4)
            pump.cancel()  # it may be stuck on a client that reads nothing
            with contextlib.suppress(BaseException):
                await pump
            code = sub.close_code
            if code is not None:
                with contextlib.suppress(OSError, asyncio.TimeoutError):
                    await asyncio.wait_for(send({"type": "websocket.close", "code": code}), CLOSE_TIMEOUT)
        finally:
            for task in (gone, pump, ended):
                task.cancel()
            await asyncio.gather(gone, pump, ended, return_exceptions=True)


async def _until_disconnect(receive: Receive) -> None:
    """Read and ignore what the client sends until it goes away."""
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def _pump(sub: Subscription, send: Send) -> None:
    while (text := await sub.next()) is not None:
        await send({"type": "websocket.send", "text": text})
