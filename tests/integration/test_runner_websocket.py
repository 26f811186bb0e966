"""appserver.runner_aiohttp's ASGI ``websocket`` scope, driven by aiohttp's WebSocket client on loopback.

The denial response (``websocket.http.response``) is read off a raw socket too: a
browser's WebSocket API never shows a refused handshake's status or body, so the
bytes on the wire are what has to be right.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

import aiohttp
import pytest
import uvloop

from appserver.runner_aiohttp import ASGIServer
from tests.support.websocket import dechunk, raw_upgrade, split_response

pytestmark = pytest.mark.integration

DENIED = {"error": "forbidden", "why": "no token"}
BURST = 100_000  # messages the app tries to send in the disconnect test: far more than a client reads


class WsApp:
    """A tiny ASGI app whose path says what it does; it records what it saw for the assertions."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.disconnects: list[dict[str, Any]] = []
        self.sent = 0
        self.send_error: BaseException | None = None
        self.stream_done = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"plain http"})
            return
        assert scope["type"] == "websocket"
        self.scopes.append(scope)
        assert (await receive())["type"] == "websocket.connect"
        path = scope["path"]
        if path == "/deny":
            body = json.dumps(DENIED).encode()
            await send({"type": "websocket.http.response.start", "status": 403,
                        "headers": [(b"content-type", b"application/json"), (b"x-denied", b"yes")]})
            await send({"type": "websocket.http.response.body", "body": body[:5], "more_body": True})
            await send({"type": "websocket.http.response.body", "body": body[5:]})
            return
        if path == "/boom":
            raise RuntimeError("app failed before answering the handshake")
        if path == "/silent":
            return  # neither accepted nor denied: a 403 (ASGI)
        if path == "/refuse":
            await send({"type": "websocket.close"})  # before accept: a 403 (ASGI)
            return
        chosen = scope["subprotocols"][-1] if scope["subprotocols"] else None
        await send({"type": "websocket.accept", "subprotocol": chosen, "headers": [(b"x-accepted", b"1")]})
        if path == "/echo":
            while True:
                msg = await receive()
                if msg["type"] == "websocket.disconnect":
                    self.disconnects.append(msg)
                    return
                if msg.get("text") == "close please":
                    await send({"type": "websocket.close", "code": 4001, "reason": "asked to"})
                    return
                await send({"type": "websocket.send", **{k: msg[k] for k in ("text", "bytes") if msg.get(k) is not None}})
        if path == "/stream":
            await self._stream(receive, send)

    async def _stream(self, receive: Any, send: Any) -> None:
        """Send far more than the client reads, while a second task waits for the disconnect."""

        async def watch() -> None:
            self.disconnects.append(await receive())

        watcher = asyncio.create_task(watch())
        try:
            for i in range(BURST):
                await send({"type": "websocket.send", "bytes": i.to_bytes(4, "big") * 256})
                self.sent += 1
                if watcher.done():
                    break
        except OSError as exc:  # ASGI 2.4: send() after the client went raises an OSError
            self.send_error = exc
        finally:
            await asyncio.wait_for(watcher, 10)
            self.stream_done.set()


def run_uv(fn: Callable[[], Awaitable[Any]]) -> Any:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(fn())


def test_echo_text_and_bytes_with_scope_and_subprotocol() -> None:
    app = WsApp()

    async def scenario() -> None:
        async with ASGIServer(app, lifespan="off") as srv, aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{srv.port_bound}/echo?x=1"
            async with s.ws_connect(url, protocols=("one", "two")) as ws:
                assert ws.protocol == "two"
                assert ws._response.headers["X-Accepted"] == "1"
                await ws.send_str("héllo")
                assert await ws.receive_str(timeout=5) == "héllo"
                blob = bytes(range(256)) * 1000
                await ws.send_bytes(blob)
                assert await ws.receive_bytes(timeout=5) == blob
            # The client closed with 1000: the app's next receive said so.
            assert app.disconnects == [{"type": "websocket.disconnect", "code": 1000, "reason": ""}]
            scope = app.scopes[0]
            assert scope["scheme"] == "ws" and scope["path"] == "/echo" and scope["raw_path"] == b"/echo"
            assert scope["query_string"] == b"x=1" and scope["subprotocols"] == ["one", "two"]
            assert scope["extensions"]["websocket.http.response"] == {}
            assert scope["asgi"]["version"] == "3.0" and "method" not in scope
            assert scope["client"][0] == "127.0.0.1" and scope["server"] == ["127.0.0.1", srv.port_bound]
            assert (b"upgrade", b"websocket") in scope["headers"]
            async with s.get(f"http://127.0.0.1:{srv.port_bound}/") as r:  # plain HTTP still served
                assert r.status == 200 and await r.read() == b"plain http"

    run_uv(scenario)


