"""Workload "slice-sweep": rangeproxy at slice sizes 256 KiB .. 4 MiB, on w1,
w2 (warm, wrk, alternating across the sizes), w5 (cold full GET) and w5b
(32 cold random 64 KiB ranges). Ratios are against the 1 MiB default.

``python -m benchmarks --only slice-sweep``
"""

from __future__ import annotations

from pathlib import Path

from .harness import KIB, MIB, Tools, fmt, make_file, med, size_txt, write_wrk_script
from .rig import (
    TableReport,
    alternate,
    cache_rig,
    cold_full_get,
    cold_random_ranges,
    md_table,
    mmm,
    proxy_server,
    shots_table,
    warm,
)

NAME = "slice-sweep"
SIZES = [256 * KIB, 512 * KIB, MIB, 2 * MIB, 4 * MIB]


def _key(n: int) -> str:
    return "slice-" + size_txt(n).replace(" ", "")


def run(opts, tools: Tools, tmp: Path) -> list:
    media = tmp / "media"
    big = make_file(media / "big.bin", opts.object_size, opts.seed)
    big_txt = size_txt(len(big))
    base = _key(MIB)
    with cache_rig(opts, tools, tmp) as (fleet, relay):
        pxs = [proxy_server(_key(n), f"rangeproxy slice {size_txt(n)}", relay.data_port, tmp, tools, opts,
                            slice_size=size_txt(n).replace(" ", ""))
               for n in SIZES]
        fleet.start(*pxs)
        labels = {s.key: s.label for s in pxs}
        warm(pxs, [("/big.bin", big)], opts.wrk_cpu)
        params = (f"wrk -t{opts.threads} -c{opts.connections} -d{opts.duration}s, {opts.runs} rounds "
                  f"alternating over the five sizes; ratios against 1 MiB slices")
        w1s = write_wrk_script(tmp / "w1.lua", url_path="/big.bin", file_size=len(big), range_len=64 * KIB,
                               seed=opts.seed)
        w1 = alternate(pxs, tools=tools, opts=opts, url_path="/big.bin", script=w1s, name="sweep-w1",
                       title=f"slice sweep, w1: random 64 KiB ranges of a {big_txt} object (warm)",
                       params=params, baseline=base, relay=relay)
        w2s = write_wrk_script(tmp / "w2.lua", url_path="/big.bin", file_size=len(big), range_len=MIB,
                               seed=opts.seed)
        w2 = alternate(pxs, tools=tools, opts=opts, url_path="/big.bin", script=w2s, name="sweep-w2",
                       title=f"slice sweep, w2: random 1 MiB ranges of a {big_txt} object (warm)",
                       params=params, baseline=base, relay=relay)
        w5 = cold_full_get(fleet, pxs, relay, opts, big, "/big.bin", "sweep-w5", opts.runs)
        w5b = cold_random_ranges(fleet, pxs, relay, opts, big, "/big.bin", "sweep-w5b", min(2, opts.runs))

    rows = []
    for s in pxs:
        a = next(x for x in w1.summaries if x.key == s.key)
        b = next(x for x in w2.summaries if x.key == s.key)
        t5 = [x.seconds for x in w5 if x.target == s.key]
        b5 = {x.round: x.seconds for x in w5 if x.target == base}
        r5 = [x.seconds / b5[x.round] for x in w5 if x.target == s.key and b5.get(x.round)]
        req5 = med([x.origin_requests for x in w5 if x.target == s.key])
        ok5 = all(x.origin_bytes == len(big) and x.correct for x in w5 if x.target == s.key)
        fb = [x.origin_bytes / max(1, x.served) for x in w5b if x.target == s.key]
        rows.append([s.label, f"{a.rps:,.0f} ({fmt(a.ratio_med)}x)", f"{a.cpu_us_per_req:,.0f}",
                     f"{b.rps:,.0f} ({fmt(b.ratio_med)}x)", f"{b.cpu_us_per_req:,.0f}",
                     f"{med(t5):.3f} ({fmt(med(r5))}x)", f"{req5:.0f}", "yes" if ok5 else "NO",
                     mmm(fb, ".2f")])
    table = md_table(["slice size", "w1 req/s (vs 1 MiB)", "w1 µs CPU/req", "w2 req/s (vs 1 MiB)",
                      "w2 µs CPU/req", f"w5 cold {big_txt} GET s (vs 1 MiB)", "w5 origin requests",
                      "w5 origin bytes exact", "w5b origin / served"], rows)
    summary = TableReport(NAME, "slice sweep: rangeproxy at five slice sizes", params + "; w5: median of "
                          f"{opts.runs} cold GETs; w5b: 32 cold random 64 KiB ranges (block_size 16 KiB "
                          "for every size)", table, details=shots_table(w5 + w5b, labels))
    return [w1, w2, summary]
