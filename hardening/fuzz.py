"""``python -m hardening.fuzz``: generated request heads against a real proxy in front of a fault origin.

Hypothesis generates connections (pipelined, sometimes half-closed) in a thread; 32 connections
at a time are sent over raw sockets to a real proxy (``python -m proxy``, cache in a temporary
directory) whose origin injects 5xx, resets, short bodies, shifted ranges and ignored ranges on
some objects, switched on and off as the run goes. The run fails (exit status 1) on any wrong
byte, inconsistent Content-Range, hang, crash, 5xx or cut answer no injected fault explains, or
RSS growth over 20 MiB, and prints the seed: ``--seed`` replays the same inputs (the timing of
faults and the interleaving of connections differ from run to run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import FlakyStrategyDefinition
from hypothesis import strategies as st

from hardening.checks import KNOWN_BUGS, Judge
from hardening.inputs import Catalogue, ConnectionInput, connections
from hardening.origin import FAULT_KINDS, FaultSchedule, Injections, install_objects
from hardening.wire import exchange
from tests.support.fault_origin import FaultOrigin
from tests.support.servers import ProxyProc, start_proxy

__all__ = ["FuzzConfig", "FuzzReport", "main", "run"]

MIB = 1024 * 1024
CONNECTIONS_PER_EXAMPLE = 8


@dataclass
class FuzzConfig:
    inputs: int = 100_000  # request heads to send
    seconds: float = 900.0  # stop generating after this long, whatever the count
    seed: int = 0
    concurrency: int = 32  # connections open at once
    timeout: float = 10.0  # seconds for a connection's answers, all of them (longer: a hang)
    tolerate: frozenset[str] = frozenset()  # KNOWN_BUGS names counted instead of failing
    rss_check: bool = True
    rss_wait: float = 10.0  # seconds after the run before the second RSS sample
    rss_limit: int = 20 * MIB
    warmup: int = 0  # inputs before the first RSS sample (0: a tenth of the inputs, at least 500)
    progress_every: float = 60.0  # seconds between progress lines
    fault_kinds: tuple[str, ...] = FAULT_KINDS  # the faults the origin is switched to (hardening.origin)


@dataclass
class FuzzReport:
    seed: int
    inputs: int = 0
    connections: int = 0
    half_closed: int = 0
    invalid_connections: int = 0
    elapsed: float = 0.0
    rss_start: int = 0
    rss_end: int = 0
    injected: int = 0
    fault_switches: int = 0
    judge: Judge | None = None
    problems: list[str] = field(default_factory=list)  # crash, health, RSS: failures outside the judge
    tracebacks: int = 0

    @property
    def failures(self) -> int:
        return len(self.problems) + (len(self.judge.failures) if self.judge else 0)

    def lines(self, show: int = 10) -> list[str]:
        j = self.judge
        assert j is not None
        out = [
            f"seed {self.seed}: {self.inputs} inputs on {self.connections} connections "
            f"({self.half_closed} half-closed, {self.invalid_connections} with an invalid request) in {self.elapsed:.1f} s",
            "responses: " + ", ".join(f"{k} {v}" for k, v in sorted(j.statuses.items())),
            f"bytes compared with the origin's data: {j.bytes_checked}; faults the origin applied: {self.injected} "
            f"({self.fault_switches} fault switches)",
            f"RSS of the proxy: {self.rss_start / MIB:.1f} MiB after the warm-up, {self.rss_end / MIB:.1f} MiB "
            f"after the run ({(self.rss_end - self.rss_start) / MIB:+.1f} MiB)",
        ]
        out += [f"  {k}: {v}" for k, v in sorted(j.notes.items())]
        out += [f"  tolerated known bug {k} ({KNOWN_BUGS[k]}): {v}" for k, v in sorted(j.tolerated.items())]
        if self.tracebacks:
            out.append(f"  tracebacks in the proxy's log: {self.tracebacks}")
        kinds = Counter(f.kind for f in j.failures)
        out.append(f"FAILURES: {self.failures} " + " ".join(f"{k}={v}" for k, v in sorted(kinds.items()))
                   if self.failures else "passed: no failure")
        out += self.problems
        shown: Counter[str] = Counter()
        seen: set[tuple[str, bytes]] = set()
        for f in j.failures:  # a few of each kind, each input once (Hypothesis repeats some)
            if (f.kind, f.raw) in seen:
                continue
            seen.add((f.kind, f.raw))
            if shown[f.kind] < max(1, show // max(1, len(kinds))) and sum(shown.values()) < show:
                shown[f.kind] += 1
                out.append(f.show())
        if self.failures:
            out.append(f"replay the inputs: python -m hardening.fuzz --seed {self.seed}")
        return out


class _Enough(Exception):
    """Raised inside the Hypothesis loop to end generation (count or time reached)."""


def _produce(cat: Catalogue, cfg: FuzzConfig, put: "_Put", deadline: float, warm_at: int,
             pause: "_Pause") -> int:
    """Run Hypothesis in this thread; hand each example's connections to the sender. Returns
    the number of request heads generated."""
    produced = 0
    paused = stopping = False
    conn_strategy = connections(cat)

    @settings(max_examples=cfg.inputs, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet, derandomize=False)
    @hypothesis_seed(cfg.seed)
    @given(st.data())
    def example(data: st.DataObject) -> None:
        nonlocal produced, paused, stopping
        if stopping or produced >= cfg.inputs or time.monotonic() > deadline:
            stopping = True
            raise _Enough()
        if not paused and produced >= warm_at:
            paused = True
            pause()
        batch = [data.draw(conn_strategy) for _ in range(CONNECTIONS_PER_EXAMPLE)]
        produced += sum(len(c.requests) for c in batch)
        put(batch)

    try:
        example()
    except (_Enough, FlakyStrategyDefinition):
        # Hypothesis replays a raising example and, as it stops drawing where it drew before,
        # may call the stop "flaky": either way generation ends here, as asked.
        if not stopping:
            raise
    return produced


class _Put:
    """Hands a batch from the generating thread to the event loop's queue (blocks when full)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, q: "asyncio.Queue[ConnectionInput]") -> None:
        self.loop, self.q = loop, q

    async def _put_all(self, batch: list[ConnectionInput]) -> None:
        for c in batch:
            await self.q.put(c)

    def __call__(self, batch: list[ConnectionInput]) -> None:
        asyncio.run_coroutine_threadsafe(self._put_all(batch), self.loop).result()


