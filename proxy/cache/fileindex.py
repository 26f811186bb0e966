"""Where the file of each stored entry is, in memory: a hit needs no SQLite query to find it.

diskcache keeps every value in a file of its own named by 16 random bytes
(``ab/cd/<28 hex>.val``) and the key -> file map in SQLite, which the hot path cannot afford
once the catalogue outgrows what is held open. This index keeps that map in three flat
arrays, an open-addressing hash table with no Python object per entry: the key's 128-bit
digest as two 64-bit words, the file's 16 bytes and a 2-byte tick of its last use, 34 bytes
a slot, kept between 65 % and 80 % full (:data:`BYTES_PER_ENTRY`). A dict of ints would cost some 150 bytes an
entry: 1.5 GB at ten million slices, against some 500 MB here.

It is read from the store once at start-up (one scan of the key index, streamed: no list of
rows; in the background in the proxy, the changes made meanwhile replayed onto it) and kept in step with this process's writes and evictions (the store's own cull
reports the keys it deletes). What it cannot see (another worker's writes and evictions)
only ever makes it *stale*, never wrong: files are never reused and their length is
checked, so a stale entry is a file that is gone (then a miss, looked up in SQLite once, and
the entry dropped), and an entry it lacks is found in SQLite as before.

Readers (the event loop) take no lock: a slot is written name first and key last, and a
resize builds new arrays and swaps them in one assignment. Writers (the store's threads)
take one lock.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from array import array
from typing import Iterable

__all__ = ["FileIndex", "BYTES_PER_ENTRY"]

_NAME = re.compile(r"([0-9a-f]{2})[/\\]([0-9a-f]{2})[/\\]([0-9a-f]{28})\.val$")
EMPTY, DELETED = 0, 1  # key words no digest has: every stored high word has its low bit set
MIN_SLOTS = 1024
FILL = 0.8  # at most this full (deleted slots count), then resized to LOW_FILL
LOW_FILL = 0.65
BYTES_PER_ENTRY = 52  # about: 34 bytes a slot at 65-80 % full (tests/unit/test_fileindex.py measures it) (tests/unit/test_fileindex.py measures it)


def _digest(key: str) -> tuple[int, int]:
    d = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=16).digest()
    return int.from_bytes(d[:8], "big") | 1, int.from_bytes(d[8:], "big")


def _name(filename: str | None) -> bytes | None:
    """diskcache's file name (relative, or a full path) as its 16 bytes; None for an entry
    kept inside SQLite."""
    m = _NAME.search(filename) if filename else None
    return bytes.fromhex("".join(m.groups())) if m else None


class _Table:
    """The three arrays of one capacity (replaced whole on a resize)."""

    __slots__ = ("hi", "lo", "names", "used", "slots")

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.hi = array("Q", bytes(8 * slots))
        self.lo = array("Q", bytes(8 * slots))
        self.names = bytearray(16 * slots)
        self.used = array("H", bytes(2 * slots))  # the tick of the last use seen here, 0 = none

    def find(self, hi: int, lo: int) -> int:
        """The slot of the key, or -1."""
        keys, los, n = self.hi, self.lo, self.slots
        i = lo % n
        while True:
            h = keys[i]
            if h == hi and los[i] == lo:
                return i
            if h == EMPTY:
                return -1
            i += 1
            if i == n:
                i = 0

    def put(self, hi: int, lo: int, name: bytes) -> int:
        """Set the key's name: 0 if it was there, 1 if it took a deleted slot, 2 an empty one."""
        keys, los, n = self.hi, self.lo, self.slots
        i = lo % n
        free = -1
        while True:
            h = keys[i]
            if h == hi and los[i] == lo:
                self.names[16 * i:16 * i + 16] = name
                return 0
            if h == EMPTY:
                break
            if h == DELETED and free < 0:
                free = i
            i += 1
            if i == n:
                i = 0
        if free >= 0:
            i = free
        self.names[16 * i:16 * i + 16] = name  # name, then the key: a reader never sees a key without its name
        self.used[i] = 0
        los[i] = lo
        keys[i] = hi
        return 1 if free >= 0 else 2


