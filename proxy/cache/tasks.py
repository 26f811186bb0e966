"""The engine's background work: tasks cancelled on close, and store writes a clean stop waits for."""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine, TypeVar

__all__ = ["Jobs", "register_until_done"]

T = TypeVar("T")


def register_until_done(tasks: dict[str, asyncio.Task[T]], key: str, task: asyncio.Task[T]) -> None:
    """Keep ``task`` in ``tasks`` under ``key`` until it is done (unless replaced meanwhile)."""
    tasks[key] = task

    def done(t: asyncio.Task[T]) -> None:
        if tasks.get(key) is t:
            del tasks[key]
    task.add_done_callback(done)


class Jobs:
    """Background tasks of one engine (runs, discoveries, housekeeping: cancelled on close)
    and writes to the store (verified slices, metadata: waited for, bounded, on close)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self.storing: set[asyncio.Task[None]] = set()  # writes to the store under way

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def store(self, write: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a write to the store in the background; :meth:`close` waits for it."""
        task = asyncio.get_running_loop().create_task(write)
        self.storing.add(task)
        task.add_done_callback(self.storing.discard)
        return task

    async def close(self, flush_timeout: float) -> None:
        # Writes already under way are worth keeping: let them finish (bounded).
        if self.storing:
            await asyncio.wait(list(self.storing), timeout=flush_timeout)
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
