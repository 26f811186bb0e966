"""The soak: many concurrent clients against a real proxy in front of a misbehaving, changing origin.

``python -m hardening.soak [--clients 500] [--seconds 60] [--objects 50] [--workers N] [--seed S]``

The origin (:mod:`hardening.soak_origin`, a process of its own) changes 5 objects every 10 s and
injects resets (before the status line, once or for a while; in or after the first slice), 500s,
503s, stalls past the read timeout and slow bodies. The clients ask for single ranges,
multi-ranges, whole objects, HEADs, conditional requests (If-None-Match, If-Range,
If-Modified-Since) and no-cache ranges; every answer is checked against the version its ETag
names (:mod:`hardening.soak_check`). Passes (exit 0) with 0 wrong bytes and no other wrong answer;
no version answered longer than max-age (+ 1 s) after the origin replaced it; every 5xx and cut
answer matching a fault injected on that object about then that can cause it (a cut answer also
a change of the object while it was sent: never spliced); the proxy's RSS (whole process tree)
growing at most 30 MiB over the last two thirds of the run; its open descriptors at most the
start level plus the held-descriptor limit of each worker (:func:`proxy.cache.store.held_fd_budget`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Mapping

import aiohttp
import uvloop
from multidict import CIMultiDict

from benchmarks.harness import process_tree
from hardening.soak_check import Answer, check
from hardening.soak_origin import MAX_AGE, object_names, parse_etag, version_bytes, version_size
from proxy.cache.store import held_fd_budget
from tests.support.servers import ProxyProc, start_proxy, subprocess_env

__all__ = ["main"]

MiB = 1024 * 1024
RSS_LIMIT = 30 * MiB
READ_TIMEOUT = 2.0  # the proxy's upstream_read_timeout: a stall of 3 s is a 504
KINDS = {"range": 30, "multi": 15, "full": 12, "head": 10, "inm": 12, "ifrange": 12, "ims": 6, "nocache": 4}


@dataclass
class Tally:
    by_kind: Counter[tuple[str, int | str]] = field(default_factory=Counter)
    checked: int = 0
    wrong: int = 0
    problems: list[str] = field(default_factory=list)
    # (name, what, t0, t1, version answered or 0): 5xx, cut and failed answers
    failures: list[tuple[str, str, float, float, int]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    versions: list[tuple[str, int, float]] = field(default_factory=list)  # (name, version answered, t0)


class Known:
    """What the clients have learnt of each object: the ETags seen, their Last-Modified, a length."""

    def __init__(self, seed: int, names: list[str]) -> None:
        self.seed = seed
        self.etags: dict[str, list[str]] = {n: [f'"v1-{n}"'] for n in names}
        self.length: dict[str, int] = {n: version_size(seed, n, 1) for n in names}
        self.modified: dict[str, float] = {}
        self._bytes: dict[tuple[str, int], bytes] = {}

    def version(self, name: str, n: int) -> bytes:
        key = (name, n)
        if key not in self._bytes:
            self._bytes[key] = version_bytes(self.seed, name, n)
        return self._bytes[key]

    def learn(self, name: str, headers: Mapping[str, str]) -> None:
        etag = headers.get("ETag")
        named = parse_etag(etag)
        if named is None or named[0] != name or etag is None:
            return
        if etag not in self.etags[name]:
            self.etags[name].append(etag)
            self.length[name] = len(self.version(*named))
        lm = headers.get("Last-Modified")
        if lm and etag not in self.modified:
            self.modified[etag] = parsedate_to_datetime(lm).timestamp()


def _spec(rng: random.Random, size: int) -> str:
    form = rng.random()
    if form < 0.1:
        return f"-{rng.randint(1, max(1, size))}"
    first = rng.randrange(max(1, size))
    if form < 0.2:
        return f"{first}-"
    return f"{first}-{min(size + 100, first + int(2 ** rng.uniform(0, 18)))}"


def request_for(kind: str, name: str, rng: random.Random, known: Known) -> tuple[str, dict[str, str]]:
    size = known.length[name]
    tag = rng.choice(known.etags[name][-3:])
    if kind == "head":
        return "HEAD", {}
    if kind == "full":
        return "GET", {}
    if kind == "inm":
        return "GET", {"If-None-Match": tag}
    if kind == "ims":
        lm = known.modified.get(tag, time.time() - 3600)
        return "GET", {"If-Modified-Since": formatdate(lm + rng.choice((-1, 0, 1)), usegmt=True)}
    if kind == "ifrange":
        return "GET", {"Range": "bytes=" + _spec(rng, size), "If-Range": tag}
    if kind == "nocache":  # RFC 9111 §5.2.1.4: revalidated with the origin first, so faults meet it
        return "GET", {"Range": "bytes=" + _spec(rng, size), "Cache-Control": "no-cache"}
    if kind == "multi":
        cuts = sorted(rng.sample(range(max(8, size)), 6))
        specs = [f"{cuts[i]}-{cuts[i + 1] - 1}" for i in range(0, 2 * rng.randint(2, 3), 2)]
        return "GET", {"Range": "bytes=" + ",".join(specs)}
    return "GET", {"Range": "bytes=" + _spec(rng, size)}


async def client(i: int, base: str, session: aiohttp.ClientSession, known: Known, tally: Tally, seed: int,
                 deadline: float) -> None:
    rng = random.Random(f"{seed}/client/{i}")
    names = list(known.etags)
    kinds, weights = list(KINDS), list(KINDS.values())
    while time.monotonic() < deadline:
        name = rng.choice(names)
        kind = rng.choices(kinds, weights)[0]
        method, headers = request_for(kind, name, rng, known)
        t0 = time.monotonic()
        parts: list[bytes] = []
        status: int | str = "error"
        got: CIMultiDict[str] = CIMultiDict()
        complete = False
        try:
            async with session.request(method, f"{base}/{name}", headers=headers) as resp:
                status, got = resp.status, CIMultiDict(resp.headers)
                while chunk := await resp.content.readany():
                    parts.append(chunk)
                complete = True
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            if status == "error":
                status = f"error:{exc.__class__.__name__}"
        t1 = time.monotonic()
        tally.latencies.append(t1 - t0)
        tally.by_kind[(kind, status)] += 1
        if not isinstance(status, int):
            tally.failures.append((name, f"{status} ({kind})", t0, t1, 0))
            continue
        named = parse_etag(got.get("ETag"))
        if not complete:
            tally.failures.append((name, f"cut {status} ({kind})", t0, t1, named[1] if named else 0))
        if status >= 500:
            tally.failures.append((name, f"{status} ({kind} {headers})", t0, t1, 0))
        known.learn(name, got)
        if named is not None and status in (200, 206, 304):
            tally.versions.append((named[0], named[1], t0))
        verdict = check(Answer(name, method, headers, status, got, b"".join(parts), complete), known.version,
                        known.modified)
        tally.checked += verdict.checked
        tally.wrong += verdict.wrong
        for p in verdict.problems:
            tally.problems.append(f"{kind} {name} {headers}: {p}")


def open_fds(pid: int) -> int:
    n = 0
    for p in process_tree(pid):
        try:
            n += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            pass
    return n


class Sampler(threading.Thread):
    """RSS and open descriptors of the proxy's process tree once a second, from ``start``."""

    def __init__(self, proxy: ProxyProc, start: float) -> None:
        super().__init__(daemon=True)
        self.proxy, self.start_time = proxy, start
        self.samples: list[tuple[float, int, int]] = []  # (seconds since start, rss, fds)
        self.stopped = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopped.is_set():
            self.samples.append((time.monotonic() - self.start_time, self.proxy.tree_rss_bytes(),
                                 open_fds(self.proxy.pid)))
            n += 1
            self.stopped.wait(max(0.0, self.start_time + n - time.monotonic()))


