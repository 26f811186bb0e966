"""Interleavings of the engine's own tasks that a loopback test hits only now and then.

The engine runs here on a real diskcache in a temporary directory; no origin is
needed (nothing is fetched). Each test forces the interleaving that once made a
loaded CI machine fail a whole-server test.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from proxy.core.settings import settings_from_mapping
from proxy.cache.engine import Engine
from proxy.cache.flights import SliceFill
from proxy.http.ranges import Span
from proxy.core.representation import ObjectMeta
from proxy.cache.store import SliceStore
from proxy.cache.upstream import Upstream

S = 64 * 1024


def _engine(tmp_path: Path) -> Engine:
    settings = settings_from_mapping({"upstream": "http://127.0.0.1:9", "cache_dir": str(tmp_path / "cache"),
                                      "slice_size": S, "readahead_slices": 0})
    store = SliceStore(settings.cache_dir, settings.cache_size, settings.store_threads)
    upstream = Upstream(settings.upstream, connections=1, connect_timeout=1.0, read_timeout=1.0)
    return Engine(settings, store, upstream)


async def test_a_slice_stored_while_the_plan_asks_the_store_still_counts_as_cached(tmp_path: Path) -> None:
    """Slice 1 is complete in memory, its store write pending. The plan asks the store
    about slices 0 and 2 (a thread hop); meanwhile the write of slice 1 finishes and the
    fill leaves the flights. Slice 1 is cached all along: PARTIAL, not MISS."""
    engine = _engine(tmp_path)
    meta = ObjectMeta("/x.bin", 4 * S, '"v1"', None, None, 0.0, 1e9)
    data = bytes(range(256)) * (S // 256)
    fl = engine.flights_for(meta)
    fill = SliceFill(1, S)
    fill.append(data)
    fill.finish()
    fl.fills[1] = fill

    plan_task = asyncio.get_running_loop().create_task(engine.plan(meta, (Span(0, 3 * S),)))
    await asyncio.sleep(0)  # the plan has snapshotted the fills and is in the store's thread
    assert not plan_task.done()
    # The background store of slice 1 completes now and drops its fill from the flights
    # (before the plan's thread hop returns: nothing here awaits until the plan is resumed).
    del fl.fills[1]
    plan = await plan_task
    await engine.store.put_slice(meta.url, meta.validator, 1, fill.chunks)

    assert plan.needed == (0, 1, 2)
    assert plan.cached == frozenset({1})
    assert plan.status == "PARTIAL"
    # And the same question asked now, with the slice on disk, gives the same answer.
    assert (await engine.plan(meta, (Span(0, 3 * S),))).status == "PARTIAL"
    engine.store.close()


async def test_a_slice_stored_while_the_slice_map_asks_the_store_is_cached_not_lost(tmp_path: Path) -> None:
    """The dashboard's slice map asks the store (a thread hop) while slice 1's write ends and
    its fill leaves the flights: slice 1 must show as cached, not as neither cached nor in flight
    (then the map, reused for two seconds, showed one slice too few)."""
    engine = _engine(tmp_path)
    meta = ObjectMeta("/x.bin", 4 * S, '"v1"', None, None, 0.0, 1e9)
    engine.learning.metas.keep(meta)
    data = bytes(range(256)) * (S // 256)
    await engine.store.put_slice(meta.url, meta.validator, 0, [data])
    fl = engine.flights_for(meta)
    fill = SliceFill(1, S)
    fill.append(data)
    fill.finish()
    fl.fills[1] = fill
    running = SliceFill(2, S)  # still being fetched
    fl.fills[2] = running

    map_task = asyncio.get_running_loop().create_task(engine.slice_map(meta.url))
    await asyncio.sleep(0)  # the map has looked at the fills and is in the store's thread
    assert not map_task.done()
    del fl.fills[1]  # the write of slice 1 ends before the store's answer comes back
    sm = await map_task
    await engine.store.put_slice(meta.url, meta.validator, 1, fill.chunks)

    assert sm is not None
    assert sm["cached"] == [0, 1]
    assert sm["in_flight"] == [2]
    engine.store.close()
