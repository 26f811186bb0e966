"""A cache directory that stops taking writes (a full disk, a read-only mount) while the proxy runs.

Real mounts (``tests.support.mounts``: a 24 MiB tmpfs filled up by a file, a read-only bind
mount): the proxy keeps answering, from the origin (bytes checked) and from what it had
cached; ``/healthz`` says "degraded" with the reason, ``rangeproxy_cache_writable`` is 0; the
change is logged once, not per request; and when the disk takes writes again the proxy
notices by itself within a bounded time and caches again.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.client import fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.metrics import scrape, val
from tests.support.mounts import fill_up, read_only, tmpfs
from tests.support.servers import REPO_ROOT, ProxyProc, free_port, proxy_command, subprocess_env

pytestmark = pytest.mark.integration

S = 64 * 1024
SIZE = 4 * S + 77
RECOVERY = 15.0  # seconds: the probe runs every 2 s


def objects(origin: FaultOrigin, *names: str) -> dict[str, bytes]:
    out = {name: seeded_bytes(SIZE, 40 + i) for i, name in enumerate(names)}
    for name, data in out.items():
        origin.set_object(name, data, cache_control="max-age=3600")
    return out


async def health(http: aiohttp.ClientSession, proxy: ProxyProc) -> tuple[int, dict[str, Any]]:
    out = await fetch(http, proxy.url + "/healthz")
    assert out.header("Content-Type").startswith("application/json") and out.header("Cache-Control") == "no-store"
    return out.status, json.loads(out.body)


def mounts_of(path: Path) -> str:
    """What is mounted at ``path`` (for a failure's message)."""
    out = subprocess.run(["findmnt", "-R", "-o", "TARGET,FSTYPE,OPTIONS", str(path)], capture_output=True,
                         text=True, timeout=10, check=False)
    return out.stdout.strip() or "(nothing)"


async def until_health(http: aiohttp.ClientSession, proxy: ProxyProc, status: str,
                       timeout: float = RECOVERY) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, body = await health(http, proxy)
        if body["status"] == status:
            assert code == 200, (code, body)
            return body
        assert time.monotonic() < deadline, (f"/healthz still {body} after {timeout} s, not {status!r}; "
                                             f"mounts: {mounts_of(proxy.cache_dir)}\n{proxy.stderr_text()[-3000:]}")
        await asyncio.sleep(0.1)


async def until_cached(http: aiohttp.ClientSession, proxy: ProxyProc, name: str, timeout: float = 10.0) -> None:
    """Every slice of ``name`` is in the store (slices are written in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        out = await fetch(http, proxy.url + "/_cache/" + name)
        if out.status == 200:
            doc = json.loads(out.body)
            if doc["cached_slices"] == doc["slices"]:
                return
        assert time.monotonic() < deadline, f"{name} not cached within {timeout} s: {out.body[:300]!r}"
        await asyncio.sleep(0.05)


async def whole(http: aiohttp.ClientSession, proxy: ProxyProc, name: str, data: bytes) -> str | None:
    """GET ``name`` whole, bytes checked; its X-Cache."""
    out = await fetch(http, proxy.url_for(name))
    assert out.status == 200 and out.complete, (out.status, out.error)
    assert out.body == data, f"wrong bytes for {name}"
    return out.header("X-Cache")


async def check_degraded(http: aiohttp.ClientSession, proxy: ProxyProc, origin: FaultOrigin,
                         data: dict[str, bytes], reason: str, words: tuple[str, ...]) -> None:
    """Answers from the origin and from the cache, and every place that says the cache is not writable."""
    cached_asked = len(origin.gets_for("before.bin"))
    # A new object: served right from the origin; its write fails in the background.
    await whole(http, proxy, "new.bin", data["new.bin"])
    body = await until_health(http, proxy, "degraded", timeout=5.0)
    cache = body["cache"]
    assert cache["writable"] is False and isinstance(cache["since"], (int, float))
    assert any(w in cache["reason"] for w in words), cache
    metrics = await scrape(http, proxy.url)
    assert val(metrics, "rangeproxy_cache_writable") == 0
    assert val(metrics, "rangeproxy_cache_write_errors_total", reason=reason) >= 1
    stats = json.loads((await fetch(http, proxy.url + "/stats.json")).body)
    assert stats["cache"]["writable"] is False and stats["cache"]["write_errors"] >= 1

    # Not cached, so asked again (and right) every time; what was cached before is still a hit.
    asked = len(origin.gets_for("new.bin"))
    for _ in range(5):
        await whole(http, proxy, "new.bin", data["new.bin"])
        assert await whole(http, proxy, "before.bin", data["before.bin"]) == "HIT"
    assert len(origin.gets_for("new.bin")) > asked
    assert len(origin.gets_for("before.bin")) == cached_asked, "what was cached was fetched again"
    ranged = await fetch(http, proxy.url_for("new.bin"), headers={"Range": f"bytes={S - 5}-{2 * S + 4}"})
    assert ranged.status == 206 and ranged.body == data["new.bin"][S - 5:2 * S + 5]

    # Logged once, not once a request.
    log = proxy.stderr_text()
    assert log.count(" is not writable (") == 1, log[-3000:]
    assert "cannot store" not in log and "Traceback" not in log, log[-3000:]


async def check_recovered(http: aiohttp.ClientSession, proxy: ProxyProc, origin: FaultOrigin,
                          data: dict[str, bytes]) -> None:
    """Without a request, within RECOVERY seconds: writable again, and a new object is cached."""
    body = await until_health(http, proxy, "ok")
    assert body["cache"]["writable"] is True and body["cache"]["reason"] is None
    assert val(await scrape(http, proxy.url), "rangeproxy_cache_writable") == 1
    assert await whole(http, proxy, "after.bin", data["after.bin"]) != "HIT"
    await until_cached(http, proxy, "after.bin")
    asked = len(origin.gets_for("after.bin"))
    assert await whole(http, proxy, "after.bin", data["after.bin"]) == "HIT"
    assert len(origin.gets_for("after.bin")) == asked, "the origin was asked again for a cached object"
    assert "writable again" in proxy.stderr_text()


@pytest.mark.timeout(90)
async def test_a_full_disk_is_served_from_the_origin_and_recovers_when_space_returns(
        tmp_path: Path, fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = objects(fault_origin, "before.bin", "new.bin", "after.bin")
    with tmpfs(tmp_path / "disk", size="24m") as disk:
        proxy = proxy_factory(fault_origin.url, cache_dir=disk / "cache", slice_size=S)
        try:
            await whole(http, proxy, "before.bin", data["before.bin"])
            await until_cached(http, proxy, "before.bin")
            assert (await health(http, proxy)) == (200, {"status": "ok", "cache": {
                "writable": True, "reason": None, "since": None}})
            filler = fill_up(disk)

            await check_degraded(http, proxy, fault_origin, data, "no_space", ("ENOSPC", "full", "no space"))

            filler.unlink()  # space returns
            await check_recovered(http, proxy, fault_origin, data)
        finally:
            proxy.stop()  # before the unmount: it holds files there


@pytest.mark.timeout(90)
async def test_a_read_only_cache_directory_is_served_from_the_origin_and_recovers(
        tmp_path: Path, fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = objects(fault_origin, "before.bin", "new.bin", "after.bin")
    cache = tmp_path / "cache"
    proxy = proxy_factory(fault_origin.url, cache_dir=cache, slice_size=S)
    try:
        await whole(http, proxy, "before.bin", data["before.bin"])
        await until_cached(http, proxy, "before.bin")
        with read_only(cache) as mount:
            await check_degraded(http, proxy, fault_origin, data, "read_only", ("EROFS", "read-only", "readonly"))
            mount.set(False)  # remounted read-write
            await check_recovered(http, proxy, fault_origin, data)
            proxy.stop()
    finally:
        proxy.stop(check=False)


def refused_start(origin: FaultOrigin, cache: Path) -> str:
    """Start a proxy on ``cache``: it must exit 2 at once; its stderr."""
    proc = subprocess.run(proxy_command(origin.url, free_port(), cache, S), capture_output=True, text=True,
                          timeout=30, cwd=REPO_ROOT, env=subprocess_env(), check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "config error: cache_dir" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return proc.stderr


async def test_start_on_a_read_only_cache_directory_is_refused_naming_the_key(tmp_path: Path,
                                                                              fault_origin: FaultOrigin) -> None:
    """diskcache cannot open its SQLite index on a read-only mount: the proxy says so and exits 2."""
    cache = tmp_path / "cache"
    cache.mkdir()
    with read_only(cache):
        assert "read-only" in refused_start(fault_origin, cache)


async def test_start_on_a_full_disk_is_refused_naming_the_key(tmp_path: Path, fault_origin: FaultOrigin,
                                                              proxy_factory, http) -> None:
    """A cache that was in use, on a disk that filled up while the proxy was down: diskcache writes on
    open, so the proxy says so and exits 2; with room again it starts on that cache."""
    data = objects(fault_origin, "before.bin")
    with tmpfs(tmp_path / "disk", size="8m") as disk:
        cache = disk / "cache"
        proxy = proxy_factory(fault_origin.url, cache_dir=cache, slice_size=S)
        await whole(http, proxy, "before.bin", data["before.bin"])
        await until_cached(http, proxy, "before.bin")
        proxy.stop()
        filler = fill_up(disk)
        assert "No space left" in refused_start(fault_origin, cache)
        filler.unlink()
        proxy = proxy_factory(fault_origin.url, cache_dir=cache, slice_size=S)
        try:
            assert await whole(http, proxy, "before.bin", data["before.bin"]) == "HIT"
        finally:
            proxy.stop()