class _Pause:
    """The warm-up's end: wait until every sent connection is answered, then sample the RSS."""

    def __init__(self, loop: asyncio.AbstractEventLoop, q: "asyncio.Queue[ConnectionInput]",
                 proxy: ProxyProc, report: FuzzReport) -> None:
        self.loop, self.q, self.proxy, self.report = loop, q, proxy, report

    async def _settle(self) -> None:
        await self.q.join()
        await asyncio.sleep(2.0)  # let the in-flight fills end and their buffers go
        self.report.rss_start = self.proxy.rss_bytes()

    def __call__(self) -> None:
        asyncio.run_coroutine_threadsafe(self._settle(), self.loop).result()


def _health(proxy: ProxyProc) -> str | None:
    """None when /healthz answers 200 (and, in the agreed JSON body, status ok or degraded), else
    what it answered. A plain-text body is accepted too: the JSON contract lands in another branch."""
    try:
        with urllib.request.urlopen(proxy.url + "/healthz", timeout=5) as r:
            raw = r.read()
            if r.status != 200:
                return f"{r.status} {raw[:200]!r}"
            if (r.headers.get("Content-Type") or "").startswith("application/json"):
                status = json.loads(raw).get("status")
                if status not in ("ok", "degraded"):
                    return f"status {status!r} in {raw[:200]!r}"
            return None
    except Exception as e:  # noqa: BLE001 - any failure to answer is the finding
        return repr(e)


