"""Workload "figures": the numbers the closing note of issue 3 asks for, each
reproducible with ``python -m benchmarks --only figures``.

rangeproxy alone (default settings, 1 MiB slices) in front of the origin
behind the counting relay:

1. a cold full GET of the big object (256 MiB): upstream requests and bytes;
2. 32 random cold 64 KiB ranges (fixed seed): origin bytes / served bytes;
3. 50 concurrent cold requests for the same 8 MiB range: upstream fetches per slice;
4. a fresh proxy: RSS growth while a 300 MiB object is read cold then warm, by
   a fast client and by a slow one (32 MiB/s, small receive buffer).
"""

from __future__ import annotations

import sys
from pathlib import Path

from .harness import MIB, BenchError, RssSampler, Tools, make_file, size_txt, tree_rss
from .httpclient import Connection, fetch, pinned
from .rig import (
    TableReport,
    cache_rig,
    cold_full_get,
    cold_random_ranges,
    collapse,
    md_table,
    proxy_server,
    shots_table,
)

NAME = "figures"
SLOW_RATE = 32 * MIB  # bytes/s of the slow client
SLOW_RCVBUF = 64 * 1024


def run(opts, tools: Tools, tmp: Path) -> list:
    media = tmp / "media"
    big = make_file(media / "big.bin", opts.object_size, opts.seed)
    huge = make_file(media / "huge.bin", opts.huge_size, opts.seed + 2)
    make_file(media / "small.bin", 200_000, opts.seed + 3)
    with cache_rig(opts, tools, tmp) as (fleet, relay):
        px = proxy_server("proxy", "rangeproxy", relay.data_port, tmp, tools, opts)
        fleet.start(px)
        labels = {px.key: px.label}
        full = cold_full_get(fleet, [px], relay, opts, big, "/big.bin", "fig-full", 1)[0]
        rnd = cold_random_ranges(fleet, [px], relay, opts, big, "/big.bin", "fig-ranges", 1)[0]
        col = collapse(fleet, [px], relay, opts, big, "/big.bin", "fig-collapse", 1)[0]
        fleet.stop(px)

        pm = proxy_server("proxy-mem", "rangeproxy (fresh, for RSS)", relay.data_port, tmp, tools, opts)
        fleet.start(pm)
        fetch(pm.port, "/small.bin")  # first request: lazy set-up is part of the baseline
        base = tree_rss(pm.proc.pid)
        phases = []
        for name, path, rate in (("cold, fast client", "/huge.bin?m=fast", None),
                                 ("warm, fast client", "/huge.bin?m=fast", None),
                                 (f"cold, slow client ({SLOW_RATE // MIB} MiB/s)", "/huge.bin?m=slow", SLOW_RATE),
                                 ("warm, slow client", "/huge.bin?m=slow", SLOW_RATE)):
            with RssSampler(pm, interval=0.02) as smp, pinned(opts.wrk_cpu), \
                    Connection(pm.port, rcvbuf=SLOW_RCVBUF if rate else None) as c:
                r = c.get(path, rate=rate)
            if r.status != 200 or r.body != huge:
                raise BenchError(f"figures: GET {path} through the proxy: {r.status}, bytes differ")
            after = tree_rss(pm.proc.pid)
            phases.append((name, r.total, smp.max, after, r.headers.get("x-cache", "?")))
            print(f"bench[figures]: {name}: {r.total:.2f} s, RSS max {smp.max / MIB:.0f} MiB "
                  f"(baseline {base / MIB:.0f} MiB)", file=sys.stderr)
            del r

    size = len(big)
    p = full.proxy or {}
    rows = [
        [f"cold full GET of a {size_txt(size)} object: upstream requests",
         f"{p.get('upstream_requests', 0):.0f} (origin saw {full.origin_requests})",
         f"{size_txt(size)} = {size // MIB} slices of 1 MiB; proxy /metrics "
         "rangeproxy_upstream_requests_total, relay count"],
        ["... upstream bytes",
         f"{p.get('upstream_bytes', 0):,.0f} = {p.get('upstream_bytes', 0) / size:.4f}x the object "
         f"(origin sent {full.origin_bytes:,})", f"client got {full.served:,} bytes in {full.seconds:.2f} s, "
         f"{'correct' if full.correct else 'WRONG BYTES'}"],
        ["32 random cold 64 KiB ranges: origin bytes / served bytes",
         f"{rnd.origin_bytes / max(1, rnd.served):.2f}x ({rnd.origin_bytes:,} / {rnd.served:,}; "
         f"{rnd.extra['speculative_bytes']:,} of them in {rnd.extra['speculative_requests']} read-ahead "
         "requests that overlap no asked range)",
         f"{rnd.origin_requests} origin requests; proxy counted {(rnd.proxy or {}).get('upstream_bytes', 0):,.0f} "
         f"upstream bytes; seed {opts.seed}"],
        [f"50 concurrent cold requests for one 8 MiB range ({col.extra['slices']} slices): "
         "upstream fetches per slice",
         f"{col.extra['fetches_per_slice']:.2f} (max {col.extra['fetches_per_slice_max']}; "
         f"{col.origin_requests} origin requests, {col.origin_bytes:,} bytes, "
         f"{col.extra['slices_beyond']} slices beyond the range read ahead)",
         f"slice lookups: miss {(col.proxy or {}).get('miss', 0):.0f}, collapsed "
         f"{(col.proxy or {}).get('collapsed', 0):.0f}, hit {(col.proxy or {}).get('hit', 0):.0f}; waiters' "
         f"first byte +{col.extra['wait_max_ms']:.1f} ms max after the leader's"],
    ]
    worst = max(ph[2] for ph in phases) - base
    for name, secs, mx, after, xc in phases:
        rows.append([f"RSS growth, {size_txt(len(huge))} object, {name}", f"{(mx - base) / MIB:+.1f} MiB",
                     f"max {mx / MIB:.0f} MiB over a baseline of {base / MIB:.0f} MiB; {secs:.2f} s; "
                     f"X-Cache {xc}; {after / MIB:.0f} MiB after"])
    rows.append([f"RSS growth, all four reads", f"{worst / MIB:+.1f} MiB", "limit 50 MiB"])
    table = md_table(["figure (issue 3)", "value", "detail"], rows)
    details = shots_table([full, rnd, col], labels)
    return [TableReport(NAME, "figures for issue 3 (rangeproxy, 1 MiB slices, default settings)",
                        "reproduce: `python -m benchmarks --only figures` (with `--quick`: smaller objects); "
                        "origin bytes counted by the relay in front of the origin", table, details=details)]
