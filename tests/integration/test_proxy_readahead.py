"""Read-ahead: a reader going through consecutive slices finds the next ones already fetched."""

from __future__ import annotations

import time

from tests.support.client import fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.servers import DEFAULT_SLICE

S = DEFAULT_SLICE


async def test_sequential_reader_never_waits_on_the_origin_after_its_first_slices(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = seeded_bytes(12 * S, 91)
    fault_origin.set_object("seq.bin", data)
    fault_origin.set_fault("seq.bin", delay=0.4)  # every origin answer takes 0.4 s to start
    proxy = proxy_factory(fault_origin.url, readahead_slices=4, max_run_slices=1)
    url = proxy.url_for("seq.bin")

    # A player asking slice after slice: the first two pay the origin's latency...
    for i in range(2):
        out = await fetch(http, url, headers={"Range": f"bytes={i * S}-{(i + 1) * S - 1}"})
        assert out.status == 206 and out.body == data[i * S:(i + 1) * S]
    # ...then slices 2..5 were prefetched while slice 1 was read.
    assert fault_origin.wait_until(
        lambda: set(range(2, 6)) <= set(fault_origin.count_slice_fetches("seq.bin", S)), timeout=5)
    assert fault_origin.wait_idle(10)
    before = len(fault_origin.gets_for("seq.bin"))
    for i in range(2, 6):
        t0 = time.monotonic()
        out = await fetch(http, url, headers={"Range": f"bytes={i * S}-{(i + 1) * S - 1}"})
        took = time.monotonic() - t0
        assert out.status == 206 and out.body == data[i * S:(i + 1) * S]
        assert out.header("X-Cache") == "HIT", (i, out.header("X-Cache"))
        assert took < 0.4, f"slice {i} waited {took:.3f}s: it was not prefetched"
        assert fault_origin.wait_idle(10)
    # The prefetch of later slices happened in the background (each reading extends it);
    # no slice was fetched twice.
    counts = fault_origin.count_slice_fetches("seq.bin", S)
    assert all(n == 1 for n in counts.values()), counts
    assert len(fault_origin.gets_for("seq.bin")) >= before


async def test_random_reader_gets_no_read_ahead(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    data = seeded_bytes(16 * S, 92)
    fault_origin.set_object("rnd.bin", data)
    proxy = proxy_factory(fault_origin.url, readahead_slices=4)
    url = proxy.url_for("rnd.bin")
    for i in (7, 2, 12, 4):
        out = await fetch(http, url, headers={"Range": f"bytes={i * S + 5}-{i * S + 99}"})
        assert out.body == data[i * S + 5:i * S + 100]
    assert fault_origin.wait_idle(10)
    assert set(fault_origin.count_slice_fetches("rnd.bin", S)) == {7, 2, 12, 4}
