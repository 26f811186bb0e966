"""Small random reads fetch blocks, not whole slices: bounded over-fetch from the origin."""

from __future__ import annotations

import asyncio
import random

from tests.support.client import fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin

MiB = 2**20
KiB = 2**10


async def test_random_small_cold_ranges_over_fetch_at_most_2x(fault_origin: FaultOrigin, proxy_factory,
                                                              http) -> None:
    size = 64 * MiB
    data = seeded_bytes(size, 101)
    fault_origin.set_object("rnd.bin", data)
    proxy = proxy_factory(fault_origin.url, slice_size=MiB, block_size=16 * KiB)
    url = proxy.url_for("rnd.bin")
    rnd = random.Random(7)
    served = 0
    for _ in range(32):
        a = rnd.randrange(0, size - 64 * KiB)
        out = await fetch(http, url, headers={"Range": f"bytes={a}-{a + 64 * KiB - 1}"})
        assert out.status == 206 and out.body == data[a:a + 64 * KiB]
        served += len(out.body)
    assert fault_origin.wait_idle(10)
    fetched = sum(r.body_len for r in fault_origin.gets_for("rnd.bin")) if all(
        r.body_len for r in fault_origin.gets_for("rnd.bin")) else None
    ranges = [r.range for r in fault_origin.gets_for("rnd.bin")]
    total = 0
    for rg in ranges:
        a, b = (int(x) for x in rg.split("=")[1].split("-"))
        total += b - a + 1
    assert fetched in (None, total)
    assert total / served <= 2.0, f"over-fetch {total / served:.2f}x: {ranges}"
    # Every upstream request is block-aligned.
    for rg in ranges:
        a, b = (int(x) for x in rg.split("=")[1].split("-"))
        assert a % (16 * KiB) == 0 and ((b + 1) % (16 * KiB) == 0 or b + 1 == size), rg

    # The same ranges again: all from the cache.
    before = len(fault_origin.gets_for("rnd.bin"))
    rnd = random.Random(7)
    for _ in range(32):
        a = rnd.randrange(0, size - 64 * KiB)
        out = await fetch(http, url, headers={"Range": f"bytes={a}-{a + 64 * KiB - 1}"})
        assert out.body == data[a:a + 64 * KiB] and out.header("X-Cache") == "HIT"
    assert len(fault_origin.gets_for("rnd.bin")) == before


async def test_blocks_and_slices_mix_without_wrong_bytes(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    size = 4 * MiB + 333
    data = seeded_bytes(size, 102)
    fault_origin.set_object("mix.bin", data)
    proxy = proxy_factory(fault_origin.url, slice_size=MiB, block_size=16 * KiB, readahead_slices=0)
    url = proxy.url_for("mix.bin")
    # blocks first, straddling a slice boundary, then whole slices over them, concurrently
    reqs = [(MiB - 5000, MiB + 5000), (100, 20_000), (3 * MiB + 7, 3 * MiB + 70_000), (0, size - 1),
            (MiB - 1, 2 * MiB + 10), (size - 1000, size - 1)]
    outs = await asyncio.gather(*(fetch(http, url, headers={"Range": f"bytes={a}-{b}"}) for a, b in reqs))
    for out, (a, b) in zip(outs, reqs):
        assert out.status == 206 and out.complete and out.body == data[a:b + 1], (a, b)
    for a, b in reqs:
        out = await fetch(http, url, headers={"Range": f"bytes={a}-{b}"})
        assert out.body == data[a:b + 1]
    out = await fetch(http, url)
    assert out.status == 200 and out.body == data
