"""Shared pieces of the cache workloads (``proxy``, ``figures``, ``slice-sweep``).

The rig: the demo origin (``python -m appserver --server aiohttp``) behind a
counting relay (``benchmarks/relay.py``), and the caches under test in front of
the relay: rangeproxy (``python -m proxy``) and nginx as a slice cache. Both
caches reach the origin through the same relay, so "bytes the origin sent" is
one meter for both (the proxy's own ``/metrics`` is read as a cross-check).

CPU placement on a 2-core machine: the cache under test runs alone on
``--server-cpu`` (0); wrk, the one-shot clients of this harness, the origin and
the relay share ``--wrk-cpu`` (1) (``--origin-cpu`` moves the origin and relay;
-1 leaves them unpinned). The origin is idle during the warm workloads; during
the cold ones it competes with the client, the same way for every target.

Process management, wrk and CPU accounting come from ``harness.py``; this module
adds the servers, the relay's counters, ``/metrics`` scraping, the one-shot measurements and an alternating driver for servers that stay up
across several workloads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import statistics
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from . import origin as origin_mod
from .harness import (
    CLK_TCK,
    KIB,
    MIB,
    BenchError,
    Server,
    Tools,
    WorkloadReport,
    fmt,
    free_port,
    make_file,
    med,
    other_cpu_s,
    pin_prefix,
    process_tree,
    time_rounds,
    user_process_ticks,
    workload_report,
)
from .httpclient import Connection, burst, pinned

# --- options --------------------------------------------------------------------------


def add_arguments(p, parse_size: Callable[[str], int]) -> None:
    g = p.add_argument_group("cache workloads (proxy, figures, slice-sweep)")
    g.add_argument("--object-size", type=parse_size,
                   help="the big object of w1, w2, w5, w5b, collapsing, read-ahead, RSS "
                        "(default 256M; quick 32M)")
    g.add_argument("--huge-size", type=parse_size,
                   help="object of the RSS figure for issue 3 (default 300M; quick 32M)")
    g.add_argument("--rss-seconds", type=int, help="duration of the RSS run (default 30; quick 5)")
    g.add_argument("--rss-connections", type=int, default=1000,
                   help="wrk -c of the RSS run (default 1000)")
    g.add_argument("--origin-delay-ms", type=float, default=50.0,
                   help="origin latency per request in the read-ahead run (default 50)")
    g.add_argument("--reader-pause-ms", type=float, default=100.0,
                   help="pause between slices of the paced sequential reader (default 100)")
    g.add_argument("--origin-cpu", type=int,
                   help="CPU for the origin and the relay (default: --wrk-cpu; -1: unpinned)")


def resolve(opts) -> None:
    q = opts.quick
    if opts.object_size is None:
        opts.object_size = 32 * MIB if q else 256 * MIB
    if opts.huge_size is None:
        opts.huge_size = 32 * MIB if q else 300 * MIB
    if opts.rss_seconds is None:
        opts.rss_seconds = 5 if q else 30
    if opts.object_size < 2 * MIB:
        raise SystemExit("error: --object-size must be at least 2M")
    if opts.origin_cpu is None:
        opts.origin_cpu = opts.wrk_cpu
    elif opts.origin_cpu < 0:
        opts.origin_cpu = None


# --- markdown ---------------------------------------------------------------------------


def md_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def mmm(xs: Iterable[float], spec: str = ".2f", scale: float = 1.0) -> str:
    """'median (min–max)'."""
    xs = [x * scale for x in xs if x == x]
    if not xs:
        return "n/a"
    return f"{format(statistics.median(xs), spec)} ({format(min(xs), spec)}–{format(max(xs), spec)})"


@dataclasses.dataclass
class TableReport:
    """A report that is not a wrk summary: its own markdown (see __main__.render)."""

    name: str
    title: str
    params: str
    table: str
    notes: list[str] = dataclasses.field(default_factory=list)
    details: str = ""
    ok: bool = True

    def markdown(self, details: bool) -> str:
        parts = [f"### {self.title}", ""]
        if self.params:
            parts += [self.params, ""]
        parts += [self.table, ""]
        parts += [*self.notes, ""] if self.notes else []
        if details and self.details:
            parts += ["<details><summary>every run</summary>", "", self.details, "", "</details>", ""]
        return "\n".join(parts)


# --- servers ----------------------------------------------------------------------------


@dataclasses.dataclass
class Relay(Server):
    """The counting relay; ``port`` is its control port, ``data_port`` the relayed one."""

    data_port: int = 0

    def _get(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
            return json.loads(r.read())

    def counts(self) -> dict:
        return self._get("/counts")

    def log(self, since: int) -> list[list]:
        """Requests the origin got from the ``since``-th on: [time, method, target, Range]."""
        return self._get(f"/log?since={since}")["entries"]

    def set_delay(self, ms: float) -> None:
        self._get(f"/set?delay_ms={ms:g}")

    def settle(self, quiet: float = 0.3, limit: float = 15.0) -> dict:
        """Counts once the origin has sent nothing for ``quiet`` seconds (background
        fills and read-ahead included), or after ``limit`` seconds."""
        end = time.monotonic() + limit
        last = self.counts()
        still = time.monotonic()
        while time.monotonic() < end:
            time.sleep(0.05)
            now = self.counts()
            if (now["body_bytes"], now["requests"]) != (last["body_bytes"], last["requests"]):
                last, still = now, time.monotonic()
            elif time.monotonic() - still >= quiet:
                return now
        return last


def _cpu_pin(tools: Tools, cpu: int | None) -> list[str]:
    return pin_prefix(tools.taskset, cpu)


def origin_server(media: Path, tmp: Path, tools: Tools, opts) -> Server:
    s = origin_mod.appserver("aiohttp", "origin appserver (aiohttp)", media, tmp,
                             _cpu_pin(tools, opts.origin_cpu))
    s.key = "origin"
    return s


def relay_server(upstream_port: int, tmp: Path, tools: Tools, opts) -> Relay:
    data, ctl = free_port(), free_port()
    argv = [*_cpu_pin(tools, opts.origin_cpu), sys.executable, "-m", "benchmarks.relay",
            "--port", str(data), "--upstream-port", str(upstream_port), "--control-port", str(ctl)]
    return Relay(key="relay", label="counting relay", argv=argv, port=ctl, data_port=data,
                 log_path=tmp / "relay.log", env=origin_mod._python_env())


def proxy_server(key: str, label: str, upstream_port: int, tmp: Path, tools: Tools, opts, *,
                 slice_size: str = "1MiB", settings: dict[str, str] | None = None) -> Server:
    port = free_port()
    cache = tmp / f"cache-{key}"
    argv = [*_cpu_pin(tools, opts.server_cpu), sys.executable, "-m", "proxy",
            "--upstream", f"http://127.0.0.1:{upstream_port}", "--host", "127.0.0.1",
            "--port", str(port), "--cache-dir", str(cache), "--slice-size", slice_size,
            # nginx keeps slices 1h (proxy_cache_valid); the same freshness here, so no
            # revalidation falls into a timed run. The cache limit holds every object written.
            "--set", "access_log=false", "--set", "default_ttl=1h", "--set", "cache_size=64GiB"]
    for k, v in (settings or {}).items():
        argv += ["--set", f"{k}={v}"]
    return Server(key=key, label=label, argv=argv, port=port, log_path=tmp / f"{key}.log",
                  env=origin_mod._python_env())


def is_rangeproxy(s: Server) -> bool:
    return "-m" in s.argv and s.argv[s.argv.index("-m") + 1] == "proxy"


NGINX_CACHE_CONF = """\
# Generated by benchmarks/rig.py: nginx as a slice cache (the issue 6 reference).
daemon off;
master_process on;
worker_processes 1;
{user}pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;

