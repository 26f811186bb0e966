"""The ASGI 3 callable's types, once for the app and its endpoints."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

__all__ = ["Scope", "Message", "Receive", "Send"]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
