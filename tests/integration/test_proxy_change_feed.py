"""Origin-driven purge: the proxy subscribes to the appserver's change feed (/_events) and a file
changed on disk is a miss of the new version at the next request, without waiting for a TTL.

Real parts only: the appserver watching a temporary media directory (watchfiles), the proxy as a
subprocess, aiohttp's client; bytes compared with what is on disk.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, Callable

import aiohttp
import pytest

from tests.support.client import fetch
from tests.support.data import seeded_bytes
from tests.support.metrics import scrape, total
from tests.support.servers import AppServerProc, DEFAULT_SLICE, ProxyProc, start_appserver

pytestmark = pytest.mark.integration

TOKEN = "f33d-t0ken"
S = DEFAULT_SLICE
OLD = seeded_bytes(6 * S + 321, 41)
NEW = seeded_bytes(6 * S + 321, 42)  # same length: only the purge tells the proxy (no length change)


def feed_url(origin: AppServerProc) -> str:
    return f"ws://127.0.0.1:{origin.port}/_events"


async def feed_state(http: aiohttp.ClientSession, proxy: ProxyProc, name: str = "default") -> dict[str, Any]:
    async with http.get(proxy.url + "/stats.json") as r:
        doc = await r.json()
    feeds: dict[str, Any] = doc["change_feeds"]
    return feeds.get(name, {})


async def until(check: Callable[[], Any], timeout: float, what: str, step: float = 0.02) -> Any:
    """Await ``check()`` until it returns something true (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what} (last: {got!r})")
        await asyncio.sleep(step)


async def connected(http: aiohttp.ClientSession, proxy: ProxyProc, connects: int = 1, timeout: float = 15.0) -> None:
    async def check() -> bool:
        f = await feed_state(http, proxy)
        return bool(f.get("connected")) and f.get("connects", 0) >= connects
    await until(check, timeout, f"the proxy's change feed connected ({connects} connects)")


def replace_file(path: Path, data: bytes) -> None:
    """A new version written beside it and renamed over it, as a deploy does."""
    tmp = path.with_name("." + path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@pytest.fixture
def media(tmp_path: Path) -> Path:
    media = tmp_path / "media"
    media.mkdir()
    (media / "clip.bin").write_bytes(OLD)
    (media / "other.bin").write_bytes(seeded_bytes(2 * S, 43))
    return media


@pytest.fixture
def origin(media: Path, tmp_path: Path) -> Any:
    proc = start_appserver(media, tmp_path / "appserver", events_token=TOKEN)
    yield proc
    proc.stop(check=False)


async def test_a_file_changed_while_a_client_streams_it_is_new_at_the_next_request(
        origin: AppServerProc, proxy_factory: Callable[..., ProxyProc], http: aiohttp.ClientSession) -> None:
    proxy = proxy_factory(origin.url, change_feed=feed_url(origin), change_feed_token=TOKEN)
    await connected(http, proxy)
    url = proxy.url_for("clip.bin")
    first = await fetch(http, url)
    assert first.status == 200 and first.complete and first.body == OLD
    again = await fetch(http, url)
    assert again.header("X-Cache") == "HIT" and again.body == OLD  # cached and fresh (default_ttl 300 s)

    # A client streams the object (slowly) while the file is replaced on disk.
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=30)) as streaming:
        head = await streaming.content.readexactly(S)
        written = time.monotonic()
        replace_file(origin.path("clip.bin"), NEW)

        async def purged() -> bool:
            return (await feed_state(http, proxy)).get("purges", 0) >= 1
        await until(purged, 5.0, "the change purged")
        took = time.monotonic() - written
        after = await fetch(http, url)
        elapsed = time.monotonic() - written
        try:
            rest = await streaming.content.read()
            cut = False
        except aiohttp.ClientPayloadError:
            rest, cut = b"", True
    assert after.status == 200 and after.complete and after.body == NEW, (after.status, after.header("X-Cache"))
    assert after.header("X-Cache") != "HIT"
    assert elapsed < 1.0, f"the new bytes came {elapsed:.3f} s after the file changed (purged after {took:.3f} s)"
    # The client that was streaming got the old version, whole or cut: never a mix.
    streamed = head + rest
    assert streamed == OLD[:len(streamed)] and (cut or streamed == OLD)

    samples = await scrape(http, proxy.url)
    assert total(samples, "rangeproxy_change_feed_purges_total", origin="default") >= 1
    assert total(samples, "rangeproxy_change_feed_events_total", origin="default") >= 1
    assert total(samples, "rangeproxy_change_feed_connected", origin="default") == 1.0
    print(f"change to purge {took * 1000:.0f} ms, to new bytes {elapsed * 1000:.0f} ms")