events {{
    worker_connections 8192;
}}

http {{
    access_log off;
    sendfile on;
    # tcp_nopush is off by default (as in the issue's reference): with it, a 64 KiB answer
    # assembled by the slice module waits ~40 ms on the cork (w1: 2-10k req/s, not 30k),
    # but large answers go faster (w2: about +45%). benchmarks/proxy.py runs both.
{nopush}    keepalive_requests 1000000;
    keepalive_timeout 75s;
    default_type application/octet-stream;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    proxy_cache_path {d}/cache levels=1:2 keys_zone=slices:64m max_size=64g inactive=1d
                     use_temp_path=off;

    upstream origin {{
        server 127.0.0.1:{upstream};
        keepalive 64;
    }}

    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /healthz {{
            return 200 "ok\\n";
        }}
        location / {{
            slice 1m;
            proxy_cache slices;
            proxy_cache_key $uri$is_args$args$slice_range;
            proxy_set_header Range $slice_range;
            proxy_cache_valid 200 206 1h;
            proxy_cache_lock on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://origin;
        }}
    }}
}}
"""


def nginx_cache_server(key: str, label: str, upstream_port: int, tmp: Path, tools: Tools, opts,
                       tcp_nopush: bool = False) -> Server:
    port = free_port()
    d = tmp / key
    d.mkdir(parents=True, exist_ok=True)
    conf = d / "nginx.conf"
    # As root the worker would switch to "nobody", which cannot enter the private temp dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CACHE_CONF.format(d=d, port=port, upstream=upstream_port, user=user,
                                            nopush="    tcp_nopush on;\n" if tcp_nopush else ""))
    argv = [*_cpu_pin(tools, opts.server_cpu), tools.nginx, "-p", str(d), "-e",
            str(d / "nginx-error.log"), "-c", str(conf)]
    return Server(key=key, label=label, argv=argv, port=port, log_path=d / "stdout.log", cwd=d)


def nginx_static_server(media: Path, tmp: Path, tools: Tools, opts) -> Server:
    s = origin_mod.nginx(tools.nginx, media, tmp / "nginx-static", _cpu_pin(tools, opts.server_cpu))
    s.key = "nginx-static"
    s.label = "origin nginx (static file)"
    return s


class Fleet:
    """Servers started together and stopped together (reverse order), whatever happens."""

    def __init__(self, opts) -> None:
        self.opts = opts
        self.servers: list[Server] = []

    def start(self, *servers: Server) -> None:
        for s in servers:
            self.servers.append(s)
            s.start()
        for s in servers:
            s.wait_healthy(timeout=self.opts.start_timeout)

    def stop(self, *servers: Server) -> None:
        for s in servers:
            s.stop()
            if s in self.servers:
                self.servers.remove(s)

    def pids(self) -> list[int]:
        out = [os.getpid()]
        for s in self.servers:
            if s.proc is not None:
                out += process_tree(s.proc.pid)
        return out

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc: object) -> None:
        for s in reversed(self.servers):
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001 - keep stopping the others
                print(f"bench: stopping {s.label}: {e}", file=sys.stderr)
        self.servers.clear()


@contextmanager
def cache_rig(opts, tools: Tools, tmp: Path) -> Iterator[tuple[Fleet, Relay]]:
    """The origin (serving ``tmp/media``, whose files must exist) behind the counting
    relay, in a Fleet that stops every server started in it on leaving."""
    with Fleet(opts) as fleet:
        org = origin_server(tmp / "media", tmp, tools, opts)
        fleet.start(org)
        relay = relay_server(org.port, tmp, tools, opts)
        fleet.start(relay)
        yield fleet, relay


def proxy_and_nginx(relay: Relay, tmp: Path, tools: Tools, opts) -> list[Server]:
    """rangeproxy and nginx as a slice cache in front of ``relay`` (not started)."""
    return [proxy_server("proxy", "rangeproxy", relay.data_port, tmp, tools, opts),
            nginx_cache_server("nginx", "nginx slice cache", relay.data_port, tmp, tools, opts)]


@contextmanager
def cache_pair(opts, tools: Tools, tmp: Path) -> Iterator[tuple[bytes, Fleet, Relay, list[Server]]]:
    """The big object (``--object-size``), the rig and [rangeproxy, nginx] started in front of it."""
    big = make_file(tmp / "media" / "big.bin", opts.object_size, opts.seed)
    with cache_rig(opts, tools, tmp) as (fleet, relay):
        caches = proxy_and_nginx(relay, tmp, tools, opts)
        fleet.start(*caches)
        yield big, fleet, relay, caches


# --- metrics ------------------------------------------------------------------------------


def scrape(port: int) -> dict[str, float]:
    """The proxy's /metrics as {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, val = line.rpartition(" ")
        try:
            out[key] = float(val)
        except ValueError:
            continue
    return out


