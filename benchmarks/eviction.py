"""Workload "eviction": hits while new objects force eviction from a full cache.

A store of N objects (``--eviction-objects``, default 20,000; the catalogue's shape options
apply: ``--catalogue-object-size`` etc.) is served by a proxy whose ``cache_size`` is the
store's volume as built, so the cache is full from the first write on. wrk asks for random
ranges of a hot set of the first 10,000 objects (warmed first, so the LRU keeps them), in two
phases of ``--duration`` seconds each:

1. hits only;
2. the same hits while writer threads ask for objects the cache has never seen (from a small
   aiohttp origin), one after the other: each is a fill, a write, and a cull of as much.

Each phase reports the hits' req/s and server CPU per request, and the latency of a /healthz
probe sent every 20 ms on its own connection: a cull that held the event loop would show
there as a stall (its maximum). Phase 2 also reports the objects written, the entries evicted
(``rangeproxy_cache_evictions_total``) and the store's volume against cache_size.

With a million entries: ``--only eviction --eviction-objects 1000000 --catalogue-object-size
4096 --catalogue-range 1024 --catalogue-dir DIR``. The store is kept in DIR with the origin
port its keys name; the next run reuses it (evicted into, it is still a full cache) when that
port is free. The phases start once the proxy's file index and metadata are loaded.

``python -m benchmarks --only eviction [--eviction-objects 20000]``
"""

from __future__ import annotations

import http.client
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .catalogue import _INDEXED, _PRELOADED, LUA, check_bytes, logged, proxy_for, store_for
from .harness import RunResult, Server, Tools, free_port, med, timed_run
from .rig import TableReport, _cpu_pin, md_table

NAME = "eviction"
HOT = 10_000
PROBE_INTERVAL = 0.02
WRITERS = 2

ORIGIN_APP = r"""
import hashlib, re, sys
import uvloop
from aiohttp import web
SIZE = int(sys.argv[2])
RANGE = re.compile(r"bytes=(\d+)-(\d+)")
def body(i):
    seed = hashlib.sha256(str(i).encode()).digest()
    return (seed * (SIZE // len(seed) + 1))[:SIZE]
async def handle(request):
    i = int(request.match_info["i"])
    data = body(i)
    headers = {"ETag": f'"o{i}"', "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
               "Cache-Control": "max-age=2592000"}
    m = RANGE.fullmatch(request.headers.get("Range", ""))
    if not m:
        return web.Response(body=data, headers=headers)
    a, b = int(m[1]), min(int(m[2]), SIZE - 1)
    headers["Content-Range"] = f"bytes {a}-{b}/{SIZE}"
    return web.Response(status=206, body=data[a:b + 1], headers=headers)
async def health(request):
    return web.Response(text="ok")
app = web.Application()
app.router.add_get("/healthz", health)
app.router.add_get("/o/{i}.bin", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
            loop=uvloop.new_event_loop())
"""


def kept_port(opts: Any, tmp: Path, n: int) -> int | None:
    """The origin port a kept store of this shape was built for, if that port is free.

    A kept store has been evicted into by the run before: still a full cache of about N
    objects, the hot set kept by its LRU."""
    import json
    import socket

    tag = f"cache-{n}-{opts.catalogue_object_size}-{opts.catalogue_slice_size}-evict"
    try:
        shape = json.loads(((opts.catalogue_dir or tmp) / tag / "built.json").read_text())
        port = int(shape["upstream"].rsplit(":", 1)[1])
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
        return port
    except (OSError, ValueError, KeyError):
        return None


def add_arguments(p: Any) -> None:
    p.add_argument("--eviction-objects", type=int,
                   help="objects in the full store of the eviction workload (default 1000000; --quick: 20000)")


