"""appserver.runner_aiohttp in-process: the ASGI server itself.

Above all: under uvloop a pathsend really goes out through ``os.sendfile``
(zero-copy), with exact byte counts, partial sends and EAGAIN waits, and the
connection stays usable (keep-alive) afterwards.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp
import pytest
import uvloop

from appserver.app import MediaApp
from appserver.runner_aiohttp import PATHSEND, ASGIServer

pytestmark = pytest.mark.integration

SIZE = 20 * 2**20


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runner") / "media"
    root.mkdir()
    (root / "big.bin").write_bytes(random.Random(99).randbytes(SIZE))
    (root / "small.txt").write_bytes(b"0123456789")
    return root


@pytest.fixture(scope="module")
def data(media: Path) -> bytes:
    return (media / "big.bin").read_bytes()


def run_on(loop_factory: Callable[[], asyncio.AbstractEventLoop], fn: Callable[[], Awaitable[Any]]) -> Any:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(fn())


def run_uv(fn: Callable[[], Awaitable[Any]]) -> Any:
    return run_on(uvloop.new_event_loop, fn)


def open_fds() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add(f"{fd}->{os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            pass
    return out


async def fetch(session: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any, bytes]:
    async with session.get(url, **kw) as r:
        return r.status, r.headers, await r.read()


def test_uvloop_pathsend_uses_os_sendfile(media: Path, data: bytes) -> None:
    async def scenario() -> None:
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        async with ASGIServer(MediaApp(media)) as srv:
            url = f"http://127.0.0.1:{srv.port_bound}/big.bin"
            async with aiohttp.ClientSession() as s:
                status, h, body = await fetch(s, url, headers={"Range": "bytes=20-345"})
                assert status == 206 and body == data[20:346]
                assert srv.stats.os_sendfile == 1 and srv.stats.sendfile_bytes == 326
                assert srv.stats.last_path == "os"

                status, h, body = await fetch(s, url)  # full 200: plain pathsend
                assert status == 200 and body == data
                assert srv.stats.os_sendfile == 2

                status, h, body = await fetch(s, url, headers={"Range": "bytes=0-9,1000-1009"})
                assert status == 206 and h["Content-Type"].startswith("multipart/byteranges")
                assert srv.stats.os_sendfile == 2  # multipart is streamed by the app

                # 16 MiB while this same loop is the reader: the socket fills up, so
                # os.sendfile must hit EAGAIN, wait for writability and resume.
                a, b = 777, 777 + 16 * 2**20 - 1
                status, h, body = await fetch(s, url, headers={"Range": f"bytes={a}-{b}"})
                assert status == 206 and body == data[a : b + 1]
                assert srv.stats.os_sendfile == 3
                assert srv.stats.eagain_waits > 0
                assert srv.stats.copy == 0 and srv.stats.aborted == 0

    run_uv(scenario)


def test_keepalive_after_sendfile(media: Path, data: bytes) -> None:
    async def scenario() -> None:
        async with ASGIServer(MediaApp(media)) as srv:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port_bound)
            spans = [(5, 10), (0, SIZE - 1), (1_000_000, 3_000_000), (SIZE - 1, SIZE - 1)]
            for a, b in spans:  # pipelined on one connection
                writer.write(f"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes={a}-{b}\r\n\r\n".encode())
            await writer.drain()
            for a, b in spans:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                assert lines[0] == "HTTP/1.1 206 Partial Content"
                hdrs = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if line)}
                n = int(hdrs["content-length"])
                assert n == b - a + 1
                assert await reader.readexactly(n) == data[a : b + 1]
            writer.close()
            assert srv.stats.os_sendfile == len(spans)

    run_uv(scenario)


def test_loop_sendfile_mode(media: Path, data: bytes) -> None:
    """mode "loop": native loop.sendfile on asyncio; uvloop has none, so it copies."""

    async def scenario() -> tuple[int, int]:
        async with ASGIServer(MediaApp(media), sendfile_mode="loop") as srv:
            async with aiohttp.ClientSession() as s:
                url = f"http://127.0.0.1:{srv.port_bound}/big.bin"
                status, _, body = await fetch(s, url, headers={"Range": "bytes=100-5000099"})
                assert status == 206 and body == data[100:5000100]
            return srv.stats.loop_sendfile, srv.stats.copy

    assert run_on(asyncio.new_event_loop, scenario) == (1, 0)
    assert run_uv(scenario) == (0, 1)  # uvloop: NotImplementedError -> read-and-write


def test_copy_mode(media: Path, data: bytes) -> None:
    async def scenario() -> None:
        async with ASGIServer(MediaApp(media), sendfile_mode="copy") as srv:
            async with aiohttp.ClientSession() as s:
                url = f"http://127.0.0.1:{srv.port_bound}/big.bin"
                status, _, body = await fetch(s, url, headers={"Range": "bytes=3-3000002"})
                assert status == 206 and body == data[3:3000003]
            assert srv.stats.copy == 1 and srv.stats.os_sendfile == 0

    run_uv(scenario)


def test_client_disconnect_during_sendfile(media: Path) -> None:
    async def scenario() -> None:
        before = open_fds()
        async with ASGIServer(MediaApp(media)) as srv:
            for _ in range(3):
                reader, writer = await asyncio.open_connection("127.0.0.1", srv.port_bound)
                writer.transport.set_write_buffer_limits(0)
                writer.write(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                await reader.readuntil(b"\r\n\r\n")
                await reader.read(1000)
                writer.transport.abort()
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            assert srv.stats.aborted >= 1
            async with aiohttp.ClientSession() as s:
                status, _, body = await fetch(s, f"http://127.0.0.1:{srv.port_bound}/small.txt")
                assert status == 200 and body == b"0123456789"
        await asyncio.sleep(0.1)
        leaked = {fd for fd in open_fds() - before if "big.bin" in fd or "socket:" in fd}
        assert not leaked  # no leaked file or socket descriptors

    run_uv(scenario)


def test_scope_and_receive() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan here")  # allowed: the server goes on
        seen["scope"] = scope
        chunks = []
        while True:
            m = await receive()
            assert m["type"] == "http.request"
            chunks.append(m)
            if not m["more_body"]:
                break
        seen["chunks"] = chunks
        await send({"type": "http.response.start", "status": 201, "headers": [(b"x-a", b"1")]})
        await send({"type": "http.response.body", "body": b"part1-", "more_body": True})
        await send({"type": "http.response.body", "body": b"part2"})
        seen["after"] = await asyncio.wait_for(receive(), 5)

    async def scenario() -> None:
        async with ASGIServer(app) as srv:
            body = os.urandom(300_000)
            # Raw socket: aiohttp's client would normalise the %2e%2e away.
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port_bound)
            writer.write(
                b"POST /a%2e%2e/b%20c%2Fd?x=1&y=%2e HTTP/1.1\r\nHost: x\r\nX-Thing: Yes\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
            )
            for i in range(0, len(body), 65536):
                writer.write(body[i : i + 65536])
                await writer.drain()
                await asyncio.sleep(0.001)
            head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
            assert head.startswith("http/1.1 201") and "x-a: 1\r\n" in head
            assert "transfer-encoding: chunked" in head
            assert await reader.readuntil(b"0\r\n\r\n") == b"6\r\npart1-\r\n5\r\npart2\r\n0\r\n\r\n"
            writer.close()
            await asyncio.sleep(0.05)
            scope = seen["scope"]
            assert scope["type"] == "http" and scope["asgi"]["version"] == "3.0"
            assert scope["http_version"] == "1.1" and scope["method"] == "POST"
            assert scope["path"] == "/a../b c/d"
            assert scope["raw_path"] == b"/a%2e%2e/b%20c%2Fd"
            assert scope["query_string"] == b"x=1&y=%2e"
            assert scope["root_path"] == "" and scope["scheme"] == "http"
            assert (b"x-thing", b"Yes") in scope["headers"]
            assert all(n == n.lower() for n, _ in scope["headers"])
            assert scope["client"][0] == "127.0.0.1" and scope["server"] == ["127.0.0.1", srv.port_bound]
            assert scope["extensions"] == {PATHSEND: {"ranges": True}}
            assert b"".join(m["body"] for m in seen["chunks"]) == body
            assert len(seen["chunks"]) > 1 and all(m["more_body"] for m in seen["chunks"][:-1])
            assert seen["chunks"][-1]["more_body"] is False
            assert seen["after"] == {"type": "http.disconnect"}

    run_uv(scenario)


def test_lifespan_state_reaches_requests() -> None:
    events: list[str] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                m = await receive()
                events.append(m["type"])
                if m["type"] == "lifespan.startup":
                    scope["state"]["db"] = "ready"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = scope["state"]["db"].encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def scenario() -> None:
        async with ASGIServer(app) as srv:
            async with aiohttp.ClientSession() as s:
                status, h, body = await fetch(s, f"http://127.0.0.1:{srv.port_bound}/")
                assert body == b"ready" and h["Content-Length"] == "5"

    run_uv(scenario)
    assert events == ["lifespan.startup", "lifespan.shutdown"]


def test_misbehaving_apps_get_500_or_closed_connection(media: Path) -> None:
    path = str(media / "small.txt")

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        p = scope["path"]
        if p == "/raise":
            raise ValueError("boom")
        if p == "/nothing":
            return
        if p == "/mismatch":  # Content-Length disagrees with the pathsend count
            await send({"type": "http.response.start", "status": 206, "headers": [(b"content-length", b"5")]})
            await send({"type": PATHSEND, "path": path, "offset": 0, "count": 3})
        if p == "/past-end":
            await send({"type": "http.response.start", "status": 206, "headers": []})
            await send({"type": PATHSEND, "path": path, "offset": 8, "count": 5})
        if p == "/unfinished":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]})
            await send({"type": "http.response.body", "body": b"x" * 10, "more_body": True})
        if p == "/ok":
            await send({"type": "http.response.start", "status": 206, "headers": []})
            await send({"type": PATHSEND, "path": path, "offset": 2, "count": 3})

    async def scenario() -> None:
        async with ASGIServer(app) as srv:
            base = f"http://127.0.0.1:{srv.port_bound}"
            async with aiohttp.ClientSession() as s:
                for p in ("/raise", "/nothing", "/mismatch", "/past-end"):
                    status, _, _ = await fetch(s, base + p)
                    assert status == 500, p
                with pytest.raises(aiohttp.ClientPayloadError):
                    await fetch(s, base + "/unfinished")
                status, h, body = await fetch(s, base + "/ok")
                assert status == 206 and body == b"234" and h["Content-Length"] == "3"

    run_uv(scenario)


def test_offset_count_refused_when_not_advertised(media: Path) -> None:
    """The runner itself enforces the contract the app must follow."""

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        assert scope["extensions"] == {PATHSEND: {}}
        await send({"type": "http.response.start", "status": 206, "headers": []})
        await send({"type": PATHSEND, "path": str(media / "small.txt"), "offset": 1, "count": 2})

    async def scenario() -> None:
        srv = ASGIServer(app)
        srv.extensions = {PATHSEND: {}}
        async with srv:
            async with aiohttp.ClientSession() as s:
                status, _, _ = await fetch(s, f"http://127.0.0.1:{srv.port_bound}/")
                assert status == 500

    run_uv(scenario)


def test_media_app_without_ranges_ext_streams(media: Path, data: bytes) -> None:
    """With only plain pathsend advertised, the app streams ranges itself."""

    async def scenario() -> None:
        srv = ASGIServer(MediaApp(media))
        srv.extensions = {PATHSEND: {}}
        async with srv:
            async with aiohttp.ClientSession() as s:
                url = f"http://127.0.0.1:{srv.port_bound}/big.bin"
                status, _, body = await fetch(s, url, headers={"Range": "bytes=10-2000009"})
                assert status == 206 and body == data[10:2000010]
                assert srv.stats.os_sendfile == 0
                status, _, body = await fetch(s, url)
                assert status == 200 and body == data
                assert srv.stats.os_sendfile == 1  # the full file: plain pathsend

    run_uv(scenario)


@pytest.mark.parametrize("factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_wait_flushed_waits_for_an_empty_transport_buffer(factory: Any) -> None:
    """Before os.sendfile, bytes still queued in the transport must reach the kernel."""
    import socket

    from aiohttp.base_protocol import BaseProtocol
    from aiohttp.http_writer import StreamWriter

    from appserver.runner_aiohttp import _wait_flushed

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        rsock, wsock = socket.socketpair()
        rsock.setblocking(False)
        wsock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        transport, proto = await loop.create_connection(lambda: BaseProtocol(loop), sock=wsock)
        limits = transport.get_write_buffer_limits()
        payload = os.urandom(4 * 2**20)
        transport.write(payload)
        assert transport.get_write_buffer_size() > 0
        task = asyncio.create_task(_wait_flushed(transport, StreamWriter(proto, loop)))
        await asyncio.sleep(0.05)
        assert not task.done()
        got = bytearray()
        while len(got) < len(payload):
            got += await loop.sock_recv(rsock, 1 << 20)
        await asyncio.wait_for(task, 10)
        assert transport.get_write_buffer_size() == 0
        assert transport.get_write_buffer_limits() == limits
        assert bytes(got) == payload
        transport.close()
        rsock.close()

    run_on(factory, scenario)