def msum(m: dict[str, float], name: str, label: str = "") -> float:
    return sum(v for k, v in m.items()
               if (k == name or k.startswith(name + "{")) and label in k)


def proxy_counters(port: int) -> dict[str, float]:
    m = scrape(port)
    return {
        "upstream_requests": msum(m, "rangeproxy_upstream_requests_total"),
        "upstream_bytes": msum(m, "rangeproxy_upstream_bytes_total"),
        "miss": msum(m, "rangeproxy_slice_lookups_total", 'result="miss"'),
        "collapsed": msum(m, "rangeproxy_slice_lookups_total", 'result="collapsed"'),
        "hit": msum(m, "rangeproxy_slice_lookups_total", 'result="hit"'),
        "read_ahead_runs": msum(m, "rangeproxy_read_ahead_runs_total"),
    }


# --- the alternating wrk driver for servers that stay up ------------------------------------


def alternate(servers: list[Server], *, tools: Tools, opts, url_path: str, script: Path, name: str,
              title: str, params: str, baseline: str, relay: Relay | None = None) -> WorkloadReport:
    """Time ``servers`` (already running and warm) A B A B ... like
    ``harness.run_alternating``, without starting or stopping them, and note the
    origin traffic each target caused during its timed runs (0 when warm)."""
    origin_bytes = {s.key: 0 for s in servers}

    @contextmanager
    def count_origin(s: Server) -> Iterator[None]:
        assert relay is not None
        c0 = relay.counts()["body_bytes"]
        yield
        origin_bytes[s.key] += relay.counts()["body_bytes"] - c0

    results, notes = time_rounds(servers, tools=tools, opts=opts, url_path=url_path, script=script,
                                 name=name, on_run=count_origin if relay else None)
    if relay:
        notes.append("Origin body bytes during the timed runs (0 = served from cache): " + ", ".join(
            f"{s.label} {origin_bytes[s.key]:,}" for s in servers) + ".")
        for s in servers:
            if origin_bytes[s.key]:
                notes.append(f"WARNING: {s.label} fetched {origin_bytes[s.key]:,} bytes from the origin "
                             "during its timed runs although every object had been read whole through "
                             "it: not a warm-cache measurement.")
    return workload_report(servers, results, notes, name=name, title=title, params=params,
                           baseline=baseline)


