"""A node of a fleet behind a consistent-hash balancer (proxy.core.node): it names itself in every
response and in /stats.json, and on SIGTERM it drains (serving on, /healthz 503) before it stops.
Real proxy subprocess, real fault origin on loopback."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess

import aiohttp
import pytest

from tests.support.cachedir import until
from tests.support.client import fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.servers import DEFAULT_SLICE, ProxyProc

pytestmark = pytest.mark.integration

S = DEFAULT_SLICE
NODE = "edge-7.test"
DRAIN = 6  # seconds: room for the requests each drain test makes inside it, on a loaded machine
DRAINING = f"draining for {DRAIN} s"  # what each process logs as its drain begins


async def fresh(url: str) -> tuple[int, dict[str, str], bytes]:
    """One GET on a new connection (a new accept; with workers, any of them may take it)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        out = await fetch(s, url)
    assert out.complete, out.error
    return out.status, dict(out.headers), out.body


async def draining_health(proxy: ProxyProc) -> None:
    status, headers, body = await fresh(proxy.url + "/healthz")
    assert status == 503 and headers["Cache-Control"] == "no-store"
    assert json.loads(body) == {"status": "draining", "cache": {"writable": True, "reason": None, "since": None}}


async def exits_0(proxy: ProxyProc, timeout: float = 60.0) -> None:
    """The process ends by itself (drain, then the graceful stop) with 0."""
    try:
        rc = await asyncio.get_running_loop().run_in_executor(None, proxy.proc.wait, timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {timeout} s after SIGTERM:\n{proxy.stderr_text()[-3000:]}") from None
    assert rc == 0, proxy.stderr_text()[-3000:]


async def test_every_answer_names_the_node(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = seeded_bytes(2 * S, 71)
    fault_origin.set_object("n.bin", data, cache_control="max-age=600")
    proxy = proxy_factory(fault_origin.url, node_name=NODE, readahead_slices=0)
    miss = await fetch(http, proxy.url_for("n.bin"))
    hit = await fetch(http, proxy.url_for("n.bin"))
    assert (miss.status, miss.headers["X-Cache"], hit.status, hit.headers["X-Cache"]) == (200, "MISS", 200, "HIT")
    assert miss.body == hit.body == data
    missing = await fetch(http, proxy.url_for("nowhere.bin"))  # the origin's 404, passed on
    assert missing.status == 404
    health = await fetch(http, proxy.url + "/healthz")
    assert health.status == 200 and json.loads(health.body)["status"] == "ok"
    stats = await fetch(http, proxy.url + "/stats.json")
    page = await fetch(http, proxy.url + "/stats")
    for out in (miss, hit, missing, health, stats, page):
        assert out.headers.getall("X-Cache-Node") == [NODE]
    assert json.loads(stats.body)["node"] == NODE
    assert '<b id="node">' in page.body.decode()


async def test_the_node_name_defaults_to_the_host_name(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    import socket

    proxy = proxy_factory(fault_origin.url)
    stats = await fetch(http, proxy.url + "/stats.json")
    assert json.loads(stats.body)["node"] == socket.gethostname() == stats.headers["X-Cache-Node"]


async def test_sigterm_drains_then_stops(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = seeded_bytes(3 * S + 9, 72)
    fault_origin.set_object("d.bin", data, cache_control="max-age=600")
    proxy = proxy_factory(fault_origin.url, drain_period=DRAIN, grace_period=5, node_name=NODE)
    assert (await fresh(proxy.url_for("d.bin")))[2] == data
    proxy.proc.send_signal(signal.SIGTERM)
    await until(lambda: DRAINING in proxy.stderr_text(), "the drain logged")
    await draining_health(proxy)
    # Still accepting and serving: a cached object, one not fetched yet, on new connections.
    for name in ("d.bin", "e.bin"):
        fault_origin.set_object("e.bin", data[:S], cache_control="max-age=600")
        status, headers, body = await fresh(proxy.url_for(name))
        assert status == 200 and headers["X-Cache-Node"] == NODE
        assert body == (data if name == "d.bin" else data[:S])
    out = await fetch(http, proxy.url + "/healthz", method="HEAD")
    assert out.status == 503 and out.body == b""
    await exits_0(proxy)


async def test_without_a_drain_period_sigterm_stops_at_once(fault_origin: FaultOrigin, proxy_factory) -> None:
    proxy = proxy_factory(fault_origin.url)
    proxy.proc.send_signal(signal.SIGTERM)
    await exits_0(proxy)
    assert "draining" not in proxy.stderr_text()


async def test_each_worker_drains(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = seeded_bytes(2 * S, 73)
    fault_origin.set_object("w.bin", data, cache_control="max-age=600")
    proxy = proxy_factory(fault_origin.url, workers=2, drain_period=DRAIN, grace_period=5, node_name=NODE)

    async def both_reporting() -> bool:
        out = await fetch(http, proxy.url + "/stats.json")
        return out.status == 200 and json.loads(out.body)["workers"]["reporting"] == 2

    for _ in range(600):  # both workers up (each publishes once its signal handlers are in place)
        if await both_reporting():
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the two workers did not both report within 30 s")
    await http.close()  # no kept-alive connection to one worker
    proxy.proc.send_signal(signal.SIGTERM)  # to the supervisor, which passes it on
    await until(lambda: proxy.stderr_text().count(DRAINING) == 2, "both workers' drains logged")
    for _ in range(4):  # new connections: the kernel spreads them over both workers
        await draining_health(proxy)
        status, headers, body = await fresh(proxy.url_for("w.bin"))
        assert (status, body, headers["X-Cache-Node"]) == (200, data, NODE)
    await exits_0(proxy)
