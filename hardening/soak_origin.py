"""The soak's origin: a FaultOrigin in a process of its own that changes objects and injects faults.

Its own process, so the soak's 500 clients cannot starve it of the GIL. The bytes of every
version come from (seed, name, version) alone (:func:`version_bytes`), so the soak checks a body
against the version its ETag names without being sent the bytes. What it did goes to the events
file as JSON lines, with times on the system-wide monotonic clock the soak's clients use.

Run by :mod:`hardening.soak`: ``python -m hardening.soak_origin --objects N --seed S --events PATH``
prints ``ready <port>``, starts its schedule on the line ``go`` on stdin, stops on ``stop`` (or EOF).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import select
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import IO, Any

from tests.support.fault_origin import FaultOrigin

__all__ = ["FAULT_KINDS", "CACHE_CONTROL", "MAX_AGE", "object_names", "parse_etag", "version_bytes", "version_size"]

MAX_AGE = 2  # seconds: short, so the proxy revalidates often and meets the new versions
CACHE_CONTROL = f"max-age={MAX_AGE}"
CHANGE_EVERY = 10.0  # seconds between changes
CHANGED_EACH_TIME = 5  # objects given new bytes (new ETag) each time
FAULT_EVERY = 0.4  # seconds between injections
FAULT_WINDOW = 1.0  # seconds one injection lasts
CHANGED_FAULTED = 0.6  # share of changed objects given a fault as they change, one of BODY_KINDS
BODY_KINDS = ("reset_mid", "reset_mid", "reset_once", "slow")

# kind -> (FaultOrigin faults, whether it may cause a 5xx or a cut answer at the client).
# reset_once is one reset before the status line: the proxy must retry it, so it excuses nothing.
# slow is a body trickling within the read timeout: it excuses nothing either.
FAULT_KINDS: dict[str, tuple[dict[str, Any], bool]] = {
    "fail500": ({"fail_status": 500}, True),
    "fail503": ({"fail_status": 503}, True),
    "reset_once": ({"reset_before_status": True, "fault_times": 1}, False),
    "reset_status": ({"reset_before_status": True}, True),
    "reset_mid": ({"reset_after": 20_000}, True),
    "slow": ({"chunk_size": 16 * 1024, "chunk_delay": 0.03}, False),
    "stall": ({"delay": 0.0}, True),  # delay set to read timeout + 1 s at start-up
}

_ETAG = re.compile(r'^"v(\d+)-(.+)"$')


def object_names(n: int) -> list[str]:
    return [f"obj{i:03d}.bin" for i in range(n)]


def version_size(seed: int, name: str, version: int) -> int:
    """1 KiB to 768 KiB, log-uniform: most objects a few slices, some one, some many."""
    r = random.Random(f"{seed}/{name}/{version}/size")
    return int(2 ** r.uniform(10, 19.58))


def version_bytes(seed: int, name: str, version: int) -> bytes:
    return random.Random(f"{seed}/{name}/{version}").randbytes(version_size(seed, name, version))


def parse_etag(etag: str | None) -> tuple[str, int] | None:
    """FaultOrigin's ``"v<version>-<name>"`` -> (name, version); None for anything else."""
    m = _ETAG.match(etag or "")
    return (m.group(2), int(m.group(1))) if m else None


@dataclass
class _Active:
    name: str
    kind: str
    t0: float
    until: float


class Schedule:
    """Changes and injections on a seeded schedule, written to ``events`` as they end."""

    def __init__(self, origin: FaultOrigin, names: list[str], seed: int, events: IO[str]) -> None:
        self.origin, self.names, self.seed, self.events = origin, names, seed, events
        self.rng = random.Random(f"{seed}/schedule")
        self.active: dict[str, _Active] = {}
        self.answers: Counter[str] = Counter()  # origin answers by fault applied
        self.bodies = 0  # origin answers with a body (200, 206)
        self.requests = 0

    def emit(self, **event: object) -> None:
        self.events.write(json.dumps(event) + "\n")

    def change(self, now: float) -> None:
        """New bytes for some objects; most also get a fault at once, so that faults meet cold fills
        (a cached object's revalidations are bodiless 304s a body fault cannot touch)."""
        for name in self.rng.sample(self.names, CHANGED_EACH_TIME):
            version = self.origin.get_object(name).version + 1
            self.origin.set_object(name, version_bytes(self.seed, name, version), cache_control=CACHE_CONTROL)
            self.emit(ev="change", name=name, version=version, t=now)
            if name not in self.active and self.rng.random() < CHANGED_FAULTED:
                self.inject(now, name, self.rng.choice(BODY_KINDS))

    def inject(self, now: float, name: str | None = None, kind: str | None = None) -> None:
        if name is None:
            name = self.rng.choice([n for n in self.names if n not in self.active])
        if kind is None:
            kind = self.rng.choice(sorted(FAULT_KINDS))
        faults = dict(FAULT_KINDS[kind][0])
        if kind == "reset_mid":  # right after the status line, within the first slice, or later
            faults["reset_after"] = self.rng.choice((0, 5_000, 100_000))
        self.origin.set_fault(name, **faults)
        self.active[name] = _Active(name, kind, now, now + FAULT_WINDOW)

    def clear(self, now: float, everything: bool = False) -> None:
        for name, a in list(self.active.items()):
            if everything or now >= a.until:
                self.origin.clear_faults(name)
                del self.active[name]
                self.emit(ev="fault", name=name, kind=a.kind, excuses=FAULT_KINDS[a.kind][1], t0=a.t0,
                          t1=time.monotonic())

    def count(self) -> None:
        for rec in self.origin.take_requests():
            self.requests += 1
            self.bodies += rec.method == "GET" and rec.status in (200, 206)
            if rec.fault:
                self.answers[rec.fault.split("=")[0].strip()] += 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=50)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--events", required=True)
    ap.add_argument("--read-timeout", type=float, default=2.0, help="the proxy's upstream_read_timeout")
    ap.add_argument("--change-every", type=float, default=CHANGE_EVERY, help="seconds between changes")
    args = ap.parse_args(argv)
    FAULT_KINDS["stall"] = ({"delay": args.read_timeout + 1.0}, True)
    names = object_names(args.objects)
    with FaultOrigin() as origin, open(args.events, "w", buffering=1) as events:
        for name in names:
            origin.set_object(name, version_bytes(args.seed, name, 1), cache_control=CACHE_CONTROL)
        print(f"ready {origin.port}", flush=True)
        if sys.stdin.readline().strip() != "go":
            return 0
        sched = Schedule(origin, names, args.seed, events)
        start = time.monotonic()
        next_change, next_fault, next_count = start + args.change_every, start, start + 1.0
        while True:
            ready, _, _ = select.select([sys.stdin], [], [], 0.05)
            if ready and sys.stdin.readline().strip() in ("stop", ""):
                break
            now = time.monotonic()
            sched.clear(now)
            if now >= next_change:
                sched.change(now)
                next_change += args.change_every
            if now >= next_fault:
                sched.inject(now)
                next_fault += FAULT_EVERY
            if now >= next_count:
                sched.count()
                next_count += 1.0
        sched.clear(time.monotonic(), everything=True)
        sched.count()
        sched.emit(ev="summary", requests=sched.requests, bodies=sched.bodies, answers=dict(sched.answers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