# --- one-shot measurements ------------------------------------------------------------------


@dataclasses.dataclass
class Shot:
    """One timed client action against one target, with what the origin sent meanwhile."""

    target: str
    round: int
    seconds: float = float("nan")
    ttfb: float = float("nan")
    served: int = 0  # body bytes the client received
    origin_bytes: int = 0  # body bytes the origin sent (relay)
    origin_requests: int = 0  # requests the origin got (relay)
    server_cpu_s: float = 0.0
    other_cpu_pct: float = 0.0
    correct: bool = True
    proxy: dict[str, float] | None = None  # deltas of the proxy's own counters
    origin_log: list = dataclasses.field(default_factory=list)  # [time, method, target, Range]
    extra: dict = dataclasses.field(default_factory=dict)


def shot(fleet: Fleet, server: Server, relay: Relay, rnd: int, cpu: int | None,
         action: Callable[[Shot], None]) -> Shot:
    """Run ``action`` (the client side) pinned to ``cpu`` and account for it."""
    sh = Shot(target=server.key, round=rnd)
    p0 = proxy_counters(server.port) if is_rangeproxy(server) else None
    c0 = relay.settle(quiet=0.2, limit=5)
    u0 = user_process_ticks()
    t0 = server.cpu_ticks()
    w0 = time.monotonic()
    with pinned(cpu):
        action(sh)
    c1 = relay.settle()
    t1 = server.cpu_ticks()
    u1 = user_process_ticks()
    wall = time.monotonic() - w0
    sh.origin_bytes = c1["body_bytes"] - c0["body_bytes"]
    sh.origin_log = relay.log(c0["requests"])[: c1["requests"] - c0["requests"]]
    sh.origin_requests = c1["requests"] - c0["requests"]
    sh.server_cpu_s = (t1 - t0) / CLK_TCK
    sh.other_cpu_pct = 100 * other_cpu_s(u0, u1, fleet.pids()) / wall if wall > 0 else float("nan")
    if p0 is not None:
        p1 = proxy_counters(server.port)
        sh.proxy = {k: p1[k] - p0[k] for k in p1}
    return sh


def origin_spans(log: list[list], size: int) -> list[tuple[int, int]]:
    """Byte spans the origin was asked for (a request without Range: the whole object)."""
    out = []
    for _, method, _, rng in log:
        if method != "GET":
            continue
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.replace(" ", ""))
        if not rng or not m:
            out.append((0, size - 1))
            continue
        a, b = m.groups()
        if a == "":
            out.append((max(0, size - int(b)), size - 1))
        else:
            out.append((int(a), min(size - 1, int(b)) if b else size - 1))
    return out


