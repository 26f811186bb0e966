"""The file index (proxy.cache.fileindex) and the store using it: hits find their files without SQLite."""

from __future__ import annotations

import asyncio
import os
import time
import tracemalloc
from pathlib import Path

import pytest

from proxy.cache import fileindex
from proxy.cache.fileindex import FileIndex
from proxy.cache import eviction
from proxy.cache.store import SliceStore, slice_key
from proxy.core.representation import ObjectMeta


def test_paths_round_trip_and_unknown_names_are_left_out() -> None:
    fi = FileIndex("/c")
    name = "ab/cd/" + "0123456789abcdef0123456789ab" + ".val"
    fi.load([("k1", name), ("k2", None), ("k3", "not-a-diskcache-name"), (7, name)])
    assert fi.path("k1") == os.path.join("/c", "ab", "cd", "0123456789abcdef0123456789ab.val")
    assert "k1" in fi and "k2" not in fi and "k3" not in fi and len(fi) == 1
    fi.note("k2", "/c/" + name)  # a full path works too
    assert fi.path("k2") == fi.path("k1")
    fi.forget("k1")
    fi.note("k2", None)
    assert len(fi) == 0


def test_an_entry_costs_about_its_stated_bytes() -> None:
    tracemalloc.start()
    try:
        fi = FileIndex("/c")
        fi.load((slice_key(f"http://o/{i}.bin", 'e:1:"v"', 0), f"ab/cd/{os.urandom(14).hex()}.val")
                for i in range(50_000))
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert used / 50_000 <= fileindex.BYTES_PER_ENTRY * 1.1


def meta(url: str, length: int) -> ObjectMeta:
    return ObjectMeta(url, length, '"v1"', None, "application/octet-stream", time.time(), 3600.0,
                      headers=(("ETag", '"v1"'),))


