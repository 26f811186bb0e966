"""python -m benchmarks [--quick] [--only WORKLOAD] [--runs N] [--duration S] [--out FILE]

Needs wrk (Debian package 'wrk'; installed with apt-get when missing and run
as root), nginx (Debian 'nginx-light') and taskset (util-linux). Prints a
markdown table per workload; with --out FILE also appends a dated section
with the machine and software versions to FILE.

Workloads: origin (appserver vs nginx serving files), proxy (rangeproxy vs
nginx as a slice cache: w1..w5b, many connections, collapsing, read-ahead,
RSS), figures (the numbers for issue 3), catalogue (hits against the number
of cached objects: 1,000, 100,000 and 1,000,000 by default, with aiohttp from
memory as the floor; start-up and RSS of each store), eviction (hits and
event-loop stalls while writes force eviction from a full cache of a million
entries), many-connections (1,000 connections of warm 64 KiB hits, alone) and
slice-sweep (rangeproxy at five slice sizes; only with --only slice-sweep),
cluster (hit throughput of 1, 2 and 3 nodes behind HAProxy, with the CPU
split; only with --only cluster; needs haproxy).
The default run (make bench) is all but slice-sweep, cluster and the parts run alone
(rss, collapsing, cold, many-connections: each also inside proxy); building
the million-object stores takes some 15 minutes of it.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from . import catalogue, cluster, conns, eviction, figures, focused, origin, proxy, rig, slicesweep
from .harness import (
    MIB,
    BenchError,
    Tools,
    WorkloadReport,
    ensure_tool,
    machine_busy_pct,
    runs_table,
    summary_table,
    tool_version,
)

WORKLOADS = {origin.NAME: origin.run, proxy.NAME: proxy.run, figures.NAME: figures.run,
             slicesweep.NAME: slicesweep.run, focused.RSS: focused.run_rss,
             focused.COLLAPSING: focused.run_collapsing, focused.COLD: focused.run_cold,
             catalogue.NAME: catalogue.run, conns.NAME: conns.run, eviction.NAME: eviction.run,
             cluster.NAME: cluster.run}
# Every figure of issues 3, 6 and 12 (slice-sweep and cluster: on request).
DEFAULT_WORKLOADS = [origin.NAME, proxy.NAME, figures.NAME, catalogue.NAME, eviction.NAME]


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(i?B)?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 64M, 256K, 1048576)")
    mult = {"": 1, "K": 1024, "M": MIB, "G": 1024 * MIB}[m.group(2).upper()]
    n = int(m.group(1)) * mult
    if n <= 0:
        raise argparse.ArgumentTypeError("size must be positive")
    return n


def positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small and short: 8 MiB file, 3 rounds of 1 s, no warm-up")
    p.add_argument("--only", action="append", choices=sorted(WORKLOADS), metavar="WORKLOAD",
                   help="run only this workload (repeatable; one of: "
                        f"{', '.join(sorted(WORKLOADS))}; default: {' '.join(DEFAULT_WORKLOADS)})")
    p.add_argument("--runs", type=positive_int, help="alternating rounds (default 5; quick 3)")
    p.add_argument("--duration", type=positive_int,
                   help="seconds per timed run (default 4; quick 1)")
    p.add_argument("--warmup", type=int, help="seconds of warm-up per target (default 1; quick 0)")
    p.add_argument("--out", type=Path, help="append a dated results section to this file")
    p.add_argument("--file-size", type=parse_size, help="file size (default 64M; quick 8M)")
    p.add_argument("--range-size", type=parse_size, default=MIB, help="range length (default 1M)")
    p.add_argument("--aligned", action="store_true",
                   help="offsets on multiples of the range length (default: any byte)")
    p.add_argument("--seed", type=int, default=20240601, help="seed for file and ranges")
    p.add_argument("--connections", type=positive_int, default=64, help="wrk -c (default 64)")
    p.add_argument("--threads", type=positive_int, default=1, help="wrk -t (default 1)")
    p.add_argument("--server-cpu", type=int, default=0, help="CPU the servers are pinned to")
    p.add_argument("--wrk-cpu", type=int, default=1, help="CPU wrk is pinned to")
    p.add_argument("--no-pin", action="store_true", help="do not use taskset")
    p.add_argument("--targets", nargs="+", metavar="KEY",
                   help="only these targets (keys: aiohttp granian; nginx always runs)")
    p.add_argument("--max-other", type=float, default=15.0,
                   help="a round during which other processes use more than this percent of a "
                        "core is not counted and is run again (default 15)")
    p.add_argument("--max-rounds", type=positive_int,
                   help="give up replacing contended rounds after this many (default 2 x runs)")
    p.add_argument("--start-timeout", type=float, default=30.0,
                   help="seconds a server may take to answer /healthz")
    p.add_argument("--details", action="store_true",
                   help="also print every run and the environment")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, configs)")
    rig.add_arguments(p, parse_size)
    conns.add_arguments(p.add_argument_group("many-connections (also run by proxy)"))
    catalogue.add_arguments(p, parse_size)
    eviction.add_arguments(p)
    cluster.add_arguments(p, parse_size)
    return p


def resolve(opts: argparse.Namespace) -> argparse.Namespace:
    if opts.runs is None:
        opts.runs = 3 if opts.quick else 5
    if opts.duration is None:
        opts.duration = 1 if opts.quick else 4
    if opts.warmup is None:
        opts.warmup = 0 if opts.quick else 1
    if opts.file_size is None:
        opts.file_size = 8 * MIB if opts.quick else 64 * MIB
    if opts.range_size > opts.file_size:
        raise SystemExit("error: --range-size is larger than --file-size")
    if opts.no_pin:
        opts.server_cpu = opts.wrk_cpu = None
    rig.resolve(opts)
    conns.resolve(opts)
    cluster.resolve(opts)
    if opts.catalogue_sizes is None:
        opts.catalogue_sizes = [1000, 10_000] if opts.quick else [1000, 100_000, 1_000_000]
    if opts.eviction_objects is None:
        opts.eviction_objects = 20_000 if opts.quick else 1_000_000
    return opts


def find_tools(opts: argparse.Namespace) -> Tools:
    wrk = ensure_tool("wrk", "wrk")
    nginx = ensure_tool("nginx", "nginx-light")
    taskset = None
    if not opts.no_pin:
        ncpu = os.cpu_count() or 1
        if max(opts.server_cpu, opts.wrk_cpu) >= ncpu:
            print(f"bench: only {ncpu} CPU(s); running without pinning", file=sys.stderr)
            opts.server_cpu = opts.wrk_cpu = None
        else:
            taskset = ensure_tool("taskset", "util-linux")
    return Tools(wrk=wrk, taskset=taskset, nginx=nginx)


def _pkg_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment(tools: Tools) -> list[tuple[str, str]]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    u = platform.uname()
    nginx_v = tool_version([tools.nginx, "-v"]).replace("nginx version: ", "")
    wrk_v = tool_version([tools.wrk, "--version"])
    wrk_v = wrk_v.split(" Copyright")[0].replace("wrk ", "", 1)
    return [
        ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("uname -srm", f"{u.system} {u.release} {u.machine}"),
        ("CPU", cpu),
        ("nproc", str(os.cpu_count())),
        ("Python", platform.python_version()),
        ("aiohttp", _pkg_version("aiohttp")),
        ("granian", _pkg_version("granian")),
        ("uvloop", _pkg_version("uvloop")),
        ("nginx", nginx_v),
        ("wrk", wrk_v),
    ]


def render(reports: list[WorkloadReport], env: list[tuple[str, str]], *, details: bool) -> str:
    parts = []
    for rep in reports:
        if hasattr(rep, "markdown"):  # a report with its own tables (benchmarks/rig.py)
            parts.append(rep.markdown(details))
            continue
        parts.append(f"### {rep.title}\n\n{rep.params}\n\n{summary_table(rep.summaries)}\n")
        parts.extend(f"{n}\n" for n in rep.notes)
        if details:
            parts.append(f"<details><summary>every run</summary>\n\n"
                         f"{runs_table(rep.results, rep.labels)}\n\n</details>\n")
    if details:
        parts.append("Environment: " + "; ".join(f"{k}: {v}" for k, v in env) + "\n")
    return "\n".join(parts)


def append_out(path: Path, reports: list[WorkloadReport], env: list[tuple[str, str]]) -> None:
    envd = dict(env)
    lines = [f"## {envd['date']}", ""]
    lines += [f"- {k}: {v}" for k, v in env if k != "date"]
    lines.append("")
    for rep in reports:
        if hasattr(rep, "markdown"):
            lines += [rep.markdown(True)]
            continue
        lines += [f"### {rep.title}", "", rep.params, "", summary_table(rep.summaries), ""]
        if rep.notes:
            lines += [*rep.notes, ""]
        lines += ["<details><summary>every run</summary>", "",
                  runs_table(rep.results, rep.labels), "", "</details>", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = ""
    if path.exists() and path.stat().st_size > 0 and not path.read_text().endswith("\n\n"):
        prefix = "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(prefix + "\n".join(lines) + "\n")


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    opts = resolve(build_parser().parse_args(argv))
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    try:
        tools = find_tools(opts)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    names = opts.only or DEFAULT_WORKLOADS
    idle_busy = machine_busy_pct(1.0)
    if idle_busy > 10:
        print(f"bench: warning: the machine is already {idle_busy:.0f}% busy before starting; "
              "results will be noisy (other jobs compete for the CPUs)", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix="rangeproxy-bench-"))
    reports: list[WorkloadReport] = []
    try:
        for name in names:
            (tmp / name).mkdir()
            got = WORKLOADS[name](opts, tools, tmp / name)
            reports.extend(got if isinstance(got, list) else [got])
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if opts.keep_tmp:
            print(f"bench: temp dir kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    env = environment(tools)
    env.append(("machine busy before start", f"{idle_busy:.0f}%"))
    print(render(reports, env, details=opts.details))
    if opts.out:
        append_out(opts.out, reports, env)
        print(f"bench: appended results to {opts.out}", file=sys.stderr)
    bad = [r.name for r in reports if not r.ok]
    if bad:
        print(f"bench: error: no valid run for some target in: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
