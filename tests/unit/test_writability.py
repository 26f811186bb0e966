"""The cache's write state (proxy.cache.writability): which errors turn writes off, the probe
interval while off, and the way back on. The clock is a value, so nothing here sleeps."""

from __future__ import annotations

import errno
import logging
import sqlite3

import pytest

from proxy.cache.writability import CacheWritability, fault_reason


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state(retry: float = 2.0) -> tuple[CacheWritability, Clock]:
    clock = Clock()
    return CacheWritability("/nowhere", retry_interval=retry, clock=clock, wall=lambda: 1234.5), clock


@pytest.mark.parametrize("exc, label", [
    (OSError(errno.ENOSPC, "No space left on device"), "no_space"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), "no_space"),
    (OSError(errno.EROFS, "Read-only file system"), "read_only"),
    (OSError(errno.EIO, "Input/output error"), "io"),
    (sqlite3.OperationalError("database or disk is full"), "no_space"),
    (sqlite3.OperationalError("attempt to write a readonly database"), "read_only"),
    (sqlite3.OperationalError("disk I/O error"), "io"),
])
def test_disk_faults_are_named(exc: BaseException, label: str) -> None:
    got = fault_reason(exc)
    assert got is not None and got[0] == label


@pytest.mark.parametrize("exc", [ValueError("x"), sqlite3.OperationalError("database is locked"), KeyError("k")])
def test_other_errors_are_not_disk_faults(exc: BaseException) -> None:
    w, _ = state()
    assert fault_reason(exc) is None

    def boom() -> None:
        raise exc

    with pytest.raises(type(exc)):
        w.attempt(boom)
    assert w.writable and sum(w.errors.values()) == 0


def test_a_fault_turns_writes_off_one_probe_per_interval_and_a_success_turns_them_on(caplog) -> None:
    w, clock = state(retry=2.0)
    calls: list[int] = []

    def full() -> None:
        calls.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    with caplog.at_level(logging.WARNING, "rangeproxy.store"):
        assert w.attempt(full) == (False, None)
        assert not w.writable and w.reason == "ENOSPC: No space left on device" and w.since == 1234.5
        assert w.state() == {"writable": False, "reason": "ENOSPC: No space left on device", "since": 1234.5}
        for _ in range(100):  # within the interval: not attempted at all
            assert w.attempt(full) == (False, None)
        assert len(calls) == 1 and w.skipped == 100
        clock.now += 2.0  # one probe gets through, and fails
        assert w.attempt(full) == (False, None) and w.attempt(full) == (False, None)
        assert len(calls) == 2 and w.errors["no_space"] == 2
        clock.now += 2.0
        assert w.attempt(lambda: 7) == (True, 7)
        assert w.writable and w.reason is None
        assert w.attempt(lambda: 8) == (True, 8)
    lines = [r.getMessage() for r in caplog.records]
    assert sum("is not writable" in m for m in lines) == 1  # once, not per write
    assert sum("writable again" in m for m in lines) == 1


def test_noting_is_no_probe_and_never_turns_writes_on() -> None:
    w, clock = state()
    w.failed(OSError(errno.EROFS, "Read-only file system"))
    assert w.noting(lambda: 5) == 5 and not w.writable  # an LRU update may succeed on a full disk

    def ro() -> None:
        raise sqlite3.OperationalError("attempt to write a readonly database")

    assert w.noting(ro) is None and w.errors["read_only"] == 2


def test_a_write_begun_before_the_fault_does_not_end_it() -> None:
    """Writes in flight when the disk went away may still finish: they prove nothing about now."""
    w, clock = state()

    def in_flight() -> int:
        w.failed(OSError(errno.EROFS, "Read-only file system"))  # another thread's write fails meanwhile
        return 1

    assert w.attempt(in_flight) == (True, 1)
    assert not w.writable
    clock.now += 2.0
    assert w.attempt(lambda: 2) == (True, 2) and w.writable  # a probe begun during the outage


def test_sqlite_connections_are_reopened_after_a_read_only_spell() -> None:
    """diskcache keeps one SQLite connection per thread; one opened while the directory was
    read-only stays so: it is closed on a SQLite fault and once per thread after a recovery."""
    closed: list[int] = []
    clock = Clock()
    w = CacheWritability("/nowhere", clock=clock, reconnect=lambda: closed.append(1))
    assert w.fresh(lambda: 1) == 1 and closed == []
    w.failed(sqlite3.OperationalError("attempt to write a readonly database"))
    assert closed == [1]
    clock.now += 5
    assert w.attempt(lambda: None)[0] and w.writable
    w.fresh(lambda: None)
    w.fresh(lambda: None)
    assert closed == [1, 1]  # once after the recovery, not on every call
