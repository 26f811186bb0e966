"""Files in the cache directory that no row names: a process killed between a slice's write and
its row leaves one (never served, since nothing finds it, but its bytes are never counted nor freed).

A file is written completely before its row is inserted, and a row that cannot be inserted
(diskcache's SQLite timeout, 60 s) has its file removed; so any file written longer ago than
:data:`ORPHAN_AGE` either has its row already or never will. A sweep lists such old files of
one bucket of names (the first hex digit: :data:`BUCKETS` of them, so that what is held in
memory is a sixteenth of the names), then reads the names the rows hold in that bucket, and
removes the old files that are not among them. A file another worker is writing, or has
written and is about to record, is young, so several workers sharing the directory are safe
(and only one sweeps: the scrubber's). The rows are read after the files are listed: a row
inserted meanwhile names a new file, never one of the old ones listed.
"""

from __future__ import annotations

import os
import re
from typing import Iterator

import diskcache

__all__ = ["BUCKETS", "ORPHAN_AGE", "SWEEP_INTERVAL", "sweep_bucket", "old_files", "row_names"]

ORPHAN_AGE = 600.0  # seconds since its last write before a file without a row is removed
SWEEP_INTERVAL = 3600.0  # seconds from the end of one sweep to the next (the first one at start-up)
BUCKETS = tuple("0123456789abcdef")  # diskcache's names are random hex: ab/cd/<28 hex>.val
_DIR = re.compile(r"[0-9a-f]{2}$")
_FILE = re.compile(r"[0-9a-f]{28}\.val$")


def _dirs(path: str, bucket: str = "") -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            entries = [e for e in it if e.name.startswith(bucket) and _DIR.match(e.name) and e.is_dir()]
    except OSError:
        return
    yield from sorted(entries, key=lambda e: e.name)


def old_files(directory: str, bucket: str, before: float) -> list[str]:
    """Value files of ``bucket`` (relative, as rows name them) last written before ``before`` (epoch)."""
    out = []
    for top in _dirs(directory, bucket):
        for sub in _dirs(top.path):
            try:
                with os.scandir(sub.path) as it:
                    for f in it:
                        try:
                            if _FILE.match(f.name) and f.is_file() and f.stat().st_mtime < before:
                                out.append(os.path.join(top.name, sub.name, f.name))
                        except OSError:  # removed meanwhile
                            continue
            except OSError:
                continue
    return out


def row_names(cache: diskcache.Cache, bucket: str) -> set[str]:
    """The file names the rows hold in ``bucket`` (one pass over the table, only that bucket kept)."""
    rows = cache._sql("SELECT filename FROM Cache WHERE filename IS NOT NULL AND substr(filename, 1, 1) = ?",
                      (bucket,))
    return {name for (name,) in rows if isinstance(name, str)}


def sweep_bucket(cache: diskcache.Cache, directory: str, bucket: str, now: float) -> list[str]:
    """Remove the old files of ``bucket`` no row names; the ones removed."""
    candidates = old_files(directory, bucket, now - ORPHAN_AGE)
    if not candidates:
        return []
    named = row_names(cache, bucket)  # after the listing (see the module)
    removed = []
    for rel in candidates:
        if rel in named:
            continue
        try:
            os.unlink(os.path.join(directory, rel))
        except FileNotFoundError:
            continue
        removed.append(rel)
    return removed
