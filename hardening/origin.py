"""The fuzz's origin: seeded objects on a FaultOrigin, and the faults it toggles while the run goes on.

Sizes sit around the slice size (64 KiB) so slice edges, one-byte and empty objects are all
served; a few objects ("f*.bin") get breaking faults switched on and off every fraction of a
second, with short freshness so the proxy keeps going back to the origin for them. The origin
records every fault it applies (``Record.fault``, with the object and the time), which is what
a 5xx or a cut answer is matched against.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
from dataclasses import dataclass, field
from typing import Any

from hardening.inputs import Catalogue
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin, Record

__all__ = ["FAULT_KINDS", "FaultSchedule", "Injections", "OBJECTS", "install_objects"]

# name -> (size, Cache-Control sent by the origin)
OBJECTS: dict[str, tuple[int, str | None]] = {
    "o0.bin": (0, None),
    "o1.bin": (1, None),
    "o2.bin": (137, "max-age=2"),
    "o3.bin": (65535, None),
    "o4.bin": (65536, "no-cache"),
    "o5.bin": (65537, None),
    "o6.bin": (200_003, "max-age=1"),
    "o7.bin": (300_000, "no-store"),
    "f0.bin": (150_000, "max-age=1"),
    "f1.bin": (70_000, "no-store"),
    "f2.bin": (5_000, "no-cache"),
}
FAULTY = ("f0.bin", "f1.bin", "f2.bin")


def install_objects(origin: FaultOrigin) -> tuple[Catalogue, dict[str, bytes]]:
    """Put the objects on the origin; their bytes are ``seeded_bytes(size, seed=index)``."""
    data: dict[str, bytes] = {}
    etags: dict[str, str] = {}
    lms: dict[str, str] = {}
    for i, (name, (size, cc)) in enumerate(sorted(OBJECTS.items())):
        data[name] = seeded_bytes(size, 1000 + i)
        obj = origin.set_object(name, data[name], cache_control=cc)
        etags[name] = obj.etag
        lms[name] = email.utils.formatdate(obj.last_modified, usegmt=True)
    return Catalogue({n: len(b) for n, b in data.items()}, etags, lms), data


FAULT_KINDS = ("fail_status", "reset_after", "short_body", "shift_content_range", "ignore_range")


def _random_fault(rng: random.Random, kinds: tuple[str, ...] = FAULT_KINDS) -> dict[str, Any]:
    kind = rng.choice(kinds)
    if kind == "fail_status":
        return {"fail_status": rng.choice([500, 502, 503])}  # not 501: a stored negative answer (negative_ttl)
    if kind == "reset_after":
        return {"reset_after": rng.choice([0, 10, 1000, 70000])}
    if kind == "short_body":
        return {"short_body": rng.choice([0, 100, 65536])}
    if kind == "shift_content_range":
        return {"shift_content_range": rng.choice([1, -1, 5000])}
    return {"ignore_range": True}


@dataclass
class FaultSchedule:
    """Switches a random breaking fault on or off on each faulty object, at random intervals."""

    origin: FaultOrigin
    rng: random.Random
    kinds: tuple[str, ...] = FAULT_KINDS
    windows: list[tuple[str, str, float, float | None]] = field(default_factory=list)  # name, fault, on, off
    switches: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        current: dict[str, int] = {}
        while not stop.is_set():
            for name in FAULTY:
                if name in current:
                    i = current.pop(name)
                    n, f, on, _ = self.windows[i]
                    self.windows[i] = (n, f, on, loop.time())
                self.origin.clear_faults(name)
                if self.rng.random() < 0.5:
                    fault = _random_fault(self.rng, self.kinds)
                    self.origin.set_fault(name, **fault)
                    current[name] = len(self.windows)
                    self.windows.append((name, repr(fault), loop.time(), None))
                    self.switches += 1
            try:
                await asyncio.wait_for(stop.wait(), self.rng.uniform(0.2, 1.0))
            except asyncio.TimeoutError:
                pass
        for name in FAULTY:
            self.origin.clear_faults(name)


# Seconds an idle upstream connection stays in the proxy's pool (aiohttp's TCPConnector keep-alive,
# the proxy's default): a connection the origin reset after a whole answer can meet a request that long after.
POOL_IDLE = 15.0


def _faulted(r: Record) -> bool:
    fault = (r.fault or "").replace("client-gone", "").strip()
    return bool(fault) or (r.status or 0) >= 500


def _reset_after_whole(r: Record) -> bool:
    """A reset_after fault that sent the whole answer first: the RST comes after the proxy may
    have put the connection back in its pool, so it can hit the next request on that connection,
    for any object (an origin closing a kept-alive connection under a request does the same)."""
    if not (r.fault or "").startswith("reset_after=") or r.span is None:
        return False
    sent = int((r.fault or "").split("=")[1].split()[0])
    return sent >= r.span[1] - r.span[0] + 1


class Injections:
    """The faults the origin applied, by object: (start, end) of each faulted origin answer; and
    the resets of connections after whole answers, which may hit any object's next request."""

    def __init__(self) -> None:
        self.by_name: dict[str, list[tuple[float, float]]] = {}
        self.connection_resets: list[tuple[float, float]] = []
        self._pending: list[Record] = []
        self.count = 0

    def harvest(self, origin: FaultOrigin, final: bool = False) -> None:
        records = self._pending + origin.take_requests()
        self._pending = []
        for r in records:
            if not r.completed and not final:
                self._pending.append(r)
            elif _faulted(r):
                span = (r.t_start, r.t_end if r.t_end is not None else 1e18)
                self.by_name.setdefault(r.name, []).append(span)
                if _reset_after_whole(r):
                    self.connection_resets.append(span)
                self.count += 1

    def explains(self, name: str | None, t0: float, t1: float, slack: float = 1.0) -> bool:
        """A fault on ``name`` (on any object when None: the target named none the fuzz knows)
        whose origin answer overlapped [t0, t1], give or take ``slack`` seconds."""
        lists = [self.by_name.get(name, [])] if name is not None else list(self.by_name.values())
        return any(s <= t1 + slack and e >= t0 - slack for spans in lists for s, e in spans)

    def reset_nearby(self, t0: float, t1: float, slack: float = POOL_IDLE) -> bool:
        """A connection reset after a whole answer (:func:`_reset_after_whole`) around [t0, t1]: up
        to :data:`POOL_IDLE` before, as long as the reset connection may wait in the proxy's pool."""
        return any(s <= t1 + slack and e >= t0 - slack for s, e in self.connection_resets)
