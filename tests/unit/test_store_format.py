"""The cache format: a directory holding entries of another format is never misread.

A real diskcache in a temporary directory; the old and foreign entries are written
with diskcache itself, in the key shapes other formats use.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import diskcache
import pytest

from proxy.cache.store import FORMAT, SliceStore
from proxy.core.representation import ObjectMeta

URL = "http://origin/a.bin"
S = 4096
META = ObjectMeta(url=URL, length=3 * S, etag='"v1"', last_modified=None, content_type="video/mp4",
                  stored_at=1_700_000_000.0, ttl=3600.0)
V = META.validator
LIMIT = 64 * 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


def raw_cache(path: Path) -> diskcache.Cache:
    """The directory as the store opens it (values as files, tag index), for writing by hand."""
    return diskcache.Cache(str(path), size_limit=LIMIT, eviction_policy="least-recently-used",
                           disk_min_file_size=0, tag_index=True, statistics=False)


def write_format_0(path: Path, url: str = URL, n: int = 3) -> int:
    """What the store wrote before keys had a format: "m\\x00<url>" -> a flat dict,
    "s\\x00<url>\\x00<validator>\\x00<unit>" -> the bytes. Returns the number of entries."""
    with raw_cache(path) as c:
        c.set(f"m\x00{url}", META.to_dict(), tag=url)
        for i in range(n - 1):
            c.set(f"s\x00{url}\x00{V}\x00{i}", bytes([i]) * S, tag=url)
        c.set(f"s\x00{url}\x00{V}\x001.2", b"b" * 512, tag=url)  # a block
    return n + 1


def value_files(path: Path) -> list[Path]:
    return [p for p in path.rglob("*.val") if p.is_file()]


def format_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "rangeproxy.store" and "not of cache format" in r.getMessage()]


async def read_slice(store: SliceStore, index: int | tuple[int, int], size: int) -> bytes | None:
    fd = await store.open_slice(URL, V, index, size)
    return None if fd is None else os.pread(fd, size, 0)


async def test_a_format_0_directory_is_dropped_once_and_never_served(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rangeproxy.store")
    old = write_format_0(tmp_path)
    assert len(value_files(tmp_path)) == old

    store = SliceStore(str(tmp_path), LIMIT, max_fds=64)
    try:
        assert await store.get_meta(URL) is None
        assert await read_slice(store, 0, S) is None and await read_slice(store, (1, 2), 512) is None
        assert await store.present_units(URL, V, [0, 1, (1, 2)]) == set()
        assert await store.object_count() == 0
        assert (await store.volume())[1] == 0
        assert store.corrupt_dropped == 0  # another format is not damage
    finally:
        store.close()
    assert value_files(tmp_path) == []  # the old slice and meta files went with their rows
    lines = format_lines(caplog)
    assert len(lines) == 1, caplog.text
    assert f"dropped {old} entries" in lines[0] and f"{old} of format 0" in lines[0] and str(tmp_path) in lines[0]

    caplog.clear()
    store = SliceStore(str(tmp_path), LIMIT, max_fds=64)  # nothing left to drop: no second line
    store.close()
    assert format_lines(caplog) == []


async def test_a_directory_of_a_newer_format_is_dropped_the_same_way(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rangeproxy.store")
    future = FORMAT + 1
    with raw_cache(tmp_path) as c:
        c.set(f"m{future}\x00{URL}", {"format": future, "meta": META.to_dict(), "headers": [["a", "b"]]}, tag=URL)
        c.set(f"s{future}\x00{URL}\x00{V}\x000", b"x" * S, tag=URL)
        c.set(f"v{future}\x00{URL}\x00accept-encoding", b"variants", tag=URL)  # a kind format 1 lacks
        c.set(("some", "tuple"), b"?")  # keys no format of ours writes
        c.set(7, b"?")
        c.set(b"raw", b"?")

    store = SliceStore(str(tmp_path), LIMIT, max_fds=64)
    try:
        assert await store.get_meta(URL) is None
        assert await read_slice(store, 0, S) is None
        assert (await store.volume())[1] == 0
    finally:
        store.close()
    assert value_files(tmp_path) == []
    [line] = format_lines(caplog)
    assert "dropped 6 entries" in line and f"3 of format {future}" in line and "3 unrecognised" in line


async def test_entries_of_this_format_survive_a_reopen(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rangeproxy.store")
    store = SliceStore(str(tmp_path), LIMIT, max_fds=64)
    try:
        await store.put_meta(META)
        await store.put_slice(URL, V, 0, b"0" * S)
        await store.put_slice(URL, V, 1, [b"1" * 1000, b"1" * (S - 1000)])  # chunks as they came
        await store.put_slice(URL, V, (2, 3), b"k" * 512)
        entries = (await store.volume())[1]
    finally:
        store.close()

    store = SliceStore(str(tmp_path), LIMIT, max_fds=64)
    try:
        assert (await store.volume())[1] == entries == 4
        assert await store.get_meta(URL) == META
        assert await store.object_count() == 1
        assert await store.present_units(URL, V, [0, 1, 2, (2, 3)]) == {0, 1, (2, 3)}
        assert await read_slice(store, 0, S) == b"0" * S
        assert await read_slice(store, 1, S) == b"1" * S
        assert await read_slice(store, (2, 3), 512) == b"k" * 512
        assert store.corrupt_dropped == 0
        assert await store.evict_object(URL) == 4  # still one tag per object
        assert (await store.volume())[1] == 0
    finally:
        store.close()
    assert format_lines(caplog) == [] and not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("record", [
    {"format": FORMAT + 1, "meta": META.to_dict()},  # another version's record
    {"format": 0, "meta": META.to_dict()},
    {"meta": META.to_dict()},  # no version
    META.to_dict(),  # format 0's flat dict, under a current key
    {"format": FORMAT, "meta": {"url": URL}},  # fields missing
    {"format": FORMAT, "meta": {**META.to_dict(), "url": "http://origin/other"}},  # someone else's
    {"format": FORMAT, "meta": "not a mapping"},
    ["a", "list"],
])
async def test_a_meta_record_of_the_wrong_version_is_a_miss_and_deleted(tmp_path: Path, record: object) -> None:
    store = SliceStore(str(tmp_path), LIMIT, max_fds=64)
    try:
        await store.put_meta(META)
        key = f"m{FORMAT}\x00{URL}"  # the key this format uses for URL ...
        assert key in store._cache
        store._cache.set(key, record, tag=URL)  # ... holding a record it cannot use
        assert await store.get_meta(URL) is None
        assert key not in store._cache
        assert store.corrupt_dropped == 1
        assert await store.get_meta(URL) is None and store.corrupt_dropped == 1  # a plain miss now
        await store.put_meta(META)
        assert await store.get_meta(URL) == META
    finally:
        store.close()


async def test_a_meta_value_that_does_not_unpickle_is_a_miss_and_deleted(tmp_path: Path) -> None:
    store = SliceStore(str(tmp_path), LIMIT, max_fds=64)
    try:
        await store.put_meta(META)
        [val] = value_files(tmp_path)  # the pickled record's file
        val.write_bytes(b"\x80\x05garbage")
        assert await store.get_meta(URL) is None
        assert store.corrupt_dropped == 1 and (await store.volume())[1] == 0
    finally:
        store.close()


async def test_old_entries_written_into_a_current_directory_are_dropped_at_the_next_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """e.g. a rollback to an older proxy for a while: its entries are found and dropped,
    this format's entries (here, of a worker still running) are kept."""
    caplog.set_level(logging.INFO, logger="rangeproxy.store")
    running = SliceStore(str(tmp_path), LIMIT, max_fds=64)
    try:
        await running.put_meta(META)
        await running.put_slice(URL, V, 0, b"0" * S)
        old = write_format_0(tmp_path, url="http://origin/old.bin")
        SliceStore(str(tmp_path), LIMIT, max_fds=64).close()
        [line] = format_lines(caplog)
        assert f"dropped {old} entries" in line
        assert (await running.volume())[1] == 2
        assert await running.get_meta(URL) == META
        running.forget_fds(URL)  # read it through diskcache again, not a held fd
        assert await read_slice(running, 0, S) == b"0" * S
    finally:
        running.close()


