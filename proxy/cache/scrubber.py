"""The scrubber: every slice file read back in the background, its length and CRC-32 compared
with its row; a damaged one is dropped, so the next request for it refetches it.

A hit is never checksummed (sendfile sends what the file holds); damage in place, a file of
the right length with other bytes, is found here instead, within one pass. Rows are walked
in rowid order (a range of the table's own B-tree, :data:`BATCH_ROWS` at a time, whatever
the catalogue's size), at most ``scrub_rate`` bytes a second on average, read in batches of
about :data:`BATCH_SECONDS` of that rate, by a thread of its own (its own SQLite connection:
the store's threads and the event loop never wait for it). A pass that ends starts again
from the first row after :data:`PASS_PAUSE`.

A damaged file is truncated to 0 bytes before its entry is dropped: every worker holding it
open sees a wrong length at its next hit (the fstat every held fd gets) and drops its fd,
and this worker's drop (:meth:`SliceStore.drop`) closes its own held fd and deletes the row.
A row with no checksum (written before checksums were kept) has its length checked only:
a checksum taken now would vouch for bytes nobody verified. With several workers on one
cache directory only worker 0 scrubs (``proxy.app``). Between batches it also sweeps the
directory for files no row names, at start-up and hourly (:mod:`proxy.cache.orphans`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from diskcache.core import MODE_BINARY  # type: ignore[import-untyped]

from proxy.cache import orphans
from proxy.cache.checksum import READ_CHUNK, file_crc
from proxy.cache.store import READ_FLAGS, SLICE_KEYS, SliceStore, slice_id_of

__all__ = ["Scrubber", "ScrubRow", "ScrubCounts", "damage", "batch_budget", "pause_after",
           "BATCH_ROWS", "BATCH_SECONDS", "PASS_PAUSE"]

log = logging.getLogger("rangeproxy.scrub")
BATCH_ROWS = 64  # rows read from SQLite at a time
BATCH_SECONDS = 0.25  # a batch reads about this many seconds' worth of scrub_rate (at least one file)
PASS_PAUSE = 1.0  # seconds between two passes (a nearly empty cache costs a query a second)


@dataclass(frozen=True, slots=True)
class ScrubRow:
    """One slice row: where its file is, how long it is and its checksum (None: not kept)."""

    rowid: int
    key: str
    filename: str
    size: int
    crc: int | None


@dataclass(slots=True)
class ScrubCounts:
    slices: int = 0  # files read back and compared
    bytes: int = 0
    corrupt: int = 0  # found damaged (and dropped)
    passes: int = 0  # passes over every row completed
    orphans: int = 0  # files no row named, removed (proxy.cache.orphans)

    def as_dict(self) -> dict[str, int]:
        return {"slices": self.slices, "bytes": self.bytes, "corrupt": self.corrupt, "passes": self.passes,
                "orphans": self.orphans}


def damage(row: ScrubRow, length: int, crc: int) -> str | None:
    """Why a file read back as ``length`` bytes with ``crc`` is not what ``row`` recorded; None if it is."""
    if length != row.size:
        return f"length {length} != {row.size}"
    if row.crc is not None and crc != row.crc:
        return f"crc32 {crc:08x} != {row.crc:08x}"
    return None


def batch_budget(rate: int) -> int:
    """Bytes one batch may read: :data:`BATCH_SECONDS` of the rate (a batch reads at least one file)."""
    return max(1, int(rate * BATCH_SECONDS))


def pause_after(read: int, took: float, rate: int) -> float:
    """Seconds to wait after a batch that read ``read`` bytes in ``took`` s, so the average stays at ``rate``."""
    return max(0.0, read / rate - took)


def slice_rows(raw: list[tuple[object, ...]]) -> list[ScrubRow]:
    """The slice rows among raw ``(rowid, key, filename, size, mode, value)`` rows (metadata left out)."""
    lo, hi = SLICE_KEYS
    out = []
    for rowid, key, filename, size, mode, value in raw:
        if (isinstance(key, str) and lo <= key < hi and mode == MODE_BINARY and isinstance(filename, str)
                and isinstance(size, int) and isinstance(rowid, int)):
            out.append(ScrubRow(rowid, key, filename, size, value if isinstance(value, int) else None))
    return out


def _open(path: str) -> int:
    try:
        return os.open(path, READ_FLAGS)
    except PermissionError:  # O_NOATIME on a file of another user
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


@dataclass
class _Walk:
    """Where the walk is (touched by the scrubber's thread only)."""

    after: int = 0  # the last rowid read
    rows: list[ScrubRow] = field(default_factory=list)
    ended: bool = False  # the last query found no row after ``after``


class Scrubber:
    """Reads slice files back at a bounded rate and drops the damaged ones (see the module)."""

    def __init__(self, store: SliceStore, rate: int, counts: ScrubCounts | None = None) -> None:
        self.store = store
        self.rate = rate
        self.counts = counts if counts is not None else ScrubCounts()
        self._directory = store.cache.directory
        self._walk = _Walk()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="scrub")
        self._task: asyncio.Task[None] | None = None
        self._sweep_at = 0.0  # (monotonic) when the next sweep for orphan files starts: at once
        self._buckets: list[str] = []  # the buckets of the sweep under way still to do
        self._buffer = bytearray(READ_CHUNK)  # every file is read into it (the scrubber's thread only)

    def start(self) -> None:
        log.info("scrubbing the slices of %s at %d bytes/s", self._directory, self.rate)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.shutdown, True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        budget = batch_budget(self.rate)
        try:
            await asyncio.wrap_future(self.store.index_loaded)  # the start-up's own scan of the rows first
        except Exception:  # noqa: BLE001 - the store logs its own failure; scrubbing still helps
            pass
        while True:
            await self._sweep_some()
            t0 = time.monotonic()
            try:
                read, bad, ended = await loop.run_in_executor(self._thread, self._batch, budget)
            except Exception as exc:  # noqa: BLE001 - a failed batch (SQLite busy, say) is tried again later
                log.warning("scrub batch failed: %r", exc)
                await asyncio.sleep(PASS_PAUSE)
                continue
            for key, why in bad:
                self.counts.corrupt += 1
                slice_id = slice_id_of(key)
                if slice_id is not None:
                    self.store.drop(*slice_id, f"scrub: {why}")
            if ended:
                self.counts.passes += 1
            await asyncio.sleep(PASS_PAUSE if ended else pause_after(read, time.monotonic() - t0, self.rate))

    async def _sweep_some(self) -> None:
        """One bucket of the sweep for files no row names, when one is under way or due."""
        if not self._buckets and time.monotonic() >= self._sweep_at:
            self._buckets = list(orphans.BUCKETS)
        if not self._buckets:
            return
        bucket = self._buckets.pop(0)
        try:
            removed = await asyncio.get_running_loop().run_in_executor(
                self._thread, orphans.sweep_bucket, self.store.cache, self._directory, bucket, time.time())
        except Exception as exc:  # noqa: BLE001 - tried again at the next sweep
            log.warning("sweep for orphan files failed: %r", exc)
            removed = []
        if removed:
            self.counts.orphans += len(removed)
            log.warning("removed %d cache files no entry named (left by a process stopped while writing): %s%s",
                        len(removed), ", ".join(removed[:5]), " ..." if len(removed) > 5 else "")
        if not self._buckets:
            self._sweep_at = time.monotonic() + orphans.SWEEP_INTERVAL

    def _next_rows(self) -> None:
        w = self._walk
        raw = self.store.cache._sql("SELECT rowid, key, filename, size, mode, value FROM Cache WHERE rowid > ? "
                                    "ORDER BY rowid LIMIT ?", (w.after, BATCH_ROWS)).fetchall()
        if not raw:
            w.after, w.ended = 0, True
            return
        w.after = int(raw[-1][0])
        w.rows = slice_rows(raw)

    def _batch(self, budget: int) -> tuple[int, list[tuple[str, str]], bool]:
        """In the scrubber's thread: read files until ``budget`` bytes; (bytes read, damaged (key, why), pass ended)."""
        w = self._walk
        read, bad = 0, []
        w.ended = False
        while read < budget:
            if not w.rows:
                self._next_rows()
                if w.ended:
                    break
                continue
            row = w.rows.pop(0)
            got = self._check(row)
            if got is None:
                continue
            n, why = got
            read += n
            self.counts.slices += 1  # (an int's += from one thread: the loop only reads it)
            self.counts.bytes += n
            if why is not None and self._disarm(row):
                log.warning("scrub: damaged slice file %s (%s): %r", row.filename, why, row.key.replace("\x00", " "))
                bad.append((row.key, why))
        return read, bad, w.ended

    def _check(self, row: ScrubRow) -> tuple[int, str | None] | None:
        """(bytes read, why it is damaged or None); None when the file is gone (evicted meanwhile)."""
        path = os.path.join(self._directory, row.filename)
        try:
            fd = _open(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return 0, f"unreadable ({exc.strerror})"
        try:
            length, crc = file_crc(fd, self._buffer)
        except OSError as exc:
            return 0, f"unreadable ({exc.strerror})"
        finally:
            os.close(fd)
        return length, damage(row, length, crc)

    def _disarm(self, row: ScrubRow) -> bool:
        """Truncate a damaged file, so that every worker holding it open sees a wrong length; False
        if it is gone (evicted and maybe stored again since: then it is not ours to drop)."""
        try:
            os.truncate(os.path.join(self._directory, row.filename), 0)
        except FileNotFoundError:
            return False
        except OSError as exc:  # still dropped: the row goes, holders keep a file of the right length
            log.warning("scrub: cannot truncate %s: %s", row.filename, exc)
        return True