async def test_a_restarted_store_finds_metadata_and_slices_without_sqlite(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    store = SliceStore(str(tmp_path), 64 * 2**20, threads=2)
    m = meta("http://o/a.bin", 1000)
    await store.put_meta(m)
    await store.put_slice(m.url, m.validator, 0, b"x" * 1000)
    store.close()

    store = SliceStore(str(tmp_path), 64 * 2**20, threads=2)
    try:
        assert len(store.files) == 2  # read from the store at start-up

        def no_sqlite(*args: object, **kw: object) -> None:
            raise AssertionError("a hit asked SQLite")

        monkeypatch.setattr(store._cache, "get", no_sqlite)
        monkeypatch.setattr(store, "_run", no_sqlite)
        assert await store.get_meta(m.url) == m
        assert await store.present(m.url, m.validator, [0]) == {0}
        fd = await store.open_slice(m.url, m.validator, 0, 1000)
        assert fd is not None and os.pread(fd, 5, 0) == b"xxxxx"
        monkeypatch.undo()
        await store.flush_touches()  # the LRU hears of them in one batch
    finally:
        store.close()


async def test_a_file_gone_behind_the_index_is_a_miss_not_an_error(tmp_path: Path) -> None:
    store = SliceStore(str(tmp_path), 64 * 2**20, threads=2, max_fds=1)
    try:
        a, b = meta("http://o/a.bin", 10), meta("http://o/b.bin", 10)
        for m in (a, b):
            await store.put_meta(m)
            await store.put_slice(m.url, m.validator, 0, b"y" * 10)
        # a's fd is no longer held (max_fds=1); delete its file as a cull by another worker would.
        path = store.files.path(slice_key(a.url, a.validator, 0))
        assert path is not None
        store._cache.evict(a.url)
        assert not os.path.exists(path)
        assert await store.open_slice(a.url, a.validator, 0, 10) is None
        assert await store.get_meta(a.url) is None
        got = await store.open_slice(b.url, b.validator, 0, 10)
        assert got is not None
    finally:
        store.close()


def test_damaged_length_is_dropped(tmp_path: Path) -> None:
    async def go() -> None:
        store = SliceStore(str(tmp_path), 64 * 2**20, threads=2, max_fds=1)
        try:
            a, b = meta("http://o/a.bin", 10), meta("http://o/b.bin", 10)
            for m in (a, b):
                await store.put_slice(m.url, m.validator, 0, b"z" * 10)
            path = store.files.path(slice_key(a.url, a.validator, 0))
            assert path is not None
            with open(path, "ab") as f:
                f.write(b"extra")
            assert await store.open_slice(a.url, a.validator, 0, 10) is None
            await asyncio.sleep(0.2)  # the drop runs on a store thread
            assert store.corrupt_dropped >= 1
        finally:
            store.close()

    asyncio.run(go())


def test_touches_report_each_key_once_per_window() -> None:
    from proxy.cache.touches import Touches

    t = Touches(window=300.0)
    t.add(("u", "v", 0))
    t.add("m3\x00u")
    assert sorted(map(str, t.due(0.0))) == sorted(map(str, [("u", "v", 0), "m3\x00u"]))
    t.add(("u", "v", 0))
    t.add(("u", "v", 1))
    assert t.due(10.0) == [("u", "v", 1)]  # the first one was reported in this window already
    t.add(("u", "v", 0))
    assert t.due(299.0) == []
    t.add(("u", "v", 0))
    assert t.due(300.0) == [("u", "v", 0)]  # a new window
    t.add(("w", "v", 0))
    t.forget("w")
    assert t.due(301.0) == []


async def test_hits_served_from_the_index_reach_diskcaches_lru(tmp_path: Path) -> None:
    store = SliceStore(str(tmp_path), 64 * 2**20, threads=2, max_fds=1)
    try:
        a = meta("http://o/a.bin", 10)
        await store.put_slice(a.url, a.validator, 0, b"q" * 10)
        key = slice_key(a.url, a.validator, 0)
        before = store._cache._sql("SELECT access_time FROM Cache WHERE key = ?", (key,)).fetchone()[0]
        store._forget_fd((a.url, a.validator, 0))
        await asyncio.sleep(0.01)
        assert await store.open_slice(a.url, a.validator, 0, 10) is not None
        await store.flush_touches()
        after = store._cache._sql("SELECT access_time FROM Cache WHERE key = ?", (key,)).fetchone()[0]
        assert after > before
    finally:
        store.close()


async def test_a_restart_preloads_the_most_recent_metadata_but_not_what_was_dropped_meanwhile(tmp_path: Path) -> None:
    from proxy.cache.metadata import MetaCache
    from proxy.cache.tasks import Jobs

    store = SliceStore(str(tmp_path), 64 * 2**20, threads=2)
    try:
        for i in range(5):
            await store.put_meta(meta(f"http://o/{i}.bin", 10))
        metas = MetaCache(store, Jobs(), memory=3)
        preload = asyncio.ensure_future(metas.preload("http://o/"))
        await asyncio.sleep(0)  # the read of the store is under way
        metas.forget("http://o/4.bin")  # e.g. a purge meanwhile
        assert await preload == 2
        assert metas.hot("http://o/4.bin") is None and metas.hot("http://o/3.bin") is not None
        assert metas.hot("http://o/0.bin") is None  # only the 3 most recent were read
    finally:
        store.close()


def test_the_table_agrees_with_a_dict_through_growth_deletes_and_reuse() -> None:
    import random

    rng = random.Random(5)
    fi = FileIndex("/c")
    model: dict[str, str] = {}
    keys = [slice_key(f"http://o/{i}.bin", 'e:1:"v"', 0) for i in range(6000)]
    for step in range(40_000):
        key = rng.choice(keys)
        if rng.random() < 0.6:
            name = f"{os.urandom(1).hex()}/{os.urandom(1).hex()}/{os.urandom(14).hex()}.val"
            fi.note(key, name)
            model[key] = name
        else:
            fi.forget(key)
            model.pop(key, None)
        if step % 5000 == 0:
            assert len(fi) == len(model)
    assert len(fi) == len(model)
    for key in keys:
        want = model.get(key)
        assert fi.path(key) == (None if want is None else os.path.join("/c", *want.split("/")))
    assert fi.slots * fileindex.FILL >= len(fi)  # deleted slots were reused or dropped by a resize


def test_a_load_sized_by_the_expected_count_does_not_grow() -> None:
    fi = FileIndex("/c")
    fi.load(((f"k{i}", f"ab/cd/{os.urandom(14).hex()}.val") for i in range(10_000)), expected=10_000)
    assert len(fi) == 10_000 and fi.slots == int(10_000 / fileindex.LOW_FILL)
    fi.forget_many(["k1", "k2", 7])
    assert len(fi) == 9_998 and "k1" not in fi and "k3" in fi


async def test_eviction_at_the_size_limit_tells_the_index_which_keys_left(tmp_path: Path) -> None:
    store = SliceStore(str(tmp_path), 1 << 20, threads=2, max_fds=4)
    try:
        metas = [meta(f"http://o/{i}.bin", 32 * 1024) for i in range(80)]  # 2.5 MiB into 1 MiB
        for m in metas:
            await store.put_meta(m)
            await store.put_slice(m.url, m.validator, 0, b"y" * (32 * 1024))
        volume, entries = await store.volume()
        assert volume <= 1 << 20 and store.evictions > 0
        assert len(store.files) == entries  # every culled key was forgotten, no rebuild needed
        assert store._cache.cull_limit == 0  # diskcache itself never culls
        gone = [m for m in metas if await store.get_meta(m.url) is None]
        assert gone and gone[0] is metas[0]  # the least recently used left first
    finally:
        store.close()


async def test_evicting_an_object_forgets_all_its_files(tmp_path: Path) -> None:
    store = SliceStore(str(tmp_path), 64 * 2**20, threads=2)
    try:
        m = meta("http://o/a.bin", 3000)
        await store.put_meta(m)
        for i in range(3):
            await store.put_slice(m.url, m.validator, i, b"z" * 1000)
        assert len(store.files) == 4
        assert await store.evict_object(m.url) == 4
        assert len(store.files) == 0 and await store.present(m.url, m.validator, range(3)) == set()
    finally:
        store.close()


async def test_a_hit_served_from_the_index_spares_its_entry_from_the_cull(tmp_path: Path) -> None:
    store = SliceStore(str(tmp_path), 1 << 20, threads=2, max_fds=1)
    try:
        metas = [meta(f"http://o/{i}.bin", 32 * 1024) for i in range(40)]
        for m in metas[:20]:
            await store.put_meta(m)
            await store.put_slice(m.url, m.validator, 0, b"y" * (32 * 1024))
        # Object 0 is the least recently written; a hit on it (no diskcache get) is flushed
        # past the SQL budget: only the file index's tick says it was used.
        store._cache._sql("UPDATE Cache SET access_time = access_time - 100")
        fd = store.hold_known(metas[0].url, metas[0].validator, 0, 32 * 1024)
        assert fd is not None
        budget = eviction.TOUCH_SQL_BUDGET
        eviction.TOUCH_SQL_BUDGET = 0
        try:
            await store.flush_touches()
        finally:
            eviction.TOUCH_SQL_BUDGET = budget
        for m in metas[20:]:
            await store.put_meta(m)
            await store.put_slice(m.url, m.validator, 0, b"y" * (32 * 1024))
        assert store.evictions > 0
        assert await store.present(metas[0].url, metas[0].validator, [0]) == {0}  # spared
        assert await store.present(metas[1].url, metas[1].validator, [0]) == set()  # unused: culled
    finally:
        store.close()


def test_changes_made_while_a_load_scans_are_kept() -> None:
    fi = FileIndex("/c")
    name = "ab/cd/" + "0" * 28 + ".val"

    def rows():  # the scan of the store, with writes and culls landing in the middle of it
        yield ("old1", name)
        fi.note("new", name)  # written after the scan passed its key
        fi.forget("old2")  # culled after the scan read it
        yield ("old2", name)
        yield ("old3", name)

    fi.load(rows())
    assert "new" in fi and "old1" in fi and "old3" in fi and "old2" not in fi and len(fi) == 3


async def test_a_store_loading_its_index_in_the_background_answers_meanwhile(tmp_path: Path) -> None:
    store = SliceStore(str(tmp_path), 64 * 2**20, threads=2)
    m = meta("http://o/a.bin", 1000)
    await store.put_meta(m)
    await store.put_slice(m.url, m.validator, 0, b"x" * 1000)
    store.close()
    store = SliceStore(str(tmp_path), 64 * 2**20, threads=2, load_in_background=True)
    try:
        assert await store.get_meta(m.url) == m  # from the index, or from SQLite while it loads
        await asyncio.wrap_future(store.index_loaded)
        assert len(store.files) == 2
    finally:
        store.close()