def test_app_closes_with_code_and_reason() -> None:
    async def scenario() -> None:
        async with ASGIServer(WsApp(), lifespan="off") as srv, aiohttp.ClientSession() as s:
            async with s.ws_connect(f"http://127.0.0.1:{srv.port_bound}/echo") as ws:
                assert ws.protocol is None
                await ws.send_str("close please")
                msg = await ws.receive(timeout=5)
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4001 and msg.extra == "asked to"
                assert ws.close_code == 4001

    run_uv(scenario)


def test_denial_response_status_headers_and_json_body() -> None:
    async def scenario() -> None:
        async with ASGIServer(WsApp(), lifespan="off") as srv, aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await s.ws_connect(f"http://127.0.0.1:{srv.port_bound}/deny")
            assert info.value.status == 403

            status_line, headers, body = split_response(await raw_upgrade(srv.port_bound, "/deny"))
            assert status_line == "HTTP/1.1 403 Forbidden"
            assert headers["content-type"] == "application/json" and headers["x-denied"] == "yes"
            assert headers["connection"].lower() == "close" and "sec-websocket-accept" not in headers
            # The app sent the body in two messages without a length: chunked, then the server closed.
            assert headers["transfer-encoding"] == "chunked" and json.loads(dechunk(body)) == DENIED

            for path, status in (("/refuse", 403), ("/silent", 403), ("/boom", 500)):
                status_line, headers, body = split_response(await raw_upgrade(srv.port_bound, path))
                assert status_line.split(" ")[:2] == ["HTTP/1.1", str(status)], path
                assert "sec-websocket-accept" not in headers and headers["connection"].lower() == "close"

    run_uv(scenario)


def test_client_gone_mid_send_ends_the_app_and_the_server_stays_healthy() -> None:
    app = WsApp()

    async def scenario() -> None:
        async with ASGIServer(app, lifespan="off") as srv, aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{srv.port_bound}/stream"
            ws = await s.ws_connect(url)
            for _ in range(3):
                assert len(await ws.receive_bytes(timeout=5)) == 1024
            await ws.close()  # while the app is still sending
            await asyncio.wait_for(app.stream_done.wait(), 15)
            assert app.sent < BURST  # it stopped because the client went, not because it ran out
            assert app.disconnects and app.disconnects[0]["type"] == "websocket.disconnect"

            # A client that drops the TCP connection without a Close frame ends the app as well.
            app2 = WsApp()
            srv.app = app2
            ws = await s.ws_connect(url)
            assert len(await ws.receive_bytes(timeout=5)) == 1024
            ws._response.connection.transport.abort()  # type: ignore[union-attr]
            await asyncio.wait_for(app2.stream_done.wait(), 15)
            assert app2.sent < BURST
            assert app2.disconnects[0]["type"] == "websocket.disconnect" or app2.send_error is not None

            async with s.ws_connect(f"http://127.0.0.1:{srv.port_bound}/echo") as ws:  # still serving
                await ws.send_str("after")
                assert await ws.receive_str(timeout=5) == "after"

    run_uv(scenario)


def test_send_waits_for_a_client_that_does_not_read() -> None:
    """Back-pressure: the app's await send() stops while the client reads nothing, and goes on when it reads."""
    app = WsApp()

    async def sends_settle(loop: asyncio.AbstractEventLoop, quiet: float = 0.5, bound: float = 15) -> int:
        last, since, deadline = -1, loop.time(), loop.time() + bound
        while loop.time() - since < quiet:
            assert loop.time() < deadline, "the app never stopped sending"
            if app.sent != last:
                last, since = app.sent, loop.time()
            await asyncio.sleep(0.02)
        return last

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with ASGIServer(app, lifespan="off") as srv, aiohttp.ClientSession() as s:
            ws = await s.ws_connect(f"http://127.0.0.1:{srv.port_bound}/stream")
            stalled = await sends_settle(loop)
            # 100 MiB offered; what is in flight is bounded by the socket and aiohttp buffers
            # (about 6 MiB on a default Linux loopback; half of the offer leaves room for larger tuning).
            assert 0 < stalled < BURST // 2 and not app.stream_done.is_set()
            for i in range(2000):
                assert await ws.receive_bytes(timeout=5) == i.to_bytes(4, "big") * 256  # in order, none lost
            deadline = loop.time() + 15
            while app.sent <= stalled:  # reading made room: the app's send went on
                assert loop.time() < deadline
                await asyncio.sleep(0.02)
            await ws.close()
            await asyncio.wait_for(app.stream_done.wait(), 15)
            assert app.sent < BURST

    run_uv(scenario)
