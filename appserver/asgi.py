"""The ASGI 3 callable's types, once for the app and its endpoints."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

__all__ = ["App", "DENIAL", "Scope", "Message", "Receive", "Send"]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# The extension that lets a WebSocket app refuse the handshake with an HTTP answer of its own.
DENIAL = "websocket.http.response"
