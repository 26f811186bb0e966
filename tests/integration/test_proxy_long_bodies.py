"""Long upstream bodies, which the proxy reads straight from the socket (proxy.cache.bodies).

A run of more than ``TAKEOVER_MIN`` bytes leaves aiohttp's reads once its headers are
in: the bytes must still be exact, cached once, and every fault of the origin after
that point (a short body, a reset, a stall) must end as a cut or an error status,
never as a clean wrong answer or a cached partial slice.
"""

from __future__ import annotations

import time

import pytest

from proxy.cache.bodies import TAKEOVER_MIN
from tests.support.client import fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.servers import DEFAULT_SLICE

pytestmark = pytest.mark.integration

S = DEFAULT_SLICE
RUN = 64  # slices per run: 4 MiB, beyond TAKEOVER_MIN
SIZE = 60 * S + 77
DATA = seeded_bytes(SIZE, 47)


def test_the_runs_here_are_long_enough_to_be_read_from_the_socket() -> None:
    assert RUN * S > TAKEOVER_MIN + S and SIZE > TAKEOVER_MIN + S


async def test_long_cold_body_is_exact_fetched_once_and_served_from_the_cache(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    fault_origin.set_object("long.bin", DATA, chunk_size=256 * 1024)
    proxy = proxy_factory(fault_origin.url, max_run_slices=RUN, readahead_slices=0)
    url = proxy.url_for("long.bin")

    out = await fetch(http, url)
    assert out.status == 200 and out.complete and out.body == DATA
    fault_origin.wait_idle(10)
    assert fault_origin.count_slice_fetches("long.bin", S) == {i: 1 for i in range((SIZE + S - 1) // S)}
    gets = len(fault_origin.gets_for("long.bin"))

    out = await fetch(http, url)
    assert out.status == 200 and out.complete and out.body == DATA
    out = await fetch(http, url, headers={"Range": f"bytes={3 * S + 5}-{50 * S}"})
    assert out.status == 206 and out.body == DATA[3 * S + 5:50 * S + 1]
    assert len(fault_origin.gets_for("long.bin")) == gets, "a cached slice was fetched again"


@pytest.mark.parametrize("fault", ["short_body", "reset_after"])
@pytest.mark.parametrize("cut_at", [1000, TAKEOVER_MIN + 5, SIZE - 10])
async def test_long_body_cut_by_the_origin_is_cut_for_the_client(fault_origin: FaultOrigin, proxy_factory, http,
                                                                 fault: str, cut_at: int) -> None:
    fault_origin.set_object("cut.bin", DATA, **{fault: cut_at})
    proxy = proxy_factory(fault_origin.url, max_run_slices=RUN, readahead_slices=0)
    url = proxy.url_for("cut.bin")

    out = await fetch(http, url)
    if out.status != 502:
        assert out.status == 200 and not out.complete, "a cut origin body ended cleanly"
        assert out.body == DATA[:len(out.body)], "wrong bytes before the cut"

    fault_origin.clear_faults("cut.bin")
    fault_origin.wait_idle(10)
    for _ in range(2):  # the second from the cache: nothing partial was stored
        out = await fetch(http, url)
        assert out.status == 200 and out.complete and out.body == DATA


async def test_long_body_that_stalls_times_out_and_is_never_completed_wrongly(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    fault_origin.set_object("stall.bin", DATA, chunk_size=TAKEOVER_MIN // 2, chunk_delay=3.0)
    proxy = proxy_factory(fault_origin.url, max_run_slices=RUN, readahead_slices=0, upstream_read_timeout=0.5)
    url = proxy.url_for("stall.bin")

    t0 = time.monotonic()
    out = await fetch(http, url, timeout=20)
    if out.status not in (502, 504):
        assert out.status == 200 and not out.complete
        assert out.body == DATA[:len(out.body)]
    assert time.monotonic() - t0 < 6

    fault_origin.set_fault("stall.bin", chunk_delay=0.0)
    fault_origin.wait_idle(15)
    out = await fetch(http, url)
    assert out.status == 200 and out.complete and out.body == DATA


async def test_long_body_streams_its_first_bytes_before_the_first_slice_is_complete(
        fault_origin: FaultOrigin, proxy_factory, http) -> None:
    # Half a slice, then a pause: the client has bytes long before slice 0 is whole.
    fault_origin.set_object("slow.bin", DATA, chunk_size=S // 2, chunk_delay=1.5)
    proxy = proxy_factory(fault_origin.url, max_run_slices=RUN, readahead_slices=0)
    t0 = time.monotonic()
    async with http.get(proxy.url_for("slow.bin")) as r:
        assert r.status == 200
        first = await r.content.readany()
        waited = time.monotonic() - t0
    assert first and DATA.startswith(first)
    assert waited < 1.2, f"first bytes after {waited:.2f} s: not streamed"
