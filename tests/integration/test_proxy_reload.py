"""SIGHUP re-reads the configuration under load: a valid one applies to new requests (a new
origin answers, a changed one fetches from its new upstream) without one failed request; an
invalid one is refused with the key named in the log, and the running configuration stays.
With ``--workers`` every worker reloads."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Callable

import aiohttp
import pytest

from tests.support.client import fetch
from tests.support.data import seeded_bytes, write_seeded_file
from tests.support.servers import AppServerProc, ProxyProc, start_proxy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SIZE = 24 * 2**20 + 77
SLICE = 64 * 1024


def origins_toml(tables: dict[str, dict[str, str]]) -> str:
    """[[origin]] tables from {name: {key: TOML value}}."""
    out = []
    for name, keys in tables.items():
        out.append(f'[[origin]]\nname = "{name}"\n' + "".join(f"{k} = {v}\n" for k, v in keys.items()))
    return "\n".join(out)


@pytest.fixture
def two_media(tmp_path: Path, appserver_factory: Callable[..., AppServerProc]) -> tuple[AppServerProc, AppServerProc]:
    """Two appservers: both serve a.bin (the same bytes), only the second one serves b.bin."""
    first, second = tmp_path / "m1", tmp_path / "m2"
    write_seeded_file(first / "a.bin", SIZE, 7)
    write_seeded_file(second / "a.bin", SIZE, 7)
    write_seeded_file(second / "b.bin", SIZE, 8)
    return appserver_factory(first), appserver_factory(second)


class Load:
    """Clients reading random ranges of a.bin in a loop, each answer checked against the bytes."""

    def __init__(self, proxy: ProxyProc, clients: int = 6) -> None:
        self.proxy = proxy
        self.clients = clients
        self.data = seeded_bytes(SIZE, 7)
        self.done = 0
        self.failures: list[str] = []
        self.stop = asyncio.Event()

    async def _client(self, seed: int) -> None:
        rng = random.Random(seed)
        # A fresh connection now and then: new connections land on any worker.
        for i in range(100_000):  # bounded; stopped by the event long before
            if self.stop.is_set():
                return
            async with aiohttp.ClientSession(headers={"Host": "media.test"}) as http:
                for _ in range(10):
                    start = rng.randrange(SIZE)
                    end = min(SIZE, start + rng.randrange(1, 1_000_000))
                    try:
                        out = await fetch(http, self.proxy.url_for("a.bin"),
                                          headers={"Range": f"bytes={start}-{end - 1}"})
                    except aiohttp.ClientError as exc:
                        self.failures.append(f"{start}-{end}: {exc!r}")
                        continue
                    if out.status != 206 or out.body != self.data[start:end]:
                        self.failures.append(f"{start}-{end}: {out.status}, {len(out.body)} bytes")
                    self.done += 1

    async def __aenter__(self) -> Load:
        self.tasks = [asyncio.create_task(self._client(i)) for i in range(self.clients)]
        return self

    async def until(self, requests: int, timeout: float = 60.0) -> None:
        target = self.done + requests
        for _ in range(int(timeout / 0.05)):
            if self.done >= target or any(t.done() for t in self.tasks):
                break
            await asyncio.sleep(0.05)
        assert self.done >= target, f"load stalled at {self.done} requests: {self.failures[:3]}"

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 60)


async def reload(proxy: ProxyProc, processes: int = 1) -> str:
    return await asyncio.to_thread(proxy.reload, processes)


@pytest.mark.parametrize("workers", [1, 2])
async def test_sighup_applies_a_good_config_and_refuses_a_bad_one_under_load(
        tmp_path: Path, two_media: tuple[AppServerProc, AppServerProc], workers: int) -> None:
    first, second = two_media
    config = tmp_path / "proxy.toml"
    config.write_text(origins_toml({"media": {"hosts": '["media.test"]', "upstream": f'"{first.url}"'}}))
    proxy = start_proxy("", tmp_path / "proxy", config=config, slice_size=SLICE, workers=workers)
    try:
        async with aiohttp.ClientSession() as http:
            # Before: no origin takes other.test, and b.bin is not on the first upstream.
            assert (await fetch(http, proxy.url_for("b.bin"), headers={"Host": "other.test"})).status == 421
            assert (await fetch(http, proxy.url_for("b.bin"), headers={"Host": "media.test"})).status == 404
            async with Load(proxy) as load:
                await load.until(150)
                # A good config: media moves to the second upstream, a second origin appears.
                config.write_text(origins_toml({
                    "media": {"hosts": '["media.test"]', "upstream": f'"{second.url}"'},
                    "other": {"hosts": '["other.test"]', "upstream": f'"{first.url}"', "slice_size": '"128KiB"'},
                }))
                assert await reload(proxy, workers) == "reloaded"
                await load.until(150)
                # A bad one: refused, the key named, everything goes on as it was.
                config.write_text(origins_toml({
                    "media": {"hosts": '["media.test"]', "upstream": f'"{second.url}"', "slice_size": '"3KiB"'},
                }))
                assert await reload(proxy, workers) == "refused"
                await load.until(150)
            assert load.failures == [], load.failures[:5]
            log = proxy.stderr_text()
            assert "reload refused: config error: origin.media.slice_size" in log
            # Every worker runs the good config: fresh connections, each may land on either one.
            b = seeded_bytes(SIZE, 8)
            for _ in range(4 * workers):
                async with aiohttp.ClientSession() as fresh:
                    out = await fetch(fresh, proxy.url_for("b.bin"), headers={"Host": "media.test",
                                                                               "Range": "bytes=100-199"})
                    assert out.status == 206 and out.body == b[100:200]
                    other = await fetch(fresh, proxy.url_for("a.bin"), headers={"Host": "other.test"})
                    assert other.status == 200 and other.body == load.data
            sm = await fetch(http, proxy.url + "/_cache/a.bin", headers={"Host": "other.test"})
            assert sm.status == 200 and json.loads(sm.body)["slice_size"] == 128 * 1024
        assert proxy.alive()
    finally:
        proxy.stop(check=False)


async def test_a_reload_that_cannot_load_a_ca_bundle_is_refused_whole(
        tmp_path: Path, two_media: tuple[AppServerProc, AppServerProc]) -> None:
    """What only loading can tell (a CA bundle) is checked before anything is swapped."""
    first, second = two_media
    config = tmp_path / "proxy.toml"
    good = origins_toml({"media": {"hosts": '["media.test"]', "upstream": f'"{first.url}"'}})
    config.write_text(good)
    proxy = start_proxy("", tmp_path / "proxy", config=config, slice_size=SLICE)
    try:
        config.write_text(origins_toml({
            "media": {"hosts": '["media.test"]', "upstream": f'"{second.url}"'},
            "tls": {"hosts": '["tls.test"]', "upstream": '"https://127.0.0.1:1"',
                    "ca_bundle": f'"{tmp_path / "missing.pem"}"'},
        }))
        assert await reload(proxy) == "refused"
        assert "origin.tls.ca_bundle" in proxy.stderr_text()
        async with aiohttp.ClientSession() as http:
            # media still fetches from the first upstream: b.bin is not there.
            assert (await fetch(http, proxy.url_for("b.bin"), headers={"Host": "media.test"})).status == 404
            assert (await fetch(http, proxy.url_for("a.bin"), headers={"Host": "tls.test"})).status == 421
    finally:
        proxy.stop(check=False)
