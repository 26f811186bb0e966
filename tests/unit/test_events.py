"""appserver.events: who may subscribe, and the exact denial messages (no sockets; the wire is in
tests/integration/test_appserver_events.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from appserver.events import EVENTS_PATH, deny, presented_token, refusal

TOKEN = "s3cret-T0ken"


def scope(path: str = EVENTS_PATH, query: bytes = b"", **headers: str) -> dict[str, Any]:
    return {
        "type": "websocket", "path": path, "query_string": query,
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
        "extensions": {"websocket.http.response": {}},
    }  # fmt: skip


@pytest.mark.parametrize(
    "s,token",
    [
        (scope(authorization=f"Bearer {TOKEN}"), TOKEN),
        (scope(authorization=f"bearer   {TOKEN} "), TOKEN),  # RFC 9110 11.1: the scheme is case-insensitive
        (scope(query=b"token=s3cret%2DT0ken&x=1"), TOKEN),
        (scope(query=b"token=q", authorization=f"Bearer {TOKEN}"), TOKEN),  # the header first
        (scope(authorization="Basic dXNlcjpwYXNz"), None),
        (scope(authorization="Bearer "), None),
        (scope(query=b"token="), None),
        (scope(), None),
    ],
)
def test_presented_token(s: dict[str, Any], token: str | None) -> None:
    assert presented_token(s) == token


def verdict(s: dict[str, Any], token: str | None) -> tuple[int, str] | None:
    r = refusal(s, token)
    return None if r is None else (r[0], r[1])


def test_refusals() -> None:
    assert verdict(scope("/other", authorization=f"Bearer {TOKEN}"), TOKEN) == (404, "not_found")
    off = refusal(scope(authorization=f"Bearer {TOKEN}"), None)
    assert off is not None and off[:2] == (404, "not_found") and off[2].startswith("the change feed is off")
    assert verdict(scope(), TOKEN) == (401, "unauthorized")
    assert verdict(scope(authorization="Bearer wrong"), TOKEN) == (403, "forbidden")
    assert verdict(scope(authorization="Bearer caf\u00e9"), TOKEN) == (403, "forbidden")  # not ASCII: no TypeError
    assert verdict(scope(authorization=f"Bearer {TOKEN}"), TOKEN) is None
    assert verdict(scope(query=f"token={TOKEN}".encode()), TOKEN) is None


async def test_denial_messages_and_the_close_fallback() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await deny(scope(), send, 401, "unauthorized", "no token.")
    start, body = sent
    assert start["type"] == "websocket.http.response.start" and start["status"] == 401
    assert dict(start["headers"]) == {
        b"content-type": b"application/json", b"cache-control": b"no-store", b"content-length": b"48",
        b"connection": b"close",
        b"www-authenticate": b'Bearer realm="rangeproxy-origin"',
    }  # fmt: skip
    assert body == {"type": "websocket.http.response.body", "body": b'{"error": "unauthorized", "detail": "no token."}',
                    "more_body": False}
    assert json.loads(body["body"]) == {"error": "unauthorized", "detail": "no token."}
    sent.clear()
    await deny(scope(), send, 403, "forbidden", "wrong.")
    assert b"www-authenticate" not in dict(sent[0]["headers"])
    sent.clear()
    await deny({**scope(), "extensions": {}}, send, 401, "unauthorized", "no token.")
    assert sent == [{"type": "websocket.close", "code": 1008}]  # no denial extension: 403 by the server