class FileIndex:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._t = _Table(MIN_SLOTS)
        self._live = 0
        self._used = 0  # live and deleted slots
        self._lock = threading.Lock()
        # While a load scans the store: the changes made meanwhile, replayed onto what it read.
        self._journal: list[tuple[int, int, bytes | None]] | None = None

    def __len__(self) -> int:
        return self._live

    def __contains__(self, key: str) -> bool:
        return self._t.find(*_digest(key)) >= 0

    @property
    def slots(self) -> int:
        return self._t.slots

    def load(self, rows: Iterable[tuple[object, object]], expected: int = 0) -> None:
        """Replace the index with ``(key, filename)`` rows of the store (streamed; ``expected``
        sizes the table once instead of growing it)."""
        with self._lock:
            self._journal = []
        t = _Table(max(MIN_SLOTS, int(expected / LOW_FILL)))
        live = 0
        limit = int(t.slots * FILL)
        for n, (key, filename) in enumerate(rows):
            if not n & 1023:  # let the event loop's thread have the GIL: hits are served meanwhile
                time.sleep(0)
            name = _name(filename) if isinstance(filename, str) else None
            if isinstance(key, str) and name is not None:
                if t.put(*_digest(key), name):  # no deleted slots yet: a new key takes an empty one
                    live += 1
                    if live >= limit:
                        t = self._grown(t, live)
                        limit = int(t.slots * FILL)
        with self._lock:
            used = live
            for hi, lo, name in self._journal or ():
                if name is not None:
                    took = t.put(hi, lo, name)
                    live += took > 0
                    used += took == 2
                else:
                    i = t.find(hi, lo)
                    if i >= 0:
                        t.hi[i] = DELETED
                        live -= 1
            if used >= t.slots * FILL:
                t, used = self._grown(t, live), live
            self._t, self._live, self._used, self._journal = t, live, used, None

    @staticmethod
    def _grown(t: _Table, live: int) -> _Table:
        new = _Table(max(MIN_SLOTS, int(live / LOW_FILL)))
        keys, los, names, used = t.hi, t.lo, t.names, t.used
        for i in range(t.slots):
            h = keys[i]
            if h > DELETED:
                new.put(h, los[i], bytes(names[16 * i:16 * i + 16]))
                if used[i]:
                    new.used[new.find(h, los[i])] = used[i]
        return new

    def note(self, key: str, filename: str | None) -> None:
        name = _name(filename)
        if name is None:
            self.forget(key)
            return
        hi, lo = _digest(key)
        with self._lock:
            if self._journal is not None:
                self._journal.append((hi, lo, name))
            took = self._t.put(hi, lo, name)
            if took:
                self._live += 1
            if took == 2:
                self._used += 1
                if self._used >= self._t.slots * FILL:
                    self._t = self._grown(self._t, self._live)  # one assignment: readers see old or new
                    self._used = self._live

    def forget(self, key: str) -> None:
        hi, lo = _digest(key)
        with self._lock:
            if self._journal is not None:
                self._journal.append((hi, lo, None))
            t = self._t
            i = t.find(hi, lo)
            if i >= 0:
                t.hi[i] = DELETED
                self._live -= 1

    def forget_many(self, keys: Iterable[object]) -> None:
        """Forget the keys a cull deleted (non-str keys are not ours and ignored)."""
        for key in keys:
            if isinstance(key, str):
                self.forget(key)

    # --- uses, for eviction (proxy.cache.eviction) ---------------------------------------
    #
    # A tick per slot (2 bytes) records when this process last saw the entry used: hits
    # then cost diskcache's LRU nothing per key, and the cull spares what was used lately.

    def mark_used(self, keys: Iterable[str], tick: int) -> None:
        t = self._t
        for key in keys:
            i = t.find(*_digest(key))
            if i >= 0:
                t.used[i] = tick

    def used_at(self, key: str) -> int:
        """The tick of the entry's last use seen here (0: none, or not indexed)."""
        t = self._t
        i = t.find(*_digest(key))
        return t.used[i] if i >= 0 else 0

    def path(self, key: str) -> str | None:
        """The full path of ``key``'s file, if the index knows it."""
        t = self._t
        hi, lo = _digest(key)
        i = t.find(hi, lo)
        if i < 0:
            return None
        h = t.names[16 * i:16 * i + 16].hex()
        if t.hi[i] != hi or t.lo[i] != lo:  # deleted, and the slot reused, while we read it
            return None
        return os.path.join(self.directory, h[:2], h[2:4], h[4:] + ".val")