async def _run_async(cfg: FuzzConfig, origin: FaultOrigin, proxy: ProxyProc, cat: Catalogue,
                     judge: Judge, report: FuzzReport) -> None:
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[ConnectionInput] = asyncio.Queue(maxsize=4 * cfg.concurrency)
    injections = Injections()
    schedule = FaultSchedule(origin, random.Random(cfg.seed), kinds=cfg.fault_kinds)
    stop = asyncio.Event()

    async def worker() -> None:
        while True:
            conn = await q.get()
            try:
                ex = await exchange(proxy.port, conn.raw, [r.method for r in conn.requests], conn.half_close,
                                    cfg.timeout)
                judge.judge(conn, ex)
                report.connections += 1
                report.inputs += len(conn.requests)
                report.half_closed += conn.half_close
                report.invalid_connections += not conn.valid
            finally:
                q.task_done()

    async def harvest() -> None:
        while not stop.is_set():
            injections.harvest(origin)
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass

    async def progress() -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), cfg.progress_every)
            except asyncio.TimeoutError:
                print(f"  ... {report.inputs} inputs in {time.monotonic() - t0:.0f} s, "
                      f"{len(judge.failures)} failures so far", flush=True)

    t0 = time.monotonic()
    workers = [asyncio.create_task(worker()) for _ in range(cfg.concurrency)]
    side = [asyncio.create_task(schedule.run(stop)), asyncio.create_task(harvest()), asyncio.create_task(progress())]
    warm_at = cfg.warmup or max(500, cfg.inputs // 10)
    produced = await loop.run_in_executor(
        None, _produce, cat, cfg, _Put(loop, q), t0 + cfg.seconds, warm_at, _Pause(loop, q, proxy, report))
    await q.join()
    report.elapsed = time.monotonic() - t0
    stop.set()
    await asyncio.gather(*side)
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    await loop.run_in_executor(None, origin.wait_idle, 10.0)
    injections.harvest(origin, final=True)
    judge.settle(injections.explains, injections.reset_nearby)
    report.injected = injections.count
    report.fault_switches = schedule.switches
    assert produced >= report.inputs


def run(cfg: FuzzConfig, workdir: Path) -> FuzzReport:
    """One fuzz run: origin, proxy, inputs, checks. The proxy is stopped at the end."""
    report = FuzzReport(seed=cfg.seed)
    with FaultOrigin() as origin:
        cat, data = install_objects(origin)
        judge = Judge(data, tolerate=cfg.tolerate)
        report.judge = judge
        proxy = start_proxy(origin.url, workdir, access_log=False)
        try:
            report.rss_start = proxy.rss_bytes()
            asyncio.run(_run_async(cfg, origin, proxy, cat, judge, report))
            if not proxy.alive():
                report.problems.append(f"[crash] the proxy exited with {proxy.proc.poll()}:\n"
                                       f"{proxy.stderr_text()[-3000:]}")
            elif (health := _health(proxy)) is not None:
                report.problems.append(f"[health] /healthz after the run: {health}")
            if cfg.rss_check and proxy.alive():
                time.sleep(cfg.rss_wait)  # the specified measuring point: RSS this long after the run
                report.rss_end = proxy.rss_bytes()
                if report.rss_end - report.rss_start > cfg.rss_limit:
                    report.problems.append(
                        f"[rss] the proxy's RSS grew by {(report.rss_end - report.rss_start) / MIB:.1f} MiB "
                        f"(limit {cfg.rss_limit / MIB:.0f} MiB)")
            else:
                report.rss_end = proxy.rss_bytes()
            for name, want in data.items():
                if origin.get_object(name).data != want:
                    report.problems.append(f"[harness] the origin's {name} changed during the run")
        finally:
            if proxy.alive():
                rc = proxy.stop(check=False)
                if rc != 0:
                    report.problems.append(f"[stop] the proxy exited with {rc} after SIGTERM")
            report.tracebacks = proxy.stderr_text().count("Traceback")
    return report


def _parse(argv: list[str] | None) -> tuple[FuzzConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m hardening.fuzz", description=__doc__.split("\n")[0])
    p.add_argument("--inputs", type=int, default=100_000, help="request heads to send (default 100000)")
    p.add_argument("--seconds", type=float, default=900.0, help="time cap of the generation (default 900)")
    p.add_argument("--seed", type=int, default=None, help="Hypothesis seed (default: a random one, printed)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds for a connection's answers (a hang)")
    p.add_argument("--tolerate", action="append", default=[], choices=sorted(KNOWN_BUGS),
                   help="count this known bug instead of failing (repeatable)")
    p.add_argument("--no-rss-check", action="store_true")
    p.add_argument("--show", type=int, default=10, help="failures printed in full")
    p.add_argument("--workdir", type=Path, default=None, help="keep the proxy's log and cache here (default: a "
                                                               "temporary directory, removed)")
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(2**32)
    return FuzzConfig(inputs=a.inputs, seconds=a.seconds, seed=seed, concurrency=a.concurrency, timeout=a.timeout,
                      tolerate=frozenset(a.tolerate), rss_check=not a.no_rss_check), a


def main(argv: list[str] | None = None) -> int:
    cfg, args = _parse(argv)
    # The fault origin's own server log (a request body cut when the proxy drops a client) is noise here.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    print(f"hardening.fuzz: seed {cfg.seed} ({cfg.inputs} inputs, at most {cfg.seconds:.0f} s; "
          f"replay with --seed {cfg.seed})", flush=True)
    if args.workdir is not None:
        report = run(cfg, args.workdir)
        print(f"the proxy's log: {args.workdir}")
    else:
        with tempfile.TemporaryDirectory(prefix="rangeproxy-fuzz-") as tmp:
            report = run(cfg, Path(tmp))
    for line in report.lines(args.show):
        print(line)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