def cold_full_get(fleet: Fleet, servers: list[Server], relay: Relay, opts, data: bytes, url: str,
                  tag: str, rounds: int) -> list[Shot]:
    """w5: GET a cold object (a fresh query string each time) whole; time to last byte."""
    shots = []
    for rnd in range(1, rounds + 1):
        for s in servers:
            def act(sh: Shot, s=s, rnd=rnd) -> None:
                with Connection(s.port) as c:
                    r = c.get(f"{url}?{tag}={rnd}")
                sh.seconds, sh.ttfb, sh.served = r.total, r.ttfb, len(r.body)
                sh.correct = r.status == 200 and r.body == data
                sh.extra["status"] = r.status
            sh = shot(fleet, s, relay, rnd, opts.wrk_cpu, act)
            shots.append(sh)
            print(f"bench[{tag}]: round {rnd} {s.label}: {sh.seconds:.3f} s, origin "
                  f"{sh.origin_bytes / len(data):.3f}x in {sh.origin_requests} requests"
                  + ("" if sh.correct else "  WRONG BYTES"), file=sys.stderr)
    return shots


def random_ranges(size: int, length: int, count: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(a, a + length - 1) for a in (rng.randrange(0, size - length + 1) for _ in range(count))]


def cold_random_ranges(fleet: Fleet, servers: list[Server], relay: Relay, opts, data: bytes, url: str,
                       tag: str, rounds: int, *, count: int = 32, length: int = 64 * KIB) -> list[Shot]:
    """w5b: ``count`` random ``length``-byte ranges (fixed seed) of a cold object, one
    after the other on one connection; origin bytes / served bytes."""
    ranges = random_ranges(len(data), length, count, opts.seed)
    shots = []
    for rnd in range(1, rounds + 1):
        for s in servers:
            def act(sh: Shot, s=s, rnd=rnd) -> None:
                ok = True
                t0 = time.monotonic()
                lat = []
                with Connection(s.port) as c:
                    for a, b in ranges:
                        r = c.get(f"{url}?{tag}={rnd}", {"Range": f"bytes={a}-{b}"})
                        lat.append(r.total)
                        sh.served += len(r.body)
                        ok &= (r.status == 206 and r.body == data[a:b + 1]
                               and r.headers.get("content-range") == f"bytes {a}-{b}/{len(data)}")
                sh.seconds = time.monotonic() - t0
                sh.correct = ok
                sh.extra["lat_med_ms"] = med(lat) * 1e3
            sh = shot(fleet, s, relay, rnd, opts.wrk_cpu, act)
            # Origin requests overlapping none of the ranges asked for: read-ahead.
            spec = [(x, y) for x, y in origin_spans(sh.origin_log, len(data))
                    if not any(x <= b and y >= a for a, b in ranges)]
            sh.extra["speculative_bytes"] = sum(y - x + 1 for x, y in spec)
            sh.extra["speculative_requests"] = len(spec)
            shots.append(sh)
            print(f"bench[{tag}]: round {rnd} {s.label}: origin/served "
                  f"{sh.origin_bytes / max(1, sh.served):.2f}x ({sh.origin_requests} requests)"
                  + ("" if sh.correct else "  WRONG BYTES"), file=sys.stderr)
    return shots


