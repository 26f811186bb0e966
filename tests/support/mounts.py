"""Real mounts for disk-fault tests: a small tmpfs (a disk that fills up) and a read-only bind
mount over a directory (root ignores permission bits, so a mount is what stops its writes).

Both need root and ``mount``; where they cannot be had the test is skipped with the reason,
and under CI=true that skip is a failure (as for missing tools, ``tests.support.tools``).
Every mount made here is unmounted on the way out, whatever happened (lazily, ``umount -l``,
when a process still holds files on it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

__all__ = ["tmpfs", "read_only", "fill_up", "unmount"]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; under CI=true a disk-fault test that cannot mount is a failure", pytrace=False)
    pytest.skip(reason)


def _mount(*args: str, busy_for: float = 0.0) -> None:
    """``mount args``; while it says "busy", tried again for up to ``busy_for`` seconds."""
    mount = shutil.which("mount") or "/bin/mount"
    if os.geteuid() != 0 or not os.path.exists(mount):
        _unavailable("mounting needs root and the mount command")
    deadline = time.monotonic() + busy_for
    while True:
        proc = subprocess.run([mount, *args], capture_output=True, text=True, timeout=30, check=False)
        if proc.returncode == 0:
            return
        if "busy" not in proc.stderr or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    _unavailable(f"mount {' '.join(args)} is not permitted here: {proc.stderr.strip()}")


def unmount(path: Path) -> None:
    """Unmount ``path``; lazily when busy (a proxy still holding its files)."""
    umount = shutil.which("umount") or "/bin/umount"
    if subprocess.run([umount, str(path)], capture_output=True, timeout=30, check=False).returncode != 0:
        subprocess.run([umount, "-l", str(path)], capture_output=True, timeout=30, check=True)


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "24m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``path`` (created) for the block."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        unmount(path)


class ReadOnly:
    """A bind mount of a directory over itself, switched between read-only and read-write."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def set(self, read_only: bool) -> None:
        # The kernel refuses to make a mount read-only while a file is open for writing through
        # it (EBUSY, "mount point is busy"): the proxy may be writing a slice just then.
        _mount("-o", f"remount,bind,{'ro' if read_only else 'rw'}", str(self.path), busy_for=10.0)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[ReadOnly]:
    """``path`` bind-mounted over itself and made read-only; ``.set(False)`` makes it writable
    again. Unmounted at the end (the directory underneath is the original, writable one)."""
    _mount("--bind", str(path), str(path))
    try:
        mount = ReadOnly(path)
        mount.set(True)
        yield mount
    finally:
        unmount(path)


def fill_up(directory: Path, name: str = "filler") -> Path:
    """A file that takes every free block of ``directory``'s file system (ENOSPC from then on)."""
    filler = directory / name
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for block in (2**20, 4096):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * block)
    finally:
        os.close(fd)
    return filler