class OriginProc:
    """hardening.soak_origin in a process of its own."""

    def __init__(self, objects: int, seed: int, workdir: Path, change_every: float) -> None:
        self.events = workdir / "origin-events.jsonl"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hardening.soak_origin", "--objects", str(objects), "--seed", str(seed),
             "--events", str(self.events), "--read-timeout", str(READ_TIMEOUT), "--change-every", str(change_every)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=subprocess_env())
        assert self.proc.stdout is not None and self.proc.stdin is not None
        line = self.proc.stdout.readline().split()
        if line[:1] != ["ready"]:
            self.proc.kill()
            raise RuntimeError(f"the soak origin did not start: {line}")
        self.url = f"http://127.0.0.1:{line[1]}"

    def say(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def stop(self) -> list[dict[str, object]]:
        self.say("stop")
        self.proc.wait(30)
        return [json.loads(line) for line in self.events.read_text().splitlines() if line.strip()]


# What a client saw -> the injected faults that can cause it. A 500/503 is the origin's own, passed
# through; a 502 is a connection lost before the proxy answered; a cut answer is any failure of a fill
# the answer needed after its first bytes went out.
EXCUSED_BY = {"500": {"fail500"}, "503": {"fail503"}, "502": {"reset_status", "reset_mid"}, "504": {"stall"},
              "cut": {"reset_mid", "reset_status", "fail500", "fail503", "stall"}}  # a fill failing mid-answer
MATCH_SLACK = {"stall": READ_TIMEOUT + 1.0}  # the 504 comes a read timeout after the stall began
SLACK = 1.0  # a client that joined a fill that met the fault may see it this long after the fault ended


def match(failures: list[tuple[str, str, float, float, int]], events: list[dict[str, object]]
          ) -> tuple[int, int, list[str]]:
    """5xx and cut answers, each matched to a fault injected on that object about then that can
    cause it; a cut answer also to a change of the object while it was sent (its first bytes were
    of the old version, the rest would have been of the new: cut, never spliced). (Matched to a
    fault, cut by a change, what matched nothing.)"""
    windows: dict[str, list[tuple[str, float, float]]] = {}
    every: dict[str, list[tuple[str, float, float]]] = {}  # with those that excuse nothing, to report
    changes: dict[str, list[tuple[int, float]]] = {}
    for e in events:
        if e.get("ev") == "change":
            change = (int(e["version"]), float(e["t"]))  # type: ignore[call-overload, arg-type]
            changes.setdefault(str(e["name"]), []).append(change)
        if e.get("ev") != "fault":
            continue
        window = (str(e["kind"]), float(e["t0"]), float(e["t1"]))  # type: ignore[arg-type]
        every.setdefault(str(e["name"]), []).append(window)
        if e["excuses"]:
            windows.setdefault(str(e["name"]), []).append(window)
    matched, by_change, unmatched = 0, 0, []
    for name, what, t0, t1, version in failures:
        kinds = EXCUSED_BY.get(what.split()[0], {"reset_status", "reset_mid"})
        if any(k in kinds and f0 <= t1 and t0 <= f1 + MATCH_SLACK.get(k, SLACK)
               for k, f0, f1 in windows.get(name, [])):
            matched += 1
        elif what.startswith("cut") and version and any(
                v > version and t0 - MAX_AGE - SLACK <= c <= t1 for v, c in changes.get(name, [])):
            by_change += 1
        else:
            near = [f"{k} {f0:.2f}-{f1:.2f}" for k, f0, f1 in every.get(name, []) if abs(f0 - t0) < 10]
            wall = time.strftime("%H:%M:%S", time.localtime(t0 + time.time() - time.monotonic()))
            unmatched.append(f"{what} for {name} at {t0:.2f}-{t1:.2f} ({wall}) with no fault that causes it "
                             f"about then (faults within 10 s: {', '.join(near) or 'none'})")
    return matched, by_change, unmatched


STALE_SLACK = 1.0  # seconds past max-age an old version may still be answered (requests under way)


def stale(versions: list[tuple[str, int, float]], events: list[dict[str, object]]) -> tuple[int, float]:
    """Answers of a version superseded more than max-age + STALE_SLACK before they were asked
    (RFC 9111 §4.2: a stored response may be reused only while fresh), and the latest of them."""
    changed = {(str(e["name"]), int(e["version"])): float(e["t"])  # type: ignore[call-overload, arg-type]
               for e in events if e.get("ev") == "change"}
    n, worst = 0, 0.0
    for name, version, t0 in versions:
        c = changed.get((name, version + 1))
        if c is not None and t0 > c + MAX_AGE + STALE_SLACK:
            n += 1
            worst = max(worst, t0 - c)
    return n, worst


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


async def drive(base: str, clients: int, seconds: float, known: Known, tally: Tally, seed: int) -> None:
    conn = aiohttp.TCPConnector(limit=clients, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout, auto_decompress=False,
                                     cookie_jar=aiohttp.DummyCookieJar()) as session:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(client(i, base, session, known, tally, seed, deadline) for i in range(clients)))


