"""Workloads "rss", "collapsing" and "cold": one figure of the "proxy" workload each, alone,
on fresh servers (rangeproxy and nginx as a slice cache), for working on that figure.

- rss: 1,000 connections (``--rss-connections``) read random unaligned 1 MiB ranges
  of a cold object for 30 s (``--rss-seconds``); growth = RSS maximum - RSS at the start.
- collapsing: 50 concurrent cold requests for one 8 MiB range, ``--runs`` rounds:
  origin fetches per slice, and how long after the leader's first byte the others get theirs.
- cold: w5 (a cold full GET of the big object) and w5b (32 cold random 64 KiB ranges).

``python -m benchmarks --only rss`` (or ``collapsing``, ``cold``)
"""

from __future__ import annotations

from pathlib import Path

from .harness import Tools, size_txt
from .proxy import cold_reports, collapse_report, rss_report, rss_run
from .rig import cache_pair, cold_full_get, cold_random_ranges, collapse

RSS = "rss"
COLLAPSING = "collapsing"
COLD = "cold"


def run_rss(opts, tools: Tools, tmp: Path) -> list:
    with cache_pair(opts, tools, tmp) as (big, _, _, caches):
        rows = rss_run(caches, tools=tools, opts=opts, tmp=tmp, size=len(big))
    return [rss_report(rows, opts, size_txt(len(big)))]


def run_collapsing(opts, tools: Tools, tmp: Path) -> list:
    with cache_pair(opts, tools, tmp) as (big, fleet, relay, caches):
        col = collapse(fleet, caches, relay, opts, big, "/big.bin", "collapse", opts.runs)
        labels = {s.key: s.label for s in caches}
    return [collapse_report(col, labels, [s.key for s in caches], opts)]


def run_cold(opts, tools: Tools, tmp: Path) -> list:
    with cache_pair(opts, tools, tmp) as (big, fleet, relay, caches):
        w5 = cold_full_get(fleet, caches, relay, opts, big, "/big.bin", "w5", opts.runs)
        w5b = cold_random_ranges(fleet, caches, relay, opts, big, "/big.bin", "w5b", opts.runs)
        labels = {s.key: s.label for s in caches}
    return cold_reports(w5, w5b, labels, len(big), "server pinning as in the proxy workload", opts)
