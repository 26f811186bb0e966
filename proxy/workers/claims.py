"""One origin fetch per unit across worker processes: advisory locks in the cache directory.

A worker about to fetch a unit (a slice or a block) first claims it with a
non-blocking ``flock`` on a small lock file named after the unit. A worker that
cannot claim it polls the lock every few milliseconds until the claimant lets go, then reads the
unit from the shared store; if it is not there (the claimant failed or gave
up), it claims and fetches it itself. Locks die with their process, so a
crashed worker never blocks the others.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

__all__ = ["UnitClaims"]


class UnitClaims:
    """Claims on units, shared by the workers of one cache directory."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / "inflight"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._held: dict[str, int] = {}

    def _path(self, key: str) -> str:
        return str(self.dir / hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest())

    def try_claim(self, key: str) -> bool:
        """Claim ``key`` for this process; False when another worker holds it."""
        if key in self._held:
            return True
        fd = os.open(self._path(key), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._held[key] = fd
        return True

    def release(self, key: str) -> None:
        fd = self._held.pop(key, None)
        if fd is None:
            return
        try:
            os.unlink(self._path(key))  # a later claimant starts a fresh file
        except FileNotFoundError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def held_elsewhere(self, key: str) -> bool:
        """Does another worker hold ``key`` right now? (one non-blocking flock)"""
        if key in self._held:
            return False
        try:
            fd = os.open(self._path(key), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False  # released (and unlinked) already
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def close(self) -> None:
        for key in list(self._held):
            self.release(key)
