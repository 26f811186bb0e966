"""Build a cache directory of N objects directly, in the shape diskcache itself writes.

Writing a million objects through ``SliceStore`` (one ``Cache.set`` per entry: a transaction,
a SELECT, an INSERT and a cull check each) runs at about 800 objects a second: 20 minutes for a
million. This writes the value files with plain ``os.write`` and inserts every Cache row in
one transaction with ``executemany``, the rows exactly as ``Cache.set`` makes them
(diskcache/core.py: ``_row_insert`` and ``Disk.store``):

- key: the proxy's key string (``proxy.cache.store``), ``raw`` = 1 (a str key is kept as is);
- store_time = access_time = now, expire_time NULL, access_count 0, tag = the object's URL;
- a slice: mode 2 (MODE_BINARY), size = its length; a metadata record: mode 4 (MODE_PICKLE),
  pickled with diskcache's protocol (HIGHEST_PROTOCOL), size = the pickle's length;
- filename ``ab/cd/<28 hex>.val`` of 16 random bytes, as ``Disk.filename``; value NULL.

The schema, the Settings rows and the triggers that keep Settings.count and Settings.size
come from opening the directory with ``SliceStore`` first (so the settings are the proxy's);
the triggers then count every inserted row, so ``len(cache)`` and ``volume()`` are right.

``python -m benchmarks.storebuild DIR OBJECTS [--object-size 4096] [--slice-size 1048576]``
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import sqlite3
import sys
import time
import zlib
from pathlib import Path
from typing import Iterator

REPO_ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = "http://127.0.0.1:9"  # never asked: every object is fresh and whole in the store
BATCH = 20_000  # objects per executemany
TTL = 30 * 86400.0
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_INSERT = ("INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag, size, mode, "
           "filename, value) VALUES (?, 1, ?, NULL, ?, 0, ?, ?, ?, ?, ?)")  # value: a slice's CRC-32, as the store keeps it
MODE_BINARY, MODE_PICKLE = 2, 4  # diskcache.core


def object_url(i: int, upstream: str = UPSTREAM) -> str:
    return f"{upstream}/o/{i}.bin"


def object_bytes(i: int, size: int) -> bytes:
    """Object ``i``'s content: cheap to make, different for each object."""
    seed = hashlib.sha256(str(i).encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def _names(n: int) -> Iterator[tuple[str, str]]:
    """``n`` fresh (relative, full-path-suffix) names as ``Disk.filename`` makes them."""
    raw = os.urandom(16 * n).hex()
    for k in range(n):
        h = raw[32 * k:32 * k + 32]
        yield f"{h[:2]}/{h[2:4]}/{h[4:]}.val", h


def build(directory: Path, objects: int, object_size: int, slice_size: int, *, start: int = 0,
          quiet: bool = False, upstream: str = UPSTREAM) -> float:
    """Write objects ``start`` .. ``start + objects - 1``; the seconds taken."""
    sys.path.insert(0, str(REPO_ROOT))
    from proxy.cache.store import SliceStore, meta_key, meta_record, slice_key
    from proxy.core.representation import ObjectMeta

    t0 = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    SliceStore(str(directory), 2**50, threads=1).close()  # the schema, Settings and triggers, as the proxy has them
    base = str(directory)
    con = sqlite3.connect(os.path.join(base, "cache.db"), isolation_level=None)
    con.execute("PRAGMA synchronous = OFF")
    con.execute("BEGIN")
    now = time.time()
    slices = -(-object_size // slice_size)
    ctype = "application/octet-stream"
    try:
        for lo in range(start, start + objects, BATCH):
            hi = min(start + objects, lo + BATCH)
            names = _names((hi - lo) * (1 + slices))
            rows = []
            for i in range(lo, hi):
                url = object_url(i, upstream)
                etag = f'"o{i}"'
                meta = ObjectMeta(url, object_size, etag, None, ctype, now, TTL,
                                  headers=(("ETag", etag), ("Content-Type", ctype), ("Cache-Control", "max-age=2592000")))
                values = [(meta_key(url), pickle.dumps(meta_record(meta), protocol=pickle.HIGHEST_PROTOCOL),
                           MODE_PICKLE)]
                body = object_bytes(i, object_size)
                values += [(slice_key(url, meta.validator, s), body[s * slice_size:(s + 1) * slice_size], MODE_BINARY)
                           for s in range(slices)]
                for (key, data, mode), (rel, _) in zip(values, names):
                    path = os.path.join(base, rel)
                    try:
                        fd = os.open(path, _WRITE_FLAGS, 0o644)
                    except FileNotFoundError:  # its two directory levels, made as diskcache does: on first use
                        os.makedirs(os.path.dirname(path), exist_ok=True)
                        fd = os.open(path, _WRITE_FLAGS, 0o644)
                    try:
                        os.write(fd, data)
                    finally:
                        os.close(fd)
                    crc = zlib.crc32(data) if mode == MODE_BINARY else None
                    rows.append((key, now, now, url, len(data), mode, rel, crc))
            con.executemany(_INSERT, rows)
            if not quiet and (hi - start) % 200_000 < BATCH:
                print(f"storebuild: {hi - start:,} objects, {time.monotonic() - t0:.0f} s", flush=True)
        con.execute("COMMIT")
    finally:
        con.close()
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.storebuild", description=__doc__.split("\n")[0])
    p.add_argument("directory", type=Path)
    p.add_argument("objects", type=int)
    p.add_argument("--object-size", type=int, default=4096)
    p.add_argument("--slice-size", type=int, default=1 << 20, help="the proxy's slice_size (objects get several)")
    opts = p.parse_args(argv)
    took = build(opts.directory, opts.objects, opts.object_size, opts.slice_size)
    print(f"storebuild: {opts.objects:,} objects of {opts.object_size} bytes in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
