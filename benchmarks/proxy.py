"""Workload "proxy": rangeproxy against nginx as a slice cache (issue 6).

Both caches sit in front of the same origin (appserver aiohttp, behind the
counting relay of ``benchmarks/relay.py``), are pinned to the same core and are
timed alternately (A B A B ...):

- w1  random 64 KiB ranges of the big object (256 MiB), warm   (wrk, c=64)
- w2  random 1 MiB ranges of the big object, warm                (wrk)
- w3  full GET of a 4 MiB object, warm                           (wrk)
- w4  3 x 4 KiB multi-range of the 4 MiB object, warm           (wrk; plus the origin
      nginx serving the file itself, whose multi-range rate is the reference)
- many connections: random 64 KiB ranges, warm, from 1,000 connections (``benchmarks/conns.py``)
- w5  cold full GET of the big object: time, origin bytes / object size
- w5b 32 cold random 64 KiB ranges (fixed seed): origin bytes / served bytes
- collapsing: 50 concurrent cold requests for one 8 MiB range
- read-ahead: a sequential reader (1 MiB ranges in order) against a slow origin
  (the relay adds 50 ms per request): rangeproxy by default, with
  readahead_slices=0, and nginx
- RSS: 1,000 connections reading random 1 MiB ranges of a cold object for 30 s

"Warm" means every object was read whole once through each cache first. Cold
runs use a fresh query string per round (the origin ignores it; both caches key
on it), so each starts from an empty cache for that object.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from . import conns
from .harness import (
    KIB,
    MIB,
    BenchError,
    RssSampler,
    Server,
    Tools,
    WorkloadReport,
    fmt,
    make_file,
    med,
    pin_prefix,
    run_wrk,
    size_txt,
    tree_rss,
    verify_ranges,
    write_wrk_script,
)
from .floor import floor_server
from .httpclient import fetch, parse_multipart
from .rig import (
    Shot,
    TableReport,
    alternate,
    cache_rig,
    cold_full_get,
    cold_random_ranges,
    collapse,
    md_table,
    mmm,
    nginx_cache_server,
    nginx_static_server,
    proxy_and_nginx,
    proxy_server,
    sequential_reader,
    shots_table,
    warm,
)

NAME = "proxy"
MID = 4 * MIB


def _pin_txt(opts, tools: Tools) -> str:
    if not tools.taskset or opts.server_cpu is None:
        return "no CPU pinning"
    org = f"CPU {opts.origin_cpu}" if opts.origin_cpu is not None else "unpinned"
    return (f"cache under test on CPU {opts.server_cpu}; wrk and the harness's clients on CPU "
            f"{opts.wrk_cpu}; origin and relay {org}")


def multirange_ranges(size: int, seed: int, n: int = 3, length: int = 4 * KIB) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    span = size // n
    return [(k * span + a, k * span + a + length - 1)
            for k, a in ((k, rng.randrange(0, span - length + 1)) for k in range(n))]


def check_multirange(s: Server, path: str, data: bytes, ranges: list[tuple[int, int]]) -> tuple[bool, str]:
    hdr = "bytes=" + ",".join(f"{a}-{b}" for a, b in ranges)
    r = fetch(s.port, path, {"Range": hdr})
    ctype = r.headers.get("content-type", "")
    if r.status == 206 and ctype.startswith("multipart/byteranges"):
        try:
            parts = parse_multipart(ctype, bytes(r.body))
        except BenchError as e:
            return False, f"no: malformed multipart ({e})"
        want = [(a, b, len(data), data[a:b + 1]) for a, b in ranges]
        if parts != want:
            return False, "no: multipart parts differ from the file"
        if int(r.headers.get("content-length", -1)) != len(r.body):
            return False, "no: Content-Length differs from the body"
        return True, f"yes: 206 multipart/byteranges, {len(parts)} parts verified"
    if r.status == 200:
        whole = "the whole object" if bytes(r.body) == data else f"{len(r.body)} bytes"
        return False, f"no: 200 with {whole} ({len(r.body):,} bytes)"
    return False, f"no: HTTP {r.status} ({ctype or 'no Content-Type'})"


def rss_run(servers: list[Server], *, tools: Tools, opts, tmp: Path, size: int) -> list[dict]:
    """Random 1 MiB ranges of a cold object (``/big.bin?rss=1``, ``size`` bytes) from
    ``--rss-connections`` connections for ``--rss-seconds``; RSS of each server meanwhile."""
    script = write_wrk_script(tmp / "rss.lua", url_path="/big.bin?rss=1", file_size=size,
                              range_len=MIB, seed=opts.seed)
    rows = []
    pin = pin_prefix(tools.taskset, opts.wrk_cpu)
    for s in servers:
        start = tree_rss(s.proc.pid)
        with RssSampler(s, interval=0.1) as smp:
            w = run_wrk(tools.wrk, f"http://127.0.0.1:{s.port}/big.bin", script,
                        duration=opts.rss_seconds, connections=opts.rss_connections,
                        threads=opts.threads, pin=pin)
        end = tree_rss(s.proc.pid)
        errs = {k: v for k, v in w.socket_errors.items() if v}
        row = dict(key=s.key, label=s.label, start=start, max=smp.max, end=end, rps=w.rps,
                   requests=w.requests, non2xx=w.non2xx, errors=errs,
                   alive=s.proc.poll() is None)
        rows.append(row)
        print(f"bench[rss]: {s.label}: RSS {start / MIB:.0f} -> max {smp.max / MIB:.0f} -> end "
              f"{end / MIB:.0f} MiB, {w.rps:,.0f} req/s, errors {errs or 'none'}", file=sys.stderr)
    return rows


def run(opts, tools: Tools, tmp: Path) -> list:
    media = tmp / "media"
    big = make_file(media / "big.bin", opts.object_size, opts.seed)
    mid = make_file(media / "mid.bin", MID, opts.seed + 1)
    big_txt = size_txt(len(big))
    pin_txt = _pin_txt(opts, tools)
    wrk_txt = (f"wrk -t{opts.threads} -c{opts.connections} -d{opts.duration}s, {opts.runs} alternating "
               f"rounds, warm-up {opts.warmup}s per target, seed {opts.seed}; {pin_txt}")
    out: list = []
    with cache_rig(opts, tools, tmp) as (fleet, relay):
        px, ng = proxy_and_nginx(relay, tmp, tools, opts)
        ngp = nginx_cache_server("nginx-nopush", "nginx slice cache + tcp_nopush", relay.data_port, tmp,
                                 tools, opts, tcp_nopush=True)
        floor = floor_server(tmp, tools, opts.server_cpu, media)
        fleet.start(px, ng, ngp, floor)
        caches = [px, ng]
        warm_three = [px, ng, ngp, floor]  # w1..w3: nginx with and without tcp_nopush, and aiohttp's floor
        labels = {s.key: s.label for s in warm_three}

        print("bench[proxy]: warming the caches (every object read whole once)", file=sys.stderr)
        warm(warm_three, [("/big.bin", big), ("/mid.bin", mid)], opts.wrk_cpu)
        for s in warm_three:
            verify_ranges(s.port, "/big.bin", big, range_len=64 * KIB, seed=opts.seed, count=3, label=s.label)

        # --- w1 .. w3: warm throughput ----------------------------------------------------------
        w1s = write_wrk_script(tmp / "w1.lua", url_path="/big.bin", file_size=len(big), range_len=64 * KIB,
                               seed=opts.seed)
        w1 = alternate(warm_three, tools=tools, opts=opts, url_path="/big.bin", script=w1s, name="w1",
                       title=f"w1: random 64 KiB ranges of a {big_txt} object (warm)",
                       params=wrk_txt + "; unaligned offsets", baseline="nginx", relay=relay)
        w2s = write_wrk_script(tmp / "w2.lua", url_path="/big.bin", file_size=len(big), range_len=MIB,
                               seed=opts.seed)
        w2 = alternate(warm_three, tools=tools, opts=opts, url_path="/big.bin", script=w2s, name="w2",
                       title=f"w2: random 1 MiB ranges of a {big_txt} object (warm)",
                       params=wrk_txt + "; unaligned offsets", baseline="nginx", relay=relay)
        w3s = write_wrk_script(tmp / "w3.lua", url_path="/mid.bin", nranges=0, what="full GET")
        w3 = alternate(warm_three, tools=tools, opts=opts, url_path="/mid.bin", script=w3s, name="w3",
                       title="w3: full GET of a 4 MiB object (warm)", params=wrk_txt, baseline="nginx",
                       relay=relay)
        out += [w1, w2, w3]
        fleet.stop(ngp)
        fleet.stop(floor)

        # --- many connections: 1,000 connections of warm 64 KiB hits (issue 12) ---------------------
        many = conns.run_rounds(caches, tools=tools, opts=opts, tmp=tmp, size=len(big))
        out.append(many)

        # --- w4: multi-range -------------------------------------------------------------------
        static = nginx_static_server(media, tmp, tools, opts)
        fleet.start(static)
        ranges = multirange_ranges(len(mid), opts.seed)
        correct = {s.key: check_multirange(s, "/mid.bin", mid, ranges) for s in (px, ng, static)}
        for s in (px, ng, static):
            print(f"bench[w4]: {s.label}: correct multipart? {correct[s.key][1]}", file=sys.stderr)
        w4s = write_wrk_script(tmp / "w4.lua", url_path="/mid.bin", file_size=len(mid), nranges=3,
                               range_len=4 * KIB, seed=opts.seed, what="3 x 4 KiB multi-range")
        w4 = alternate([px, ng, static], tools=tools, opts=opts, url_path="/mid.bin", script=w4s, name="w4",
                       title="w4: 3 x 4 KiB multi-range requests of the 4 MiB object (warm)",
                       params=wrk_txt + "; ratios against the origin nginx serving the file itself",
                       baseline="nginx-static", relay=relay)
        w4.notes.insert(0, "Correct multipart answer? " + "; ".join(
            f"{s.label}: {correct[s.key][1]}" for s in (px, ng, static)) + ".")
        fleet.stop(static)
        out.append(w4)

        # --- w5, w5b, collapsing: cold ---------------------------------------------------------
        w5 = cold_full_get(fleet, caches, relay, opts, big, "/big.bin", "w5", opts.runs)
        w5b = cold_random_ranges(fleet, caches, relay, opts, big, "/big.bin", "w5b", opts.runs)
        col = collapse(fleet, caches, relay, opts, big, "/big.bin", "collapse", opts.runs)

        # --- read-ahead against a slow origin --------------------------------------------------
        ra0 = proxy_server("proxy-ra0", "rangeproxy readahead_slices=0", relay.data_port, tmp, tools, opts,
                           settings={"readahead_slices": "0"})
        fleet.start(ra0)
        labels[ra0.key] = ra0.label
        nslices = min(8 if opts.quick else 16, len(big) // MIB)
        relay.set_delay(opts.origin_delay_ms)
        try:
            greedy = sequential_reader(fleet, [px, ra0, ng], relay, opts, big, "/big.bin", "ra-greedy",
                                       opts.runs, nslices=nslices, pause=0.0)
            paced = sequential_reader(fleet, [px, ra0, ng], relay, opts, big, "/big.bin", "ra-paced",
                                      opts.runs, nslices=nslices, pause=opts.reader_pause_ms / 1000)
        finally:
            relay.set_delay(0)
        fleet.stop(ra0)

        # --- RSS under many connections ----------------------------------------------------------
        rss = rss_run(caches, tools=tools, opts=opts, tmp=tmp, size=len(big))

    out += cold_reports(w5, w5b, labels, len(big), pin_txt, opts)
    out.append(collapse_report(col, labels, [s.key for s in caches], opts))
    out.append(readahead_report(greedy, paced, labels, opts, nslices, pin_txt))
    out.append(rss_report(rss, opts, big_txt))
    out.append(targets_report(w1, w2, w3, w4, correct, w5, w5b, col, paced, greedy, rss, opts, len(big),
                              many=many))
    return out


# --- reports ---------------------------------------------------------------------------------------


def _by(shots: list[Shot], key: str) -> list[Shot]:
    return [s for s in shots if s.target == key]


def _ratios(shots: list[Shot], key: str, base: str, attr: str = "seconds") -> list[float]:
    b = {s.round: getattr(s, attr) for s in _by(shots, base)}
    return [getattr(s, attr) / b[s.round] for s in _by(shots, key) if b.get(s.round)]


def cold_reports(w5, w5b, labels, size, pin_txt, opts) -> list[TableReport]:
    """The tables of w5 and w5b."""
    keys = [k for k in ("proxy", "nginx") if any(s.target == k for s in w5)]
    rows = []
    for k in keys:
        mine = _by(w5, k)
        rows.append([labels[k], mmm([s.seconds for s in mine], ".3f"),
                     mmm(_ratios(w5, k, "nginx")), mmm([s.ttfb for s in mine], ".1f", 1e3),
                     mmm([s.origin_bytes / size for s in mine], ".4f"),
                     mmm([s.origin_requests for s in mine], ".0f"),
                     mmm([s.server_cpu_s for s in mine], ".2f"),
                     "yes" if all(s.correct for s in mine) else "NO"])
    t5 = md_table(["target", "seconds: median (min–max)", "time vs nginx", "TTFB ms",
                   "origin bytes / object size", "origin requests", "server CPU s", "bytes ok"], rows)
    r5 = TableReport("w5", f"w5: cold full GET of a {size_txt(size)} object",
                     f"one GET per target per round, {opts.runs} rounds alternating, fresh query string "
                     f"each (cold); time from request to last byte in the client; {pin_txt}", t5,
                     details=shots_table(w5, labels))
    rows = []
    for k in keys:
        mine = _by(w5b, k)
        rows.append([labels[k], mmm([s.origin_bytes / max(1, s.served) for s in mine], ".2f"),
                     mmm([s.origin_bytes / MIB for s in mine], ".2f"),
                     mmm([s.origin_requests for s in mine], ".0f"),
                     mmm([s.extra["speculative_requests"] for s in mine], ".0f") + " / "
                     + mmm([s.extra["speculative_bytes"] / MIB for s in mine], ".1f"),
                     mmm([max(0, s.origin_bytes - s.extra["speculative_bytes"]) / max(1, s.served)
                          for s in mine], ".2f"),
                     mmm([s.extra["lat_med_ms"] for s in mine], ".1f"),
                     "yes" if all(s.correct for s in mine) else "NO"])
    t5b = md_table(["target", "origin bytes / served bytes", "origin MiB", "origin requests",
                    "of which overlap no asked range (read-ahead): requests / MiB",
                    "origin / served without those", "median latency ms", "bytes ok"], rows)
    r5b = TableReport("w5b", "w5b: 32 cold random 64 KiB ranges (fixed seed), one after the other",
                      f"served: 32 x 64 KiB = 2 MiB per round; {opts.runs} rounds, fresh object each", t5b,
                      details=shots_table(w5b, labels))
    return [r5, r5b]


def collapse_report(col, labels, keys, opts) -> TableReport:
    rows = []
    for k in keys:
        mine = _by(col, k)
        slices = mine[0].extra["slices"] if mine else 0
        rows.append([labels[k], slices, mmm([s.origin_requests for s in mine], ".0f"),
                     mmm([s.extra["fetches_per_slice"] for s in mine], ".2f") + " / "
                     + mmm([s.extra["fetches_per_slice_max"] for s in mine], ".0f"),
                     mmm([s.extra["slices_beyond"] for s in mine], ".0f"),
                     mmm([s.origin_bytes / (slices * MIB) for s in mine], ".2f"),
                     mmm([s.ttfb * 1e3 for s in mine], ".1f"),
                     mmm([s.extra["wait_med_ms"] for s in mine], ".1f"),
                     mmm([s.extra["wait_max_ms"] for s in mine], ".1f"),
                     mmm([s.seconds for s in mine], ".2f"),
                     "yes" if all(s.correct for s in mine) else "NO"])
    tc = md_table(["target", "slices", "origin requests", "origin fetches per slice of the range: mean / max",
                   "slices fetched beyond the range", "origin bytes / bytes of the range's slices",
                   "leader TTFB ms", "waiters after leader: median ms", "waiters: max ms",
                   "all done s", "bytes ok"], rows)
    rc = TableReport("collapsing", "collapsing: 50 concurrent cold requests for the same 8 MiB range",
                     "50 connections opened first, then the same request sent on all of them; waiters' "
                     "first body byte measured from the leader's (first) first byte; median (min–max) "
                     f"over {opts.runs} rounds", tc, details=shots_table(col, labels))
    return rc


def readahead_report(greedy, paced, labels, opts, nslices, pin_txt) -> TableReport:
    rows = []
    for mode, shots in (("paced", paced), ("greedy", greedy)):
        for k in ("proxy", "proxy-ra0", "nginx"):
            mine = _by(shots, k)
            if not mine:
                continue
            first = [s.extra["ttfb_ms"][0] for s in mine]
            second = [s.extra["ttfb_ms"][1] for s in mine]
            later = [t for s in mine for t in s.extra["ttfb_ms"][2:]]
            waited = sum(1 for t in later if t >= opts.origin_delay_ms * 0.8)
            rows.append([mode, labels[k], fmt(med(first), ".1f"), fmt(med(second), ".1f"),
                         fmt(med(later), ".1f"), fmt(sorted(later)[int(0.9 * (len(later) - 1))], ".1f"),
                         fmt(max(later), ".1f"), f"{waited}/{len(later)}",
                         "yes" if all(s.correct for s in mine) else "NO"])
    t = md_table(["reader", "target", "TTFB slice 1 ms", "slice 2 ms", "slices 3+: median ms", "p90 ms",
                  "max ms", f"slices 3+ waiting >= {0.8 * opts.origin_delay_ms:g} ms", "bytes ok"], rows)
    return TableReport(
        "read-ahead", f"read-ahead: a sequential reader, 1 MiB ranges in order, origin +{opts.origin_delay_ms:g} ms "
        "per request",
        f"{nslices} slices of a cold object per run, {opts.runs} rounds; paced: "
        f"{opts.reader_pause_ms:g} ms pause between slices (a player); greedy: no pause; TTFB = request "
        f"to first body byte in the client; {pin_txt}", t, details=shots_table(paced + greedy, labels))


def rss_report(rss, opts, big_txt) -> TableReport:
    rows = []
    for r in rss:
        errs = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "none"
        rows.append([r["label"], f"{r['start'] / MIB:.0f}", f"{r['max'] / MIB:.0f}", f"{r['end'] / MIB:.0f}",
                     f"{(r['max'] - r['start']) / MIB:+.0f}", f"{r['rps']:,.0f}", r["non2xx"], errs,
                     "yes" if r["alive"] else "NO"])
    t = md_table(["target", "RSS start MiB", "max MiB", "end MiB", "growth (max - start) MiB", "req/s",
                  "non-2xx", "socket errors", "alive"], rows)
    return TableReport("rss", f"RSS: {opts.rss_connections} connections reading random 1 MiB ranges for "
                       f"{opts.rss_seconds} s", f"wrk -t{opts.threads} -c{opts.rss_connections}, random "
                       f"unaligned 1 MiB ranges of a cold {big_txt} object (cold at the start, warm by the "
                       "end); RSS of the process tree from /proc/<pid>/status every 0.1 s (wrk's own "
                       "timeout of 2 s counts as a socket error)", t)


def targets_report(w1, w2, w3, w4, correct, w5, w5b, col, paced, greedy, rss, opts, size,
                   many: conns.ManyConnections | None = None) -> TableReport:
    def summ(rep: WorkloadReport, key: str):
        return next((s for s in rep.summaries if s.key == key), None)

    rows = []

    def ratio_row(name, rep, goal, goal_txt):
        # Against the faster of the two nginx configurations (with / without tcp_nopush),
        # round by round; aiohttp from memory (the floor of the proxy's server library) beside.
        p = summ(rep, "proxy")
        ns = [n for n in (summ(rep, "nginx"), summ(rep, "nginx-nopush")) if n is not None and n.rps == n.rps]
        if p is None or not ns:
            return
        n = max(ns, key=lambda x: x.rps)
        base = {r.round: r.wrk.rps for r in rep.results if r.target == n.key and r.counted}

        def vs_nginx(key: str) -> list[float]:
            return [r.wrk.rps / base[r.round] for r in rep.results
                    if r.target == key and r.counted and base.get(r.round)]
        rs = vs_nginx("proxy")
        rmed = med(rs)
        other = [x for x in ns if x is not n]
        alt = f"; {other[0].label}: {other[0].rps:,.0f} req/s" if other else ""
        fl = summ(rep, "aiohttp")
        floor_txt = (f"; aiohttp floor {fl.rps:,.0f} req/s, {fl.cpu_us_per_req:,.0f} µs CPU/req = "
                     f"{fmt(med(vs_nginx('aiohttp')))}x" if fl is not None else "")
        rows.append([name, f"{n.label}: {n.rps:,.0f} req/s, {n.cpu_us_per_req:,.0f} µs CPU/req{alt}{floor_txt}",
                     f"{p.rps:,.0f} req/s, {p.cpu_us_per_req:,.0f} µs CPU/req",
                     f"{fmt(rmed)}x ({fmt(min(rs, default=float('nan')))}–{fmt(max(rs, default=float('nan')))})",
                     goal_txt, "yes" if rmed >= goal else "NO", f"{rmed / goal:.2f} of goal"])

    ratio_row("w1 random 64 KiB", w1, 0.5, ">= 0.5x of the faster nginx (issue 12)")
    ratio_row("w2 random 1 MiB", w2, 0.95, ">= 0.95x: no worse than before (about 1.0x)")
    ratio_row("w3 full GET 4 MiB", w3, 0.95, ">= 0.95x: no worse than before (about 1.0x)")
    p, st = summ(w4, "proxy"), summ(w4, "nginx-static")
    if p and st:
        ok = correct["proxy"][0]
        rows.append(["w4 3 x 4 KiB multi-range", f"cache: {correct['nginx'][1]}; origin nginx {st.rps:,.0f} req/s",
                     f"{p.rps:,.0f} req/s, {p.cpu_us_per_req:,.0f} µs CPU/req; {correct['proxy'][1]}",
                     f"{fmt(p.ratio_med)}x of origin nginx ({fmt(p.ratio_min)}–{fmt(p.ratio_max)})",
                     "correct, >= 0.5x (issue 12)", "yes" if ok and p.ratio_med >= 0.5 else "NO",
                     f"{p.ratio_med / 0.5:.2f} of goal"])
    tp = [s.seconds for s in _by(w5, "proxy")]
    tn = [s.seconds for s in _by(w5, "nginx")]
    r5 = _ratios(w5, "proxy", "nginx")
    ob = [s.origin_bytes / size for s in _by(w5, "proxy")]
    if tp and tn:
        exact = all(s.origin_bytes == size for s in _by(w5, "proxy"))
        rows.append(["w5 cold full GET", f"{med(tn):.3f} s, origin {med([s.origin_bytes / size for s in _by(w5, 'nginx')]):.4f}x",
                     f"{med(tp):.3f} s, origin {med(ob):.4f}x", f"{fmt(med(r5))}x time ({mmm(r5)})",
                     "<= 1.0x time, origin 1.00x", "yes" if med(r5) <= 1.0 and exact else "NO",
                     f"time {med(r5):.2f}x; origin bytes {'exact' if exact else 'NOT exact'}"])
    fp = [s.origin_bytes / max(1, s.served) for s in _by(w5b, "proxy")]
    fn = [s.origin_bytes / max(1, s.served) for s in _by(w5b, "nginx")]
    if fp:
        rows.append(["w5b cold 64 KiB over-fetch", f"{fmt(med(fn))}x", f"{fmt(med(fp))}x", "", "<= 2x",
                     "yes" if med(fp) <= 2 else "NO", f"{med(fp) / 2:.2f} of the limit"])
    cp = _by(col, "proxy")
    cn = _by(col, "nginx")
    if cp:
        wm = med([s.extra["wait_max_ms"] for s in cp])
        fps = max(s.extra["fetches_per_slice_max"] for s in cp)
        rows.append(["collapsing: waiters' first byte after the leader's (max)",
                     f"{fmt(med([s.extra['wait_max_ms'] for s in cn]), '.1f')} ms, "
                     f"max {max([s.extra['fetches_per_slice_max'] for s in cn], default=0)} fetches/slice",
                     f"{wm:.1f} ms, max {fps} fetches/slice", "", "<= 10 ms, 1 fetch/slice",
                     "yes" if wm <= 10 and fps == 1 else "NO", f"{wm / 10:.2f} of the limit"])
    for mode, shots in (("paced", paced), ("greedy", greedy)):
        lp = [t for s in _by(shots, "proxy") for t in s.extra["ttfb_ms"][2:]]
        l0 = [t for s in _by(shots, "proxy-ra0") for t in s.extra["ttfb_ms"][2:]]
        ln = [t for s in _by(shots, "nginx") for t in s.extra["ttfb_ms"][2:]]
        if lp:
            rows.append([f"read-ahead ({mode} reader): TTFB slices 3+",
                         f"nginx median {fmt(med(ln), '.1f')} ms; rangeproxy readahead 0: median "
                         f"{fmt(med(l0), '.1f')} ms",
                         f"median {med(lp):.1f} ms, max {max(lp):.1f} ms", "",
                         f"never waits on the origin (< {opts.origin_delay_ms:g} ms)",
                         "yes" if max(lp) < opts.origin_delay_ms else "NO",
                         f"max {max(lp) / opts.origin_delay_ms:.2f} of the origin delay"])
    rp = next((r for r in rss if r["key"] == "proxy"), None)
    rn = next((r for r in rss if r["key"] == "nginx"), None)
    if rp:
        g = (rp["max"] - rp["start"]) / MIB
        rows.append([f"RSS, {opts.rss_connections} connections, {opts.rss_seconds} s",
                     f"+{(rn['max'] - rn['start']) / MIB:.0f} MiB" if rn else "",
                     f"{rp['start'] / MIB:.0f} -> max {rp['max'] / MIB:.0f} MiB (+{g:.0f})", "",
                     "growth <= 50 MiB", "yes" if g <= 50 and rp["alive"] else "NO", f"{g / 50:.2f} of the limit"])
    if many is not None and many.target:
        rows.append(many.target)
    t = md_table(["target", "nginx", "rangeproxy", "ratio", "goal", "met?", "by how much"], rows)
    return TableReport("targets", "targets (issues 6 and 12): rangeproxy against nginx, same runs", "", t)
