"""In-flight slice fills that any number of requests read as the bytes arrive, and their registry.

One upstream fetch fills a slice; every request that needs it attaches to the
fill and is woken on each appended chunk (no polling, no waiting for the whole
slice: nginx's cache lock makes waiters poll every 500 ms). Fills are added to
and removed from an object's flights only here (:class:`FlightRegistry`), which
also accounts for the memory they hold (:class:`proxy.cache.budget.ByteBudget`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import AsyncGenerator, Iterable, Mapping

from proxy.cache.budget import ByteBudget
from proxy.core.representation import ObjectMeta
from proxy.core.slices import SliceGeometry, Unit, unit_slice
from proxy.http.errors import UpstreamError

__all__ = ["SliceFill", "ObjectFlights", "FlightRegistry", "FillAbandoned"]


class FillAbandoned(UpstreamError):
    """The run that owned this fill stopped before reaching it."""


class SliceFill:
    """One slice being filled; ``read(lo, hi)`` yields its bytes as they arrive."""

    __slots__ = ("index", "size", "chunks", "filled", "done", "error", "budget", "stored", "spent",
                 "_waiters", "_spent_waiters")

    def __init__(self, index: int, size: int) -> None:
        self.index = index
        self.size = size
        self.chunks: list[bytes] = []
        self.filled = 0
        self.done = False
        self.error: BaseException | None = None
        self.budget = 0  # bytes of the engine's fill budget this fill holds (see proxy.cache.budget)
        self.stored = False  # on disk: readers may go on from the file
        self.spent = False  # a private read is through with it (see ObjectFlights.private)
        self._waiters: list[asyncio.Future[None]] = []
        self._spent_waiters: list[asyncio.Future[None]] = []

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def append(self, data: bytes) -> None:
        assert not self.done and self.filled + len(data) <= self.size
        if not self.spent:
            self.chunks.append(data)
        self.filled += len(data)
        self._wake()

    def finish(self) -> None:
        assert self.filled == self.size
        self.done = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if not self.done:
            self.error = exc
            self.done = True
            self._wake()

    def data(self) -> bytes:
        return b"".join(self.chunks)

    def release(self) -> None:
        """The slice is on disk: drop its bytes. A reader part way through it stops
        reading here and goes on from the file, so slow clients pin no fill memory."""
        self.stored = True
        self.chunks = []

    def spend(self) -> None:
        """Its only reader is through with it: drop its bytes and let its run go on."""
        self.spent = True
        self.chunks = []
        waiters, self._spent_waiters = self._spent_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def until_spent(self) -> None:
        """Wait until the reader of a private read is through with this fill (its pace)."""
        if not self.spent:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._spent_waiters.append(fut)
            await fut

    def found_stored(self) -> None:
        """Complete without bytes in memory: the unit turned out to be in the store
        (another worker fetched it). Readers read it from the file."""
        self.filled = self.size
        self.done = True
        self.release()
        self._wake()

    async def read(self, lo: int, hi: int) -> AsyncGenerator[bytes, None]:
        """Yield bytes ``[lo, hi)`` of the slice, as soon as each piece exists."""
        pos = lo
        ci = 0  # chunk index and the slice offset where that chunk starts
        cstart = 0
        while pos < hi:
            # Emit what is already here.
            while ci < len(self.chunks) and pos < hi:
                chunk = self.chunks[ci]
                cend = cstart + len(chunk)
                if pos < cend:
                    a, b = pos - cstart, min(hi, cend) - cstart
                    yield chunk if (a == 0 and b == len(chunk)) else chunk[a:b]
                    pos = cstart + b
                if pos >= cend:
                    ci += 1
                    cstart = cend
            if pos >= hi or self.stored:  # done, or released to disk: the caller goes on from the file
                return
            if self.error is not None:
                raise self.error
            if self.done:
                raise FillAbandoned(f"slice {self.index} ended at {self.filled} of {self.size} bytes")
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            await fut


class ObjectFlights:
    """Per-object, per-version registry: fills in flight and who still wants which slice.

    ``private`` flights belong to one response, for an object that is not stored (no
    strong validator, or not storable): its bytes are one upstream answer, never shared
    with another response, and each fill stays until that response has read it.
    """

    def __init__(self, validator: str, url: str = "", private: bool = False) -> None:
        self.validator = validator
        self.url = url
        self.private = private
        self.fills: dict[Unit, SliceFill] = {}  # whole slices (int) and blocks ((slice, block))
        self.interest: Counter[int] = Counter()
        self.dead = False  # set when the version changed: nothing new attaches here

    # Interest is counted per slice; a block unit (i, k) counts for its slice i.

    def want(self, units: Iterable[Unit]) -> None:
        for u in units:
            self.interest[unit_slice(u)] += 1

    def release(self, units: Iterable[Unit]) -> None:
        for u in units:
            i = unit_slice(u)
            n = self.interest[i] - 1
            if n > 0:
                self.interest[i] = n
            else:
                self.interest.pop(i, None)
                if self.private:  # nobody will read them: let their run go on (or stop)
                    self.spend(i)

    def wanted(self, units: Iterable[Unit]) -> bool:
        return any(self.interest.get(unit_slice(u), 0) > 0 for u in units)

    def busy(self, u: Unit) -> bool:
        """Is ``u`` being filled, or (for a block) its whole slice?"""
        return u in self.fills or (not isinstance(u, int) and u[0] in self.fills)

    def add(self, fills: Mapping[Unit, SliceFill]) -> None:
        self.fills.update(fills)

    def remove(self, u: Unit, fill: SliceFill) -> None:
        """Forget ``fill`` (stored, found in the store, or failed) unless replaced meanwhile."""
        if self.fills.get(u) is fill:
            del self.fills[u]

    def fail_all(self, exc: BaseException) -> None:
        self.dead = True
        for fill in list(self.fills.values()):
            fill.fail(exc)
            if self.private:
                fill.spend()
        self.fills.clear()

    def spend(self, i: int) -> None:
        """A private read is through with slice ``i`` (whole or blocks): let them go."""
        for u in [u for u in self.fills if unit_slice(u) == i]:
            self.fills.pop(u).spend()


class FlightRegistry:
    """Every object's flights (current version only), and the fill memory they hold."""

    def __init__(self, geometry: SliceGeometry, budget: ByteBudget) -> None:
        self.geometry = geometry
        self.budget = budget
        self._by_url: dict[str, ObjectFlights] = {}

    def for_meta(self, meta: ObjectMeta) -> ObjectFlights:
        """The flights of this version of the object, new if it had none (or an old version's).
        An object that is not stored gets private flights each time (RFC 9111 §3.4: pieces
        of two answers without a strong validator must not be combined)."""
        if not meta.storable:
            return ObjectFlights(meta.validator, meta.url, private=True)
        fl = self._by_url.get(meta.url)
        if fl is None or fl.validator != meta.validator or fl.dead:
            fl = ObjectFlights(meta.validator, meta.url)
            self._by_url[meta.url] = fl
        return fl

    def current(self, meta: ObjectMeta) -> ObjectFlights | None:
        """The flights of this version, if it has any."""
        fl = self._by_url.get(meta.url)
        return fl if fl is not None and fl.validator == meta.validator else None

    def register(self, fl: ObjectFlights, meta: ObjectMeta, run: Iterable[Unit]) -> dict[Unit, SliceFill]:
        """New fills for the units of a run about to be fetched."""
        fills = {u: SliceFill(unit_slice(u), self.geometry.unit_size(u, meta.length)) for u in run}
        fl.add(fills)
        return fills

    def forget_idle(self, url: str, fl: ObjectFlights) -> None:
        if not fl.fills and not fl.interest and self._by_url.get(url) is fl:
            del self._by_url[url]

    def release(self, meta: ObjectMeta, units: Iterable[Unit]) -> None:
        """Drop interest in ``units`` of this version (if its flights still exist)."""
        fl = self.current(meta)
        if fl is not None:
            fl.release(units)
            self.forget_idle(meta.url, fl)

    def fail_object(self, url: str, exc: BaseException) -> None:
        """Every fill of the object fails; nothing new attaches to its flights."""
        fl = self._by_url.pop(url, None)
        if fl is not None:
            fl.fail_all(exc)

    def in_flight(self) -> int:
        return sum(len(f.fills) for f in self._by_url.values())

    # Room in the fill budget, per fill (see proxy.cache.budget).

    async def room_for(self, fill: SliceFill) -> None:
        """Wait until the budget has room for this unit (before an upstream request)."""
        if fill.budget == 0:
            await self.budget.acquire(fill.size)
            fill.budget = fill.size

    def take_room(self, fill: SliceFill) -> None:
        """Room for a unit of a response already flowing: never waits."""
        if fill.budget == 0:
            self.budget.take(fill.size)
            fill.budget = fill.size

    def give_back(self, fill: SliceFill) -> None:
        """Return a fill's room (once: it is stored, or failed and dropped)."""
        if fill.budget:
            self.budget.release(fill.budget)
            fill.budget = 0
