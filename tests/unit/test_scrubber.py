"""The scrubber's decisions (pure), and a real store in a temporary directory: the CRC-32 is kept in
the row, a same-length corruption is found and dropped, a held fd of it closed, older rows tolerated."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import zlib
from pathlib import Path

import pytest
from diskcache.core import MODE_BINARY, MODE_PICKLE  # type: ignore[import-untyped]

from proxy.cache import scrubber as scrub_mod
from proxy.cache.scrubber import ScrubRow, Scrubber, batch_budget, damage, pause_after, slice_rows
from proxy.cache.store import SliceStore, meta_key, slice_id_of, slice_key
from tests.support.cachedir import until

URL = "http://origin/a.bin"
V = '"v1"'
S = 8192
LIMIT = 64 * 1024 * 1024


def test_damage_compares_length_then_checksum() -> None:
    row = ScrubRow(1, "k", "ab/cd/x.val", 10, 0x1234)
    assert damage(row, 10, 0x1234) is None
    assert damage(row, 9, 0x1234) == "length 9 != 10"
    assert damage(row, 10, 0x1235) == "crc32 00001235 != 00001234"
    older = ScrubRow(1, "k", "ab/cd/x.val", 10, None)  # a row of before checksums: length only
    assert damage(older, 10, 0xFFFF) is None and damage(older, 11, 0) is not None


def test_batches_follow_the_rate() -> None:
    assert batch_budget(8 * 2**20) == 2 * 2**20  # a quarter of a second's worth
    assert batch_budget(1) == 1  # at least one file per batch
    assert pause_after(2 * 2**20, 0.05, 8 * 2**20) == pytest.approx(0.2)
    assert pause_after(2 * 2**20, 1.0, 8 * 2**20) == 0.0  # slower than the rate: no wait
    assert pause_after(0, 0.0, 100) == 0.0


def test_slice_rows_leave_out_metadata_and_values_in_sqlite() -> None:
    sk = slice_key(URL, V, 3)
    raw = [
        (1, meta_key(URL), "aa/bb/m.val", 500, MODE_PICKLE, None),
        (2, sk, "aa/bb/s.val", S, MODE_BINARY, 77),
        (3, slice_key(URL, V, (3, 1)), "aa/bb/b.val", 1024, MODE_BINARY, None),
        (4, sk, None, 0, 1, b"raw"),  # a value kept in SQLite
        (5, "s2\x00old\x00v\x000", "aa/bb/o.val", S, MODE_BINARY, 1),  # another format's key
    ]
    rows = slice_rows(raw)  # type: ignore[arg-type]
    assert [(r.rowid, r.crc) for r in rows] == [(2, 77), (3, None)]


def test_slice_ids_round_trip() -> None:
    for unit in (0, 17, (3, 2)):
        assert slice_id_of(slice_key(URL, V, unit)) == (URL, V, unit)
    assert slice_id_of(slice_key("http://o/a vary=x\x00y", V, 1)) == ("http://o/a vary=x\x00y", V, 1)
    assert slice_id_of(meta_key(URL)) is None
    assert slice_id_of(slice_key(URL, V, 1)[:-1] + "x") is None


def rows_of(directory: Path) -> dict[str, tuple[str, int, int | None]]:
    with sqlite3.connect(directory / "cache.db") as db:
        return {k: (f, s, v) for k, f, s, v in db.execute("SELECT key, filename, size, value FROM Cache")}


async def test_the_row_keeps_the_crc_of_the_chunks(tmp_path: Path) -> None:
    store = SliceStore(str(tmp_path), LIMIT, threads=2, max_fds=64)
    try:
        chunks = [os.urandom(1000), os.urandom(S - 1000)]
        await store.put_slice(URL, V, 0, chunks)
        filename, size, crc = rows_of(tmp_path)[slice_key(URL, V, 0)]
        assert size == S and crc == zlib.crc32(b"".join(chunks))
        assert (tmp_path / filename).read_bytes() == b"".join(chunks)
        fd = await store.open_slice(URL, V, 0, S)
        assert fd is not None and os.pread(fd, S, 0) == b"".join(chunks)
    finally:
        store.close()
    again = SliceStore(str(tmp_path), LIMIT, threads=2, max_fds=64)
    try:
        again.files.forget(slice_key(URL, V, 0))  # found through diskcache's get, which leaves the value unread
        fd = await again.open_slice(URL, V, 0, S)
        assert fd is not None and os.pread(fd, S, 0) == b"".join(chunks)
    finally:
        again.close()


async def test_a_same_length_corruption_is_found_dropped_and_its_fd_closed(tmp_path: Path) -> None:
    store = SliceStore(str(tmp_path), LIMIT, threads=2, max_fds=64)
    scrubber = Scrubber(store, 64 * 2**20)
    try:
        good = {i: os.urandom(S) for i in range(4)}
        for i, data in good.items():
            await store.put_slice(URL, V, i, data)
        await store.put_slice(URL, V, (9, 0), os.urandom(1024))  # a block is scrubbed too
        rows = rows_of(tmp_path)
        victim = tmp_path / rows[slice_key(URL, V, 2)][0]
        with open(victim, "r+b") as f:  # flip bytes in place: same length
            f.seek(100)
            f.write(bytes(b ^ 0xFF for b in good[2][100:110]))
        assert store.holds(URL, V, 2)  # held open since its write
        scrubber.start()
        await until(lambda: scrubber.counts.passes >= 1 and store.corrupt_dropped >= 1, "a pass that drops the damaged slice")
        assert scrubber.counts.corrupt == 1 and scrubber.counts.slices >= 5
        assert not store.holds(URL, V, 2), "the held fd of the dropped file was not closed"
        await until(lambda: slice_key(URL, V, 2) not in rows_of(tmp_path), "slice 2's row gone")
        assert not victim.exists()
        assert await store.open_slice(URL, V, 2, S) is None  # a miss: the next request refetches it
        for i in (0, 1, 3):
            fd = await store.open_slice(URL, V, i, S)
            assert fd is not None and os.pread(fd, S, 0) == good[i]
    finally:
        await scrubber.stop()
        store.close()


async def test_a_row_without_checksum_is_length_checked_only(tmp_path: Path) -> None:
    store = SliceStore(str(tmp_path), LIMIT, threads=2, max_fds=64)
    scrubber = Scrubber(store, 64 * 2**20)
    try:
        await store.put_slice(URL, V, 0, os.urandom(S))
        await store.put_slice(URL, V, 1, os.urandom(S))
        with sqlite3.connect(tmp_path / "cache.db") as db:  # as a proxy of before checksums wrote them
            db.execute("UPDATE Cache SET value = NULL")
        rows = rows_of(tmp_path)
        with open(tmp_path / rows[slice_key(URL, V, 0)][0], "r+b") as f:
            f.write(b"x" * 10)  # unnoticed without a checksum
        with open(tmp_path / rows[slice_key(URL, V, 1)][0], "r+b") as f:
            f.truncate(S - 1)  # a length is always checked
        scrubber.start()
        await until(lambda: scrubber.counts.passes >= 1 and scrubber.counts.corrupt >= 1, "a pass that finds the damage")
        await until(lambda: slice_key(URL, V, 1) not in rows_of(tmp_path), "slice 1's row gone")
        assert scrubber.counts.corrupt == 1 and rows_of(tmp_path)[slice_key(URL, V, 0)][2] is None
    finally:
        await scrubber.stop()
        store.close()


async def test_the_rate_bounds_the_bytes_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scrub_mod, "PASS_PAUSE", 0.05)
    store = SliceStore(str(tmp_path), LIMIT, threads=2, max_fds=64)
    rate = 16 * S  # 128 KiB/s, batches of 4 slices
    scrubber = Scrubber(store, rate)
    try:
        for i in range(64):
            await store.put_slice(URL, V, i, os.urandom(S))
        t0 = time.monotonic()
        scrubber.start()
        await asyncio.sleep(1.0)
        took = time.monotonic() - t0
        # No more than a batch over the rate; and it makes progress (a pass is 64 slices, 4 s).
        assert 0 < scrubber.counts.bytes <= rate * took + batch_budget(rate) + S
        assert scrubber.counts.passes == 0
    finally:
        await scrubber.stop()
        store.close()


async def test_another_workers_held_fd_of_a_damaged_file_is_dropped_at_its_next_use(tmp_path: Path) -> None:
    """Two stores on one directory, as two workers: the scrubber of one truncates the damaged file
    before dropping it, so the other, which holds it open, sees a wrong length at its next hit."""
    mine = SliceStore(str(tmp_path), LIMIT, threads=2, max_fds=64)
    other = SliceStore(str(tmp_path), LIMIT, threads=2, max_fds=64)
    scrubber = Scrubber(mine, 64 * 2**20)
    try:
        data = os.urandom(S)
        await mine.put_slice(URL, V, 0, data)
        fd = await other.open_slice(URL, V, 0, S)
        assert fd is not None and other.holds(URL, V, 0)
        with open(tmp_path / rows_of(tmp_path)[slice_key(URL, V, 0)][0], "r+b") as f:
            f.write(b"\0" * 8)
        scrubber.start()
        await until(lambda: scrubber.counts.corrupt == 1 and not mine.holds(URL, V, 0), "the damage found and the held fd dropped")
        assert other.checked_fd(URL, V, 0, S) is None  # its next hit: the length is wrong, the fd closed
        assert not other.holds(URL, V, 0)
        await until(lambda: slice_key(URL, V, 0) not in rows_of(tmp_path), "slice 0's row gone")
        assert await other.open_slice(URL, V, 0, S) is None
    finally:
        await scrubber.stop()
        mine.close()
        other.close()


async def test_the_benchmark_stores_carry_the_checksums_the_store_keeps(tmp_path: Path) -> None:
    """benchmarks.storebuild writes rows by hand: the scrubber finds every one of them whole."""
    from benchmarks import storebuild

    storebuild.build(tmp_path, 3, 3 * S + 5, S, quiet=True)
    crcs = [v for k, (_, _, v) in rows_of(tmp_path).items() if slice_id_of(k) is not None]
    assert len(crcs) == 12 and all(isinstance(v, int) for v in crcs)
    store = SliceStore(str(tmp_path), LIMIT, threads=2, max_fds=64)
    scrubber = Scrubber(store, 64 * 2**20)
    try:
        scrubber.start()
        await until(lambda: scrubber.counts.passes >= 1, "a whole pass")
        assert scrubber.counts.slices >= 12 and scrubber.counts.corrupt == 0
    finally:
        await scrubber.stop()
        store.close()
