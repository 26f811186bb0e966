"""A proxy's cache directory seen from outside, read-only: which slices have a row in diskcache's
SQLite ``Cache`` table, and the file of each (to damage it behind the proxy's back)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

from proxy.cache.store import SLICE_KEYS, slice_id_of, slice_key
from proxy.core.slices import Unit

__all__ = ["slice_rows", "slice_file", "all_files", "wait_slices", "etag_validator", "until"]


def etag_validator(etag: str, length: int) -> str:
    """The validator the store files an object with a strong ETag under (ObjectMeta.validator)."""
    return f"e:{length}:{etag}"


def _rows(cache_dir: Path, sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
    db = cache_dir / "cache.db"
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def slice_rows(cache_dir: Path, url: str, validator: str) -> dict[Unit, Path]:
    """Every stored unit of one object version: unit -> its file (committed rows only)."""
    out: dict[Unit, Path] = {}
    for key, filename in _rows(cache_dir, "SELECT key, filename FROM Cache WHERE key >= ? AND key < ?", SLICE_KEYS):
        sid = slice_id_of(key) if isinstance(key, str) else None
        if sid is not None and sid[:2] == (url, validator) and isinstance(filename, str):
            out[sid[2]] = cache_dir / filename
    return out


def all_files(cache_dir: Path) -> set[Path]:
    """The files every row names (slices and metadata records)."""
    return {cache_dir / str(f) for (f,) in _rows(cache_dir, "SELECT filename FROM Cache WHERE filename IS NOT NULL", ())}


def slice_file(cache_dir: Path, url: str, validator: str, unit: Unit) -> Path | None:
    """The file of one stored unit (its key: ``store.slice_key``), or None when it has no row."""
    rows = _rows(cache_dir, "SELECT filename FROM Cache WHERE key = ?", (slice_key(url, validator, unit),))
    return cache_dir / str(rows[0][0]) if rows else None


async def until(pred: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll ``pred`` (on the event loop: the proxy and the origin go on) until it is true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (got := pred()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.02)
    return got


async def wait_slices(cache_dir: Path, url: str, validator: str, units: set[Unit],
                timeout: float = 10.0) -> dict[Unit, Path]:
    """Wait (bounded) until all of ``units`` have a row: a slice is written after its bytes were sent."""
    deadline = time.monotonic() + timeout
    while True:
        got = slice_rows(cache_dir, url, validator)
        if units <= got.keys():
            return got
        assert time.monotonic() < deadline, f"units {sorted(units - got.keys(), key=str)} not stored in {timeout} s"
        await asyncio.sleep(0.02)
