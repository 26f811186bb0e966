"""The checksum kept with every slice file: CRC-32 of its bytes as they were written.

A length check on open catches a truncated or grown file; a file damaged in place
(same length, other bytes) needs the bytes' own checksum. It is computed over the
chunks :class:`~proxy.cache.store.SliceDisk` writes (the bytes verified against the
origin's answer, still in memory: no read back) and kept in diskcache's row; the
scrubber (:mod:`proxy.cache.scrubber`) reads files back and compares. ``zlib.crc32``
releases the GIL on large buffers, so the store's threads and the event loop overlap.
"""

from __future__ import annotations

import os
import zlib
from typing import Iterable, Iterator

__all__ = ["Crc32", "crc_of", "file_crc", "READ_CHUNK"]

READ_CHUNK = 1 << 20  # bytes per read when a file is checked


class Crc32:
    """Chunks passed through unchanged, their CRC-32 (and length) summed on the way."""

    __slots__ = ("_chunks", "value", "size")

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self.value = 0
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.value = zlib.crc32(chunk, self.value)
            self.size += len(chunk)
            yield chunk


def crc_of(chunks: Iterable[bytes]) -> int:
    """The CRC-32 of the concatenated chunks (never joined)."""
    value = 0
    for chunk in chunks:
        value = zlib.crc32(chunk, value)
    return value


def file_crc(fd: int, buffer: bytearray | None = None) -> tuple[int, int]:
    """(bytes read, CRC-32) of a whole open file, from offset 0 (preadv: the offset is not moved),
    read into ``buffer`` (reused by the caller: no allocation per read)."""
    buf = buffer if buffer is not None else bytearray(READ_CHUNK)
    view = memoryview(buf)
    value, at = 0, 0
    while True:
        n = os.preadv(fd, [buf], at)
        if not n:
            return at, value
        value = zlib.crc32(view[:n], value)
        at += n