WORKER = textwrap.dedent("""
    import asyncio, json, logging, os, sys, time
    from proxy.cache.store import SliceStore
    from proxy.core.representation import ObjectMeta

    directory, go, name = sys.argv[1:4]
    lines = []
    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())
    logging.getLogger("rangeproxy.store").addHandler(Keep())
    while not os.path.exists(go):
        time.sleep(0.001)
    store = SliceStore(directory, 64 * 1024 * 1024, max_fds=64)
    url = "http://origin/" + name
    meta = ObjectMeta(url=url, length=10, etag=None, last_modified="x", content_type=None, stored_at=1.0, ttl=9.0)

    async def main():
        await store.put_meta(meta)
        await store.put_slice(url, meta.validator, 0, b"0123456789")
    asyncio.run(main())
    store.close()
    print(json.dumps(lines))
""")


def test_workers_starting_at_once_on_an_old_directory_keep_each_others_fresh_entries(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with raw_cache(cache) as c:  # enough old entries that the drop takes a while
        for i in range(600):
            c.set(f"s\x00http://origin/old{i % 7}\x00{V}\x00{i}", b"o" * 64, tag=f"http://origin/old{i % 7}")
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(cache), str(go), f"w{k}"], env=env,
                              stdout=subprocess.PIPE, text=True) for k in range(3)]
    time.sleep(0.5)  # all of them waiting for the start
    go.touch()
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    lines = [line for out in outs for line in json.loads(out)]
    assert len(lines) == 1 and "dropped 600 entries" in lines[0], lines  # one of them dropped, once

    with raw_cache(cache) as c:
        assert sorted(k for k in c.iterkeys()) == sorted(
            [f"m{FORMAT}\x00http://origin/w{k}" for k in range(3)]
            + [f"s{FORMAT}\x00http://origin/w{k}\x00m:x:10\x000" for k in range(3)])
    store = SliceStore(str(cache), LIMIT, max_fds=64)
    try:
        assert store._object_count() == 3
    finally:
        store.close()
