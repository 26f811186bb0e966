"""Uses of stored entries served without diskcache (held fds, the file index), for its LRU.

diskcache's LRU is an indexed access_time column that its own get() updates. Hits that never
call get() are reported in batches instead, each key at most once per TOUCH_WINDOW: the LRU
order is then kept to that resolution, and the bookkeeping (one index update per key) costs
what the catalogue's use costs per window, not what the hit rate does.

What a window has reported is kept as the keys' hashes, not the keys: with a million objects
in use that is some 60 bytes a key instead of some 250 (a tuple of the request's strings). Two
keys of one hash cost one missed touch (the LRU a window behind for one of them), nothing more.
"""

from __future__ import annotations

from typing import Hashable

__all__ = ["Touches", "TOUCH_WINDOW"]

TOUCH_WINDOW = 300.0  # seconds


class Touches:
    def __init__(self, window: float = TOUCH_WINDOW) -> None:
        self.window = window
        self._pending: set[Hashable] = set()
        self._reported: set[int] = set()  # hashes of the keys already reported in the current window
        self._window_start: float | None = None

    def add(self, key: Hashable) -> None:
        self._pending.add(key)

    def forget(self, url: str) -> None:
        """Drop the pending uses of one object's entries (keys are (url, ...) tuples or strings)."""
        self._pending = {k for k in self._pending if not (isinstance(k, tuple) and k[0] == url)}

    def due(self, now: float) -> list[Hashable]:
        """The keys to report now: used since the last call and not yet in this window."""
        if self._window_start is None or now - self._window_start >= self.window:
            self._reported, self._window_start = set(), now
        reported = self._reported
        fresh = [k for k in self._pending if hash(k) not in reported]
        self._pending = set()
        reported.update(map(hash, fresh))
        return fresh
