"""A bound on the bytes of slice fills held in memory, across every upstream run.

A slice being filled lives in memory until it is on disk. With many cold
readers, 64 upstream connections each filling a slice while up to four more
wait for the disk would hold hundreds of MiB; instead a run waits for room for
its first slice before it sends its upstream request, and the room comes back
when the slice is stored or dropped.

A run that already has its upstream response never waits: it takes room for its
next slices even past the limit (``take``). Waiting there would deadlock: runs
holding every pooled connection would wait for room held by runs waiting for a
connection. So new runs wait, running ones finish, and memory stays within the
limit plus what the runs already started bring in.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["ByteBudget"]


class ByteBudget:
    """FIFO byte-count semaphore: ``await acquire(n)`` then ``release(n)``.

    One request larger than the whole limit is let through when nothing else is
    held, so a slice bigger than the budget cannot wait forever.
    """

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("limit must be positive")
        self.limit = limit
        self.held = 0
        self.peak = 0
        self.waits = 0  # acquisitions that had to wait for room
        self._queue: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _fits(self, n: int) -> bool:
        return self.held + n <= self.limit or self.held == 0

    def _take(self, n: int) -> None:
        self.held += n
        self.peak = max(self.peak, self.held)

    def take(self, n: int) -> None:
        """Take ``n`` bytes now, past the limit if need be (a run already under way)."""
        self._take(n)

    async def acquire(self, n: int) -> None:
        if not self._queue and self._fits(n):
            self._take(n)
            return
        self.waits += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, fut)
        self._queue.append(entry)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release(n)  # granted just as we were cancelled: give it back
            else:
                if entry in self._queue:
                    self._queue.remove(entry)
                self._grant()  # we may have been the head that blocked smaller requests
            raise

    def release(self, n: int) -> None:
        self.held -= n
        assert self.held >= 0, "released more than was acquired"
        self._grant()

    def _grant(self) -> None:
        while self._queue and self._fits(self._queue[0][0]):
            n, fut = self._queue.popleft()
            if fut.done():  # cancelled while queued
                continue
            self._take(n)
            fut.set_result(None)

    @property
    def waiting(self) -> int:
        return sum(1 for _, f in self._queue if not f.done())
