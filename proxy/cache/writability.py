"""Whether the cache directory takes writes: a full disk or a read-only mount turns writes off, not the proxy.

Every store write reports here (:meth:`CacheWritability.attempt`). A disk fault (an ``OSError``
such as ENOSPC, EROFS, EDQUOT, EIO, or SQLite's "database or disk is full" / "attempt to write
a readonly database") marks the cache not writable, with a reason and the time; responses then
come from the origin (and from what the cache can still read) and the store stops trying to
write every slice: one write is let through per ``retry_interval`` seconds as a probe, and the
first that succeeds marks the cache writable again. The change of state is logged once; while
it lasts, a line at most every ``log_every`` seconds.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from typing import Any, Callable, TypeVar

__all__ = ["CacheWritability", "REASONS", "RETRY_INTERVAL", "fault_reason", "read_only_reason", "start_fault"]

log = logging.getLogger("rangeproxy.store")
T = TypeVar("T")
RETRY_INTERVAL = 2.0  # seconds between probe writes while the cache is not writable
PROBE_BYTES = 4096  # what a probe writes: one page
LOG_EVERY = 60.0  # seconds between log lines while it stays not writable
REASONS = ("no_space", "read_only", "io", "other")  # the metric's label values
_BY_ERRNO = {errno.ENOSPC: "no_space", errno.EDQUOT: "no_space", errno.EROFS: "read_only",
             errno.EACCES: "read_only", errno.EPERM: "read_only", errno.EIO: "io"}
_SQLITE_FAULTS = (("disk is full", "no_space"), ("readonly database", "read_only"), ("disk i/o error", "io"),
                  ("unable to open database file", "other"))


def read_only_reason(directory: str) -> str | None:
    """Why ``directory`` (or its nearest existing parent) cannot be written as a mount, or None."""
    path = os.path.abspath(directory)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        st = os.statvfs(path)
    except OSError as exc:
        return f"cannot be inspected ({exc})"
    if st.f_flag & os.ST_RDONLY:
        return f"{path} is on a read-only file system"
    return None


def start_fault(directory: str) -> str | None:
    """Why the cache cannot be opened in ``directory`` at start-up (diskcache writes its SQLite
    index on open, so a read-only mount or a full disk stops it), or None: the mount's flags,
    then a probe write."""
    reason = read_only_reason(directory)
    if reason is not None:
        return reason
    try:
        os.makedirs(directory, exist_ok=True)
        _probe_write(directory)
    except OSError as exc:
        got = fault_reason(exc, directory)
        return got[1] if got is not None else str(exc)
    return None


def fault_reason(exc: BaseException, directory: str | None = None) -> tuple[str, str] | None:
    """(label, text) when ``exc`` says the disk will not take a write, None for anything else.

    A file that cannot be created on a read-only mount may fail with ENOENT (diskcache's
    ``makedirs`` of a new subdirectory failed quietly first): the mount's own flags and free
    space then say which it is.
    """
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        for needle, kind in _SQLITE_FAULTS:
            if needle in text:
                return kind, f"SQLite: {exc}"
        return None
    if not isinstance(exc, OSError):
        return None
    said = f"{errno.errorcode.get(exc.errno or 0, 'OSError')}: {exc.strerror or exc}"
    label = _BY_ERRNO.get(exc.errno or 0)
    if label is not None:
        return label, said
    try:
        st = os.statvfs(directory) if directory is not None else None
    except OSError:
        st = None
    if st is not None and st.f_flag & os.ST_RDONLY:
        return "read_only", f"read-only file system ({said})"
    if st is not None and (st.f_bavail == 0 or st.f_favail == 0):
        return "no_space", f"no space left on device ({said})"
    return "other", said


def _probe_write(directory: str) -> None:
    path = os.path.join(directory, f".writable-{os.getpid()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, bytes(PROBE_BYTES))
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)


class CacheWritability:
    """The cache directory's write state, shared by the store's threads (so: a lock)."""

    def __init__(self, directory: str | None = None, retry_interval: float = RETRY_INTERVAL,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 reconnect: Callable[[], None] | None = None) -> None:
        self.directory = directory
        # Closes the calling thread's SQLite connection (diskcache keeps one per thread): one opened
        # while the directory was read-only stays read-only after a remount until it is reopened.
        self._reconnect = reconnect
        self.generation = 0  # +1 at every recovery: each thread's connection is reopened once after it
        self.outages = 0  # +1 each time it stops being writable
        self._local = threading.local()
        self.retry_interval = retry_interval
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self.writable = True
        self.reason: str | None = None
        self.since: float | None = None  # wall time of the last change of ``writable``
        self.errors: Counter[str] = Counter({r: 0 for r in REASONS})  # failed writes by reason
        self.skipped = 0  # writes not attempted while not writable
        self._next_try = 0.0
        self._logged = 0.0

    def may_write(self) -> bool:
        """Writable, or time for the next probe (one caller gets it per interval)."""
        if self.writable:
            return True
        with self._lock:
            now = self._clock()
            if self.writable or now >= self._next_try:
                self._next_try = now + self.retry_interval
                return True
            self.skipped += 1
            return False

    def failed(self, exc: BaseException) -> bool:
        """Note a write's exception; False when it is not a disk fault (the caller re-raises)."""
        got = fault_reason(exc, self.directory)
        if got is None:
            return False
        label, text = got
        if isinstance(exc, sqlite3.OperationalError) and self._reconnect is not None:
            self._reconnect()
        with self._lock:
            self.errors[label] += 1
            now = self._clock()
            self._next_try = now + self.retry_interval
            if self.writable:
                self.writable, self.reason, self.since = False, text, self._wall()
                self.outages += 1
                self._logged = now
                log.warning("cache %s is not writable (%s): serving from the origin; a write is tried "
                            "every %.0f s", self.directory, text, self.retry_interval)
            else:
                self.reason = text
                if now - self._logged >= LOG_EVERY:
                    self._logged = now
                    log.warning("cache %s is still not writable (%s): %d writes failed, %d skipped so far",
                                self.directory, text, sum(self.errors.values()), self.skipped)
        return True

    def succeeded(self, outage: int | None = None) -> None:
        """A write went through. One that began before the current outage (``outage``: the count
        when it began) proves nothing about now: only one begun since can end the outage."""
        if self.writable:
            return
        with self._lock:
            if not self.writable and (outage is None or outage == self.outages):
                self.writable, self.reason, self.since = True, None, self._wall()
                self.generation += 1
                log.warning("cache %s is writable again", self.directory)

    def attempt(self, write: Callable[..., T], *args: Any) -> tuple[bool, T | None]:
        """(True, its result) after a write went through; (False, None) when it was skipped or hit
        a disk fault (noted); any other exception propagates."""
        outage = self.outages
        if not self.may_write():
            return False, None
        try:
            result = write(*args)
        except Exception as exc:
            if not self.failed(exc):
                raise
            return False, None
        self.succeeded(outage)
        return True, result

    def probe(self) -> None:
        """A small file written and removed in the directory (blocking): run now and then while not
        writable, so that the cache recovers by itself when space returns, without traffic."""
        self.attempt(_probe_write, self.directory or ".")

    def fresh(self, work: Callable[..., T], *args: Any) -> T:
        """Run ``work`` in a store thread, that thread's SQLite connection reopened first when it
        may date from before the last recovery."""
        if self._reconnect is not None and getattr(self._local, "generation", 0) != self.generation:
            self._local.generation = self.generation
            self._reconnect()
        return work(*args)

    def noting(self, write: Callable[..., T], *args: Any) -> T | None:
        """Run a write that is no probe (an LRU update: it may succeed on a full disk); a disk fault
        is noted, not raised."""
        try:
            return write(*args)
        except Exception as exc:
            if not self.failed(exc):
                raise
            return None

    def state(self) -> dict[str, object]:
        """The ``cache`` member of /healthz (and of /stats.json)."""
        return {"writable": self.writable, "reason": self.reason, "since": self.since}