def collapse(fleet: Fleet, servers: list[Server], relay: Relay, opts, data: bytes, url: str, tag: str,
             rounds: int, *, n: int = 50, length: int = 8 * MIB, slice_size: int = MIB) -> list[Shot]:
    """``n`` concurrent cold requests for the same range: origin fetches per slice and
    how long after the leader's first byte the waiters got theirs."""
    length = min(length, len(data) // 2)
    start = min(3 * MIB + 4321, len(data) - length)
    a, b = start, start + length - 1
    slices = b // slice_size - a // slice_size + 1
    shots = []
    for rnd in range(1, rounds + 1):
        for s in servers:
            def act(sh: Shot, s=s, rnd=rnd) -> None:
                r = burst(s.port, f"{url}?{tag}={rnd}", {"Range": f"bytes={a}-{b}"}, data[a:b + 1], n)
                firsts = sorted(r.firsts)
                lead = firsts[0]
                waits = [(f - lead) * 1e3 for f in firsts[1:]]
                sh.seconds = max(r.dones) - r.sent
                sh.ttfb = lead - r.sent
                sh.served = n * length
                sh.correct = all(r.correct) and all(st == 206 for st in r.statuses)
                sh.extra.update(wait_med_ms=med(waits), wait_max_ms=max(waits) if waits else 0.0,
                                wait_p90_ms=sorted(waits)[int(0.9 * (len(waits) - 1))] if waits else 0.0,
                                slices=slices)
            sh = shot(fleet, s, relay, rnd, opts.wrk_cpu, act)
            # How many origin requests covered each slice of the range, and which
            # slices beyond it were fetched too (read-ahead).
            spans = origin_spans(sh.origin_log, len(data))
            mine = range(a // slice_size, b // slice_size + 1)
            per = [sum(1 for x, y in spans if x < (k + 1) * slice_size and y >= k * slice_size)
                   for k in mine]
            beyond = {k for x, y in spans for k in range(x // slice_size, y // slice_size + 1)} - set(mine)
            sh.extra.update(fetches_per_slice=statistics.mean(per), fetches_per_slice_max=max(per),
                            slices_beyond=len(beyond))
            shots.append(sh)
            print(f"bench[{tag}]: round {rnd} {s.label}: {sh.origin_requests} origin requests for "
                  f"{slices} slices (fetches per slice: mean {statistics.mean(per):.2f}, max {max(per)}; "
                  f"{len(beyond)} slices beyond the range), waiters +{sh.extra['wait_med_ms']:.1f} ms median, "
                  f"+{sh.extra['wait_max_ms']:.1f} ms max" + ("" if sh.correct else "  WRONG"),
                  file=sys.stderr)
    return shots


def sequential_reader(fleet: Fleet, servers: list[Server], relay: Relay, opts, data: bytes, url: str,
                      tag: str, rounds: int, *, nslices: int, pause: float,
                      slice_size: int = MIB) -> list[Shot]:
    """A reader asking slice after slice (``slice_size`` ranges in order) of a cold
    object, pausing ``pause`` s between them; time to first byte of each."""
    shots = []
    for rnd in range(1, rounds + 1):
        for s in servers:
            def act(sh: Shot, s=s, rnd=rnd) -> None:
                ttfb = []
                ok = True
                with Connection(s.port) as c:
                    for k in range(nslices):
                        a, b = k * slice_size, (k + 1) * slice_size - 1
                        r = c.get(f"{url}?{tag}={rnd}", {"Range": f"bytes={a}-{b}"})
                        ttfb.append(r.ttfb)
                        ok &= r.status == 206 and r.body == data[a:b + 1]
                        sh.served += len(r.body)
                        if pause and k + 1 < nslices:
                            time.sleep(pause)
                sh.correct = ok
                sh.extra["ttfb_ms"] = [t * 1e3 for t in ttfb]
            sh = shot(fleet, s, relay, rnd, opts.wrk_cpu, act)
            shots.append(sh)
            t = sh.extra["ttfb_ms"]
            print(f"bench[{tag}]: round {rnd} {s.label}: TTFB slice 1 {t[0]:.1f} ms, slices 3+ "
                  f"median {med(t[2:]):.1f} ms, max {max(t[2:]):.1f} ms", file=sys.stderr)
    return shots


def shots_table(shots: list[Shot], labels: dict[str, str]) -> str:
    rows = []
    for sh in shots:
        ex = ", ".join(f"{k}={fmt(v, '.1f') if isinstance(v, float) else v}" for k, v in sh.extra.items()
                       if k != "ttfb_ms")
        if "ttfb_ms" in sh.extra:
            ex += (", " if ex else "") + "ttfb_ms=" + "/".join(f"{t:.0f}" for t in sh.extra["ttfb_ms"])
        prox = ("" if sh.proxy is None else
                ", ".join(f"{k}={v:,.0f}" for k, v in sh.proxy.items()))
        rows.append([sh.round, labels.get(sh.target, sh.target), fmt(sh.seconds, ".3f"),
                     fmt(sh.ttfb * 1e3, ".1f"), f"{sh.served:,}", f"{sh.origin_bytes:,}",
                     sh.origin_requests, fmt(sh.server_cpu_s, ".2f"), fmt(sh.other_cpu_pct, ".0f") + "%",
                     "yes" if sh.correct else "NO", prox, ex])
    return md_table(["round", "target", "s", "TTFB ms", "served B", "origin B", "origin req",
                     "server CPU s", "other CPU", "bytes ok", "proxy counters (delta)", "more"], rows)


def warm(servers: list[Server], paths: list[tuple[str, bytes]], cpu: int | None) -> None:
    """Read each object whole once through each cache, checking the bytes."""
    for s in servers:
        for path, data in paths:
            with pinned(cpu), Connection(s.port) as c:
                r = c.get(path)
            if r.status != 200 or r.body != data:
                raise BenchError(f"{s.label}: warming GET {path} gave {r.status} with "
                                 f"{len(r.body)} bytes that {'match' if r.body == data else 'differ'}")