def run(args: argparse.Namespace) -> bool:
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    names = object_names(args.objects)
    budget = held_fd_budget()  # as each proxy process computes it (same limits, inherited)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = Path(args.keep or tmp)
        origin = OriginProc(args.objects, seed, work, args.change_every)
        proxy = start_proxy(origin.url, work / "proxy", workers=args.workers, access_log=False,
                            upstream_read_timeout=READ_TIMEOUT, log_level="info" if args.keep else "warning")
        try:
            fds_start = open_fds(proxy.pid)
            known, tally = Known(seed, names), Tally()
            t_start = time.monotonic()
            sampler = Sampler(proxy, t_start)
            sampler.start()
            origin.say("go")
            uvloop.run(drive(proxy.url, args.clients, args.seconds, known, tally, seed))
            elapsed = time.monotonic() - t_start
            sampler.stopped.set()
            sampler.join()
            events = origin.stop()
            alive = proxy.alive()
        finally:
            proxy.stop(check=False)
            if origin.proc.poll() is None:
                origin.proc.kill()
        return report(args, seed, elapsed, tally, events, sampler.samples, fds_start, budget, alive,
                      proxy.stderr_text())


def report(args: argparse.Namespace, seed: int, elapsed: float, tally: Tally, events: list[dict[str, object]],
           samples: list[tuple[float, int, int]], fds_start: int, budget: int, alive: bool, stderr: str) -> bool:
    processes = args.workers  # each worker holds its own descriptors; a supervisor holds none
    total = sum(tally.by_kind.values())
    print(f"soak: {args.clients} clients, {elapsed:.1f} s, {args.objects} objects, workers={args.workers}, "
          f"seed={seed}, load average {os.getloadavg()[0]:.2f} at the end")
    print(f"requests: {total} ({total / elapsed:.0f}/s)")
    kinds = sorted({k for k, _ in tally.by_kind})
    for kind in kinds:
        row = {s: n for (k, s), n in tally.by_kind.items() if k == kind}
        print(f"  {kind:8} " + "  ".join(f"{s}: {n}" for s, n in sorted(row.items(), key=lambda x: str(x[0]))))
    faults = Counter(str(e["kind"]) for e in events if e.get("ev") == "fault")
    changes = sum(1 for e in events if e.get("ev") == "change")
    summary = next((e for e in events if e.get("ev") == "summary"), {})
    print(f"origin: {summary.get('requests', '?')} requests ({summary.get('bodies', '?')} with a body), "
          f"{changes} object changes; faults injected "
          f"(1 s windows): " + ", ".join(f"{k} {n}" for k, n in sorted(faults.items())))
    print(f"  origin answers faulted: {summary.get('answers', {})}")
    matched, by_change, unmatched = match(tally.failures, events)
    fivexx = sum(n for (_, s), n in tally.by_kind.items() if isinstance(s, int) and s >= 500)
    print(f"5xx seen: {fivexx}; 5xx and cut answers: {len(tally.failures)}, matched to a fault {matched}, "
          f"cut by a change of the object while sent {by_change}, unmatched {len(unmatched)}")
    n_stale, worst = stale(tally.versions, events)
    print(f"answers of a version superseded more than max-age {MAX_AGE} s + {STALE_SLACK:.0f} s before: {n_stale}"
          + (f" (the latest {worst:.1f} s after the change)" if n_stale else ""))
    print(f"bytes checked: {tally.checked:,}; wrong bytes: {tally.wrong}; other wrong answers: {len(tally.problems)}")
    rss_from = args.seconds / 3
    window = [s for s in samples if s[0] >= rss_from]
    at = window[0][1] if window else 0
    growth = max(s[1] for s in window) - at if window else 0
    fds_max = max((s[2] for s in samples), default=fds_start)
    end_t, end_rss = samples[-1][0], samples[-1][1]
    print(f"RSS (process tree): {at / MiB:.1f} MiB at {rss_from:.0f} s, {end_rss / MiB:.1f} MiB at {end_t:.0f} s, "
          f"growth over the last {args.seconds - rss_from:.0f} s {growth / MiB:.1f} MiB (limit {RSS_LIMIT // MiB})")
    fd_limit = fds_start + budget * processes
    print(f"open fds: {fds_start} at the start, {fds_max} at most (limit {fd_limit}: + {budget} held per process "
          f"x {processes} worker(s))")
    print(f"latency: p50 {pct(tally.latencies, 0.5) * 1000:.1f} ms, p99 {pct(tally.latencies, 0.99) * 1000:.1f} ms")
    fails = []
    if tally.wrong:
        fails.append(f"{tally.wrong} wrong bytes")
    if tally.problems:
        fails.append(f"{len(tally.problems)} wrong answers")
    if unmatched:
        fails.append(f"{len(unmatched)} 5xx or cut answers with no fault")
    if n_stale:
        fails.append(f"{n_stale} answers of a superseded version past max-age")
    if growth > RSS_LIMIT:
        fails.append(f"RSS grew {growth / MiB:.1f} MiB")
    if fds_max > fd_limit:
        fails.append(f"{fds_max} open fds")
    if not alive:
        fails.append("the proxy died")
    if total == 0:
        fails.append("no requests")
    for line in (tally.problems + unmatched)[:20]:
        print("  !", line)
    if fails:
        print("FAIL: " + "; ".join(fails))
        tail = [ln for ln in stderr.splitlines() if "Traceback" in ln or "ERROR" in ln][:10]
        for ln in tail:
            print("  proxy:", ln)
        return False
    print("PASS")
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--objects", type=int, default=50)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=None, help="replays a run's choices (default: random, printed)")
    ap.add_argument("--keep", default=None, help="a directory to keep the proxy's log and the origin's events in")
    ap.add_argument("--change-every", type=float, default=10.0, help="seconds between changes of 5 objects")
    args = ap.parse_args(argv)
    if args.objects < 6:
        ap.error("--objects: at least 6 (5 change every 10 s)")
    return 0 if run(args) else 1


if __name__ == "__main__":
    sys.exit(main())
