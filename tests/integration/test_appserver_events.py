"""The origin's change feed (``/_events``) on the real appserver (``python -m appserver``), under the
project's runner and granian: the refusals on the wire, events within 1 s of a change, many
subscribers, the watcher's lifetime, and a subscriber that reads nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

import aiohttp
import pytest

from tests.support.cachedir import until
from tests.support.servers import AppServerProc, start_appserver
from tests.support.websocket import RawWebSocket, raw_upgrade, split_response

pytestmark = pytest.mark.integration

TOKEN = "feed-T0ken~!"
HELLO = '{"type": "hello", "version": 1}'
REALM = 'Bearer realm="rangeproxy-origin"'
SERVERS = ["aiohttp", "granian"]
MAX_LATENCY = 1.0  # s from a file written to its event received
OVERFLOW_LOG = "fell 1000 events behind"
LATENCIES: dict[str, list[float]] = {}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("feed") / "media"
    root.mkdir()
    (root / "already.bin").write_bytes(b"there before")
    return root


@pytest.fixture(scope="module", params=SERVERS)
def server(request: pytest.FixtureRequest, media: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServerProc]:
    kind = request.param
    srv = start_appserver(media, tmp_path_factory.mktemp(f"log-{kind}"), server=kind, timeout=30, events_token=TOKEN)
    yield srv
    srv.stop(timeout=20)
    text = srv.stderr_text() + srv.stdout_text()
    assert "Traceback" not in text, text
    assert TOKEN not in text  # the secret is never logged


def kind_of(srv: AppServerProc) -> str:
    return srv.args[srv.args.index("--server") + 1]


def watchers_running(srv: AppServerProc) -> int:
    """Watchers started and not yet stopped, by the server's log."""
    text = srv.stderr_text()
    return text.count("change feed: watching") - text.count("change feed: stopped watching")


def feed_url(srv: AppServerProc, query: str = "") -> str:
    return f"{srv.url}/_events{query}"


BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def subscribe(s: aiohttp.ClientSession, srv: AppServerProc, how: str = "header") -> aiohttp.ClientWebSocketResponse:
    """Connect with the token (``Authorization`` or ``?token=``) and check the hello comes first."""
    if how == "header":
        ws = await s.ws_connect(feed_url(srv), headers=BEARER)
    else:
        ws = await s.ws_connect(feed_url(srv, "?token=" + quote(TOKEN, safe="")))
    assert await ws.receive_str(timeout=5) == HELLO
    return ws


async def next_event(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(await ws.receive_str(timeout=timeout))


async def head(srv: AppServerProc, path: str) -> tuple[str, int]:
    async with aiohttp.ClientSession() as s, s.head(f"{srv.url}{path}") as r:
        assert r.status == 200
        return r.headers["ETag"], int(r.headers["Content-Length"])


# ------------------------------------------------------------------------ refusals

DENIALS = [
    ({}, 401, {"error": "unauthorized"}),
    ({"Authorization": "Bearer not-the-token"}, 403, {"error": "forbidden"}),
    ({"Authorization": f"Basic {TOKEN}"}, 401, {"error": "unauthorized"}),
]


def check_denial_bytes(kind: str, raw: bytes, status: int, error: str) -> None:
    """The refusal as sent: status line, JSON headers, exactly the JSON body, then the connection closed
    (``raw`` was read until EOF)."""
    status_line, headers, body = split_response(raw)
    reason = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}[status]
    assert status_line == f"HTTP/1.1 {status} {reason}"
    assert headers["content-type"] == "application/json" and headers["cache-control"] == "no-store"
    assert int(headers["content-length"]) == len(body)
    doc = json.loads(body)
    assert set(doc) == {"error", "detail"} and doc["error"] == error and doc["detail"]
    assert body == json.dumps(doc).encode()  # nothing after the body
    assert ("www-authenticate" in headers) == (status == 401)
    if status == 401:
        assert headers["www-authenticate"] == REALM
    if kind == "aiohttp":
        # The project's runner: a plain HTTP response, not half an upgrade.
        assert headers["connection"].lower() == "close"
        assert "sec-websocket-accept" not in headers and "upgrade" not in headers
    # granian 2.8.9 also sends "connection: upgrade, close", "upgrade: websocket" and a
    # Sec-WebSocket-Accept on a denial response; it closes the connection after the body only
    # because the app says "connection: close" (without it, the connection stays open).


