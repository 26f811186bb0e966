"""The sweep for files no row names, on a real store in a temporary directory: only files both old
and unnamed go; young ones (maybe another worker's, about to be recorded) and named ones stay."""

from __future__ import annotations

import os
import time
from pathlib import Path

from proxy.cache.orphans import BUCKETS, ORPHAN_AGE, old_files, sweep_bucket
from proxy.cache.store import SliceStore
from proxy.core.representation import ObjectMeta

URL = "http://origin/a.bin"
S = 4096
META = ObjectMeta(url=URL, length=3 * S, etag='"v1"', last_modified=None, content_type="video/mp4",
                  stored_at=1_700_000_000.0, ttl=3600.0)


def plant(directory: Path, name: str, age: float) -> Path:
    p = directory / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x" * 100)
    t = time.time() - age
    os.utime(p, (t, t))
    return p


def age_all(directory: Path, age: float) -> None:
    t = time.time() - age
    for p in directory.rglob("*.val"):
        os.utime(p, (t, t))


async def test_only_old_files_without_a_row_are_removed(tmp_path: Path) -> None:
    store = SliceStore(str(tmp_path), 64 * 2**20, threads=2, max_fds=16)
    try:
        for i in range(3):
            await store.put_slice(URL, META.validator, i, os.urandom(S))
        await store.put_meta(META)
        age_all(tmp_path, 2 * ORPHAN_AGE)  # the entries' own files, as old as the orphans
        named = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.val"))
        assert len(named) == 4
        old = [plant(tmp_path, f"{b}0/1f/{'a' * 28}.val", 2 * ORPHAN_AGE) for b in "0a"]
        young = plant(tmp_path, f"a0/1f/{'b' * 28}.val", ORPHAN_AGE / 2)  # written just now
        other = plant(tmp_path, "a0/1f/notes.txt", 2 * ORPHAN_AGE)  # not diskcache's
        assert sorted(old_files(str(tmp_path), "a", time.time() - ORPHAN_AGE)) == sorted(
            str(p.relative_to(tmp_path)) for p in [old[1], *[tmp_path / n for n in named if str(n).startswith("a")]])

        removed = [r for b in BUCKETS for r in sweep_bucket(store.cache, str(tmp_path), b, time.time())]
        assert sorted(removed) == sorted(str(p.relative_to(tmp_path)) for p in old)
        assert not any(p.exists() for p in old) and young.exists() and other.exists()
        assert all((tmp_path / n).exists() for n in named)
        for i in range(3):  # the entries are whole
            assert await store.open_slice(URL, META.validator, i, S) is not None
        assert await store.get_meta(URL) is not None
    finally:
        store.close()
