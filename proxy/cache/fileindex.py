"""Where the file of each stored entry is, in memory: a hit needs no SQLite query to find it.

diskcache keeps every value in a file of its own named by 16 random bytes
(``ab/cd/<28 hex>.val``) and the key -> file map in SQLite, which the hot path cannot afford
once the catalogue outgrows what is held open. This index keeps that map compactly: the key
as a 128-bit digest (an int) and the name as its 16 bytes, about 150 bytes an entry against
some 300 for the strings. It is read from the store once at start-up (one scan of the key
index) and kept in step with this process's writes. What it cannot see (diskcache's culls
inside ``set()``, another worker's writes and evictions) only ever makes it *stale*, never
wrong: files are never reused and their length is checked, so a stale entry is a file that
is gone (then a miss, looked up in SQLite once, and the entry dropped), and an entry it lacks
is found in SQLite as before. ``rebuild`` after culls keeps it from holding many dead ones.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Iterable

__all__ = ["FileIndex", "BYTES_PER_ENTRY"]

_NAME = re.compile(r"([0-9a-f]{2})[/\\]([0-9a-f]{2})[/\\]([0-9a-f]{28})\.val$")
BYTES_PER_ENTRY = 150  # about, measured with tracemalloc (tests/unit/test_fileindex.py): int key, 16-byte name, dict slot


def _digest(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=16).digest(), "big")


def _name(filename: str | None) -> bytes | None:
    """diskcache's file name (relative, or a full path) as its 16 bytes; None for an entry
    kept inside SQLite."""
    m = _NAME.search(filename) if filename else None
    return bytes.fromhex("".join(m.groups())) if m else None


class FileIndex:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._files: dict[int, bytes] = {}

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, key: str) -> bool:
        return _digest(key) in self._files

    def load(self, rows: Iterable[tuple[object, object]]) -> None:
        """Replace the index with ``(key, filename)`` rows of the store."""
        files: dict[int, bytes] = {}
        for key, filename in rows:
            name = _name(filename) if isinstance(filename, str) else None
            if isinstance(key, str) and name is not None:
                files[_digest(key)] = name
        self._files = files

    def note(self, key: str, filename: str | None) -> None:
        name = _name(filename)
        if name is None:
            self._files.pop(_digest(key), None)
        else:
            self._files[_digest(key)] = name

    def forget(self, key: str) -> None:
        self._files.pop(_digest(key), None)

    def path(self, key: str) -> str | None:
        """The full path of ``key``'s file, if the index knows it."""
        name = self._files.get(_digest(key))
        if name is None:
            return None
        h = name.hex()
        return os.path.join(self.directory, h[:2], h[2:4], h[4:] + ".val")