class Probe(threading.Thread):
    """GET /healthz every PROBE_INTERVAL on one connection; the latencies, in ms."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.lat, self.stop = port, [], threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stop.is_set():
            t0 = time.perf_counter()
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            self.lat.append((time.perf_counter() - t0) * 1000)
            time.sleep(PROBE_INTERVAL)
        conn.close()


class Writer(threading.Thread):
    """Ask for never-seen objects one after the other (misses: fills that force eviction)."""

    def __init__(self, port: int, first: int, step: int, rng: int) -> None:
        super().__init__(daemon=True)
        self.port, self.next, self.step, self.rng = port, first, step, rng
        self.done, self.errors, self.stop = 0, 0, threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stop.is_set():
            conn.request("GET", f"/o/{self.next}.bin", headers={"Range": f"bytes=0-{self.rng - 1}"})
            resp = conn.getresponse()
            resp.read()
            if resp.status == 206:
                self.done += 1
            else:
                self.errors += 1
            self.next += self.step
        conn.close()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def metric(port: int, name: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def run(opts: Any, tools: Tools, tmp: Path) -> list[TableReport]:
    import diskcache

    tmp.mkdir(parents=True, exist_ok=True)
    n, size = opts.eviction_objects, opts.catalogue_object_size
    rng = min(opts.catalogue_range, size)
    oport = kept_port(opts, tmp, n) or free_port()
    upstream = f"http://127.0.0.1:{oport}"  # the keys name the origin: the store is built for this one
    cache, took = store_for(opts, tmp, n, upstream)
    with diskcache.Cache(str(cache)) as dc:
        limit = dc.volume()
    print(f"bench[{NAME}]: {n:,} objects ({'built in %.0f s' % took if took else 'kept'}), "
          f"cache_size {limit:,} bytes", flush=True)
    script = tmp / "origin_app.py"
    script.write_text(ORIGIN_APP)
    origin = Server(key="origin", label="origin", argv=[sys.executable, str(script), str(oport), str(size)],
                    port=oport, log_path=tmp / "origin.log")
    proxy = proxy_for(cache, tmp, tools, opts, f"proxy-{n}", upstream=upstream,
                      cache_size=str(limit))
    lua = tmp / "hot.lua"
    lua.write_text(LUA % {"objects": min(HOT, n), "size": size, "range": rng})
    pin = _cpu_pin(tools, opts.wrk_cpu)
    url = f"http://127.0.0.1:{proxy.port}"
    phases: dict[str, tuple[RunResult, list[float]]] = {}
    wrote = evicted = 0.0
    errors = 0
    volume = 0
    try:
        origin.start()
        origin.wait_healthy()
        proxy.start()
        proxy.wait_healthy(timeout=1800)
        logged(proxy, _INDEXED)  # the file index is loaded in the background: measure after it
        logged(proxy, _PRELOADED)
        check_bytes(proxy, min(HOT, n), size)
        check_bytes(proxy, 2 * n + 1, size, hit=False)  # the origin answers what the store holds
        # Warm the hot set past one LRU flush, so the cull takes the others.
        timed_run(proxy, tools.wrk, url, lua, round_no=0, duration=max(6, opts.warmup), connections=32,
                  threads=1, pin=pin)
        for phase in ("hits only", "hits + writes forcing eviction"):
            probe = Probe(proxy.port)
            writers = [Writer(proxy.port, n + k, WRITERS, rng) for k in range(WRITERS)] if "writes" in phase else []
            e0 = metric(proxy.port, "rangeproxy_cache_evictions_total")
            probe.start()
            for w in writers:
                w.start()
            res = timed_run(proxy, tools.wrk, url, lua, round_no=1, duration=opts.duration, connections=32,
                            threads=1, pin=pin)
            for t in (probe, *writers):
                t.stop.set()
            for t in (probe, *writers):
                t.join(30)
            phases[phase] = (res, probe.lat)
            if writers:
                wrote = sum(w.done for w in writers) / res.wrk.duration_s
                errors = sum(w.errors for w in writers)
                evicted = (metric(proxy.port, "rangeproxy_cache_evictions_total") - e0) / res.wrk.duration_s
            print(f"bench[{NAME}]: {phase}: {res.wrk.rps:,.0f} req/s, probe p99 {pct(probe.lat, 0.99):.1f} ms "
                  f"max {max(probe.lat, default=0):.1f} ms {res.invalid}", flush=True)
        with diskcache.Cache(str(cache)) as dc:
            volume = dc.volume()
    finally:
        proxy.stop()
        origin.stop()
    rows = []
    for phase, (res, lat) in phases.items():
        writes = "writes" in phase
        rows.append([phase, f"{res.wrk.rps:,.0f}", f"{res.cpu_us_per_req:.0f}",
                     f"{med(lat):.1f} / {pct(lat, 0.99):.1f} / {max(lat, default=float('nan')):.1f}",
                     f"{wrote:,.0f}" if writes else "", f"{evicted:,.0f}" if writes else "",
                     f"{errors}" if writes else ""])
    table = md_table(["phase", "hit req/s", "server CPU µs/req", "/healthz probe ms p50 / p99 / max",
                      "objects written /s", "entries evicted /s", "writer errors"], rows)
    params = (f"a full cache of {n:,} objects of {size} bytes (cache_size = its volume, {limit:,} bytes); wrk -t1 "
              f"-c32 random {rng}-byte ranges of the {min(HOT, n):,} hottest, {WRITERS} writer threads asking for new "
              f"objects; {opts.duration} s a phase; volume after: {volume:,} bytes "
              f"({'within' if volume <= limit else 'OVER'} cache_size)")
    ok = all(r.valid for r, _ in phases.values()) and len(phases) == 2
    return [TableReport(NAME, "Eviction under a full cache", params, table, ok=ok)]