async def test_a_deleted_file_is_a_404_at_the_next_request(
        origin: AppServerProc, proxy_factory: Callable[..., ProxyProc], http: aiohttp.ClientSession) -> None:
    proxy = proxy_factory(origin.url, change_feed=feed_url(origin), change_feed_token=TOKEN)
    await connected(http, proxy)
    url = proxy.url_for("other.bin")
    assert (await fetch(http, url, headers={"Range": "bytes=0-99"})).status == 206
    origin.path("other.bin").unlink()

    async def gone() -> bool:
        return (await fetch(http, url, headers={"Range": "bytes=0-99"})).status == 404
    await until(gone, 1.0, "the deleted file answered 404")


async def test_the_feed_killed_and_restarted_is_connected_again(
        origin: AppServerProc, media: Path, tmp_path: Path, proxy_factory: Callable[..., ProxyProc],
        http: aiohttp.ClientSession) -> None:
    proxy = proxy_factory(origin.url, change_feed=feed_url(origin), change_feed_token=TOKEN)
    await connected(http, proxy)
    url = proxy.url_for("clip.bin")
    assert (await fetch(http, url)).body == OLD

    origin.kill()  # SIGKILL: no close frame, the TCP connection just goes

    async def down() -> bool:
        return not (await feed_state(http, proxy)).get("connected")
    await until(down, 15.0, "the proxy saw the feed go")
    assert (await fetch(http, url)).body == OLD  # the cache still answers while the feed and origin are down

    again = AppServerProc(origin.args, tmp_path / "appserver-again", origin.port, media)
    try:
        again.wait_healthy()
        await connected(http, proxy, connects=2, timeout=20.0)
        state = await feed_state(http, proxy)
        assert state["failures"] >= 1 and state["last_error"], state
        replace_file(media / "clip.bin", NEW)

        async def new_bytes() -> bool:
            return (await fetch(http, url)).body == NEW
        await until(new_bytes, 1.0, "new bytes through the reconnected feed")
    finally:
        again.stop(check=False)


async def test_a_wrong_token_is_refused_and_the_proxy_serves_as_without_a_feed(
        origin: AppServerProc, proxy_factory: Callable[..., ProxyProc], http: aiohttp.ClientSession) -> None:
    proxy = proxy_factory(origin.url, change_feed=feed_url(origin), change_feed_token="not-" + TOKEN)

    async def refused() -> dict[str, Any] | None:
        f = await feed_state(http, proxy)
        return f if f.get("failures", 0) >= 1 else None
    state = await until(refused, 15.0, "the feed refused")
    assert not state["connected"] and state["connects"] == 0 and "403" in state["last_error"], state

    async def logged() -> bool:
        return "refused: 403" in proxy.stderr_text()
    await until(logged, 5.0, "the refusal logged")
    assert TOKEN not in proxy.stderr_text()
    out = await fetch(http, proxy.url_for("clip.bin"))
    assert out.status == 200 and out.body == OLD


async def test_with_two_workers_one_subscription_purges_for_both(
        origin: AppServerProc, proxy_factory: Callable[..., ProxyProc], http: aiohttp.ClientSession) -> None:
    proxy = proxy_factory(origin.url, workers=2, change_feed=feed_url(origin), change_feed_token=TOKEN)
    await connected(http, proxy)
    url = proxy.url_for("clip.bin")

    async def each_new_connection() -> list[bytes]:
        bodies = []
        for _ in range(12):  # a new connection each: the kernel spreads them over both workers
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as one:
                bodies.append((await fetch(one, url)).body)
        return bodies

    assert set(await each_new_connection()) == {OLD}
    replace_file(origin.path("clip.bin"), NEW)

    async def all_new() -> bool:
        return set(await each_new_connection()) == {NEW}
    await until(all_new, 3.0, "every worker answers the new bytes")
    samples = await scrape(http, proxy.url)
    assert total(samples, "rangeproxy_change_feed_connects_total", origin="default") == 1.0  # one, for both
