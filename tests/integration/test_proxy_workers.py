"""--workers N: processes on one port sharing the cache, one origin fetch per slice across them."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aiohttp

from tests.support.client import fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.servers import DEFAULT_SLICE

S = DEFAULT_SLICE


def listening_sockets(port: int) -> int:
    """LISTEN sockets on ``port`` (one per worker bound with SO_REUSEPORT)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                n += 1
    return n


async def all_workers_listening(proxy, n: int = 2, timeout: float = 15.0) -> None:
    port = int(proxy.url.rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout
    while listening_sockets(port) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert listening_sockets(port) >= n, f"only {listening_sockets(port)} of {n} workers listen"


def children_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


async def on_new_connections(url: str, n: int, headers: list[dict[str, str]]) -> list[tuple[int, bytes]]:
    """n requests at once, each on its own connection (so the kernel spreads them over workers)."""
    async def one(h: dict[str, str]) -> tuple[int, bytes]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            async with s.get(url, headers=h) as r:
                return r.status, await r.read()
    return await asyncio.gather(*(one(headers[i % len(headers)]) for i in range(n)))


async def test_two_workers_collapse_cold_requests_onto_one_fetch_per_slice(
        fault_origin: FaultOrigin, proxy_factory) -> None:
    size = 8 * S + 77
    data = seeded_bytes(size, 120)
    fault_origin.set_object("w.bin", data, chunk_size=16384, chunk_delay=0.005)
    proxy = proxy_factory(fault_origin.url, workers=2, readahead_slices=0, block_size=S)
    await all_workers_listening(proxy)
    workers = children_of(proxy.pid)
    assert len(workers) == 2, workers

    outs = await on_new_connections(proxy.url_for("w.bin"), 40, [{}, {"Range": f"bytes=0-{size - 1}"}])
    assert all(b == data for _, b in outs) and {st for st, _ in outs} == {200, 206}
    assert fault_origin.count_slice_fetches("w.bin", S) == {i: 1 for i in range(9)}


async def test_purge_in_one_worker_reaches_the_others(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    v1, v2 = seeded_bytes(3 * S, 121), seeded_bytes(3 * S, 122)
    fault_origin.set_object("p.bin", v1, cache_control="max-age=3600")
    proxy = proxy_factory(fault_origin.url, workers=2, admin_token="t0ken", default_ttl=3600)
    await all_workers_listening(proxy)
    url = proxy.url_for("p.bin")
    outs = await on_new_connections(url, 20, [{}])
    assert all(b == v1 for _, b in outs)
    fault_origin.set_object("p.bin", v2, cache_control="max-age=3600")
    out = await fetch(http, proxy.url + "/_cache/p.bin", method="DELETE", headers={"Authorization": "Bearer t0ken"})
    assert out.status == 200
    await asyncio.sleep(0.5)  # the other worker reads the invalidation log every 0.2 s
    outs = await on_new_connections(url, 20, [{}])
    assert all(b == v2 for _, b in outs), "a worker kept serving the purged version"


async def test_a_killed_worker_is_replaced_and_sigterm_stops_all(fault_origin: FaultOrigin, proxy_factory) -> None:
    data = seeded_bytes(2 * S, 123)
    fault_origin.set_object("k.bin", data)
    proxy = proxy_factory(fault_origin.url, workers=2)
    await all_workers_listening(proxy)
    first = children_of(proxy.pid)
    os.kill(first[0], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = children_of(proxy.pid)
        if len(now) == 2 and first[0] not in now:
            break
        await asyncio.sleep(0.1)
    assert len(children_of(proxy.pid)) == 2 and first[0] not in children_of(proxy.pid)
    await all_workers_listening(proxy)
    outs = await on_new_connections(proxy.url_for("k.bin"), 10, [{}])
    assert all(b == data for _, b in outs)
    proxy.stop()  # SIGTERM to the supervisor: exit 0 (checked by stop())


async def test_workers_refuse_a_port_another_program_holds(fault_origin: FaultOrigin, tmp_path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "proxy", "--upstream", fault_origin.url, "--port", str(port),
                              "--cache-dir", str(tmp_path / "c"), "--set", "workers=2"],
                             capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "cannot listen" in out.stderr, out.stderr