@pytest.mark.parametrize("headers,status,expected", DENIALS, ids=["no-token", "wrong-token", "not-bearer"])
async def test_refused_without_the_right_token(server: AppServerProc, headers: dict[str, str], status: int,
                                               expected: dict[str, str]) -> None:
    kind = kind_of(server)
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await s.ws_connect(feed_url(server), headers=headers)
        assert info.value.status == status
        if status == 401:
            assert info.value.headers is not None and info.value.headers["WWW-Authenticate"] == REALM
    raw = await raw_upgrade(server.port, "/_events", headers)
    check_denial_bytes(kind, raw, status, expected["error"])
    raw = await raw_upgrade(server.port, "/_events?token=wrong")
    check_denial_bytes(kind, raw, 403, "forbidden")
    raw = await raw_upgrade(server.port, "/elsewhere", BEARER)  # another path: no WebSocket there
    check_denial_bytes(kind, raw, 404, "not_found")


@pytest.mark.parametrize("kind", SERVERS)
async def test_feed_off_is_404(kind: str, media: Path, tmp_path: Path) -> None:
    srv = start_appserver(media, tmp_path, server=kind, timeout=30)  # no events_token
    try:
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await s.ws_connect(feed_url(srv), headers=BEARER)
            assert info.value.status == 404
        raw = await raw_upgrade(srv.port, "/_events", BEARER)
        check_denial_bytes(kind, raw, 404, "not_found")
        assert json.loads(split_response(raw)[2])["detail"].startswith("the change feed is off")
    finally:
        srv.stop(timeout=20)


# -------------------------------------------------------------------------- events


async def timed(ws: aiohttp.ClientWebSocketResponse, t0: float, kind: str) -> dict[str, Any]:
    ev = await next_event(ws, timeout=5)
    latency = time.monotonic() - t0
    LATENCIES.setdefault(kind, []).append(latency)
    assert latency < MAX_LATENCY, f"event {ev} after {latency:.3f} s"
    return ev


@pytest.mark.parametrize("how", ["header", "query"])
async def test_create_modify_delete_arrive_in_order_within_1s(server: AppServerProc, media: Path, how: str) -> None:
    kind = kind_of(server)
    name = f"videos/{how} clip.mp4"
    (media / "videos").mkdir(exist_ok=True)
    path = "/videos/" + f"{how}%20clip.mp4"
    async with aiohttp.ClientSession() as s:
        ws = await subscribe(s, server, how)
        try:
            t0 = time.monotonic()
            (media / name).write_bytes(b"a" * 1000)
            ev = await timed(ws, t0, kind)
            etag, size = await head(server, path)
            assert ev == {"type": "created", "path": path, "etag": etag, "size": 1000, "time": ev["time"]}
            assert size == 1000 and abs(ev["time"] - time.time()) < 5

            await ws.send_str("ping from the client")  # read and ignored
            t0 = time.monotonic()
            with open(media / name, "ab") as fh:
                fh.write(b"b" * 234)
            ev = await timed(ws, t0, kind)
            etag2, size = await head(server, path)
            assert ev == {"type": "changed", "path": path, "etag": etag2, "size": 1234, "time": ev["time"]}
            assert size == 1234 and etag2 != etag

            t0 = time.monotonic()
            (media / name).unlink()
            ev = await timed(ws, t0, kind)
            assert ev == {"type": "deleted", "path": path, "etag": None, "size": None, "time": ev["time"]}
        finally:
            await ws.close()
    print(f"\nfeed latency under {kind} ({how}): " + ", ".join(f"{x * 1000:.0f} ms" for x in LATENCIES[kind][-3:]))


async def test_two_subscribers_and_the_watcher_lifetime(server: AppServerProc, media: Path) -> None:
    # What is open when no watcher runs (the previous test's may still be stopping).
    await until(lambda: watchers_running(server) == 0, "earlier watchers stopped", 10)
    base = server.inotify_instances()
    stops = server.stderr_text().count("change feed: stopped watching")
    async with aiohttp.ClientSession() as s:
        a = await subscribe(s, server)
        b = await subscribe(s, server, "query")
        assert server.inotify_instances() == base + 1  # one watcher for both
        (media / "both.txt").write_bytes(b"for both")
        ea, eb = await next_event(a), await next_event(b)
        assert ea == eb and ea["type"] == "created" and ea["path"] == "/both.txt"

        await a.close()  # one leaves: the other goes on
        (media / "both.txt").write_bytes(b"for b only")
        eb = await next_event(b)
        assert eb["type"] == "changed" and eb["size"] == len(b"for b only")
        assert server.inotify_instances() == base + 1

        await b.close()  # the last one leaves: the watcher stops
        await until(lambda: server.inotify_instances() == base, "the watcher's inotify instance closed", 10)
        # The log line comes after the instance is closed (and granian's worker writes it later still).
        await until(lambda: server.stderr_text().count("change feed: stopped watching") == stops + 1,
                    "the watcher's stop logged", 10)
        assert watchers_running(server) == 0

        c = await subscribe(s, server)  # and a new first subscriber starts it again
        assert server.inotify_instances() == base + 1
        (media / "both.txt").unlink()
        assert (await next_event(c))["type"] == "deleted"
        await c.close()
    await until(lambda: server.inotify_instances() == base, "the watcher's inotify instance closed", 10)


async def test_a_subscriber_that_reads_nothing_is_closed_with_1013(server: AppServerProc, media: Path) -> None:
    kind = kind_of(server)
    burst = media / f"burst-{kind}"
    burst.mkdir()
    already = server.stderr_text().count(OVERFLOW_LOG)
    got: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as s:
        reader = await subscribe(s, server)  # reads everything, all along

        async def read_all() -> None:
            while True:
                msg = await reader.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return
                got.append(json.loads(msg.data))

        reading = asyncio.create_task(read_all())
        stalled = await asyncio.to_thread(RawWebSocket, server.port, "/_events", BEARER, 4096)
        try:
            assert stalled.status_line.startswith("HTTP/1.1 101")
            made = 0
            deadline = time.monotonic() + 120
            # Files with long names (big events) until the server reports the overflow: the kernel's
            # and the server's buffers take some before the queue of 1,000 fills.
            while server.stderr_text().count(OVERFLOW_LOG) == already:
                assert time.monotonic() < deadline and made < 200_000, f"no overflow after {made} files"
                await asyncio.to_thread(make_files, burst, made, 500)
                made += 500
                await until(lambda: len(got) >= made or server.stderr_text().count(OVERFLOW_LOG) > already,
                            "the reading subscriber keeps up", 30)
            texts, code = await asyncio.to_thread(stalled.read_until_close, time.monotonic() + 30)
            assert code == 1013
            assert json.loads(texts[0]) == json.loads(HELLO) and len(texts) < made
            print(f"\n{kind}: closed with 1013 after {made} files; the stalled client had {len(texts)} messages buffered")
        finally:
            stalled.close()

        await until(lambda: len(got) >= made, "the reading subscriber got every burst event", 30)
        # Every file once, in the order made (batches in time order, each sorted by path).
        assert [e["path"] for e in got[:made]] == [f"/burst-{kind}/{file_name(i)}" for i in range(made)]
        (media / "after.txt").write_bytes(b"still here")
        await until(lambda: any(e["path"] == "/after.txt" for e in got), "the other subscriber still served", 5)
        assert not reading.done()
        await reader.close()
        await reading
    async with aiohttp.ClientSession() as s, s.get(f"{server.url}/healthz") as r:
        assert r.status == 200


def file_name(i: int) -> str:
    return f"{i:06d}-" + "x" * 180 + ".bin"


def make_files(root: Path, start: int, n: int) -> None:
    for i in range(start, start + n):
        fd = os.open(root / file_name(i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
