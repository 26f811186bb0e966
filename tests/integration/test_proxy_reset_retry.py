"""A reset before the first byte of an answer to a GET is retried once, with a single upstream.

The retry is aiohttp's own (``ClientSession`` repeats an idempotent request once when the
connection fails before the status line, RFC 9112 §9.3.1; since aiohttp 3.9), underneath the
proxy's failover between upstream bases (:mod:`proxy.core.health`): these tests pin it, so an
aiohttp that stopped doing so would be noticed.
"""

from __future__ import annotations

import pytest

from tests.support.client import fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.servers import DEFAULT_SLICE

pytestmark = pytest.mark.integration

DATA = seeded_bytes(3 * DEFAULT_SLICE + 11, 47)


async def test_one_reset_before_the_status_line_is_retried(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    fault_origin.set_object("r.bin", DATA, reset_before_status=True, fault_times=1)
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)

    out = await fetch(http, proxy.url_for("r.bin"), headers={"Range": "bytes=100-70000"})
    assert out.status == 206 and out.complete, (out.status, out.error)
    assert out.body == DATA[100:70001]
    gets = fault_origin.gets_for("r.bin")
    assert [r.fault for r in gets] == ["reset_before_status", None], [(r.fault, r.status) for r in gets]


async def test_two_resets_in_a_row_are_a_502(fault_origin: FaultOrigin, proxy_factory, http) -> None:
    fault_origin.set_object("r2.bin", DATA, reset_before_status=True, fault_times=2)
    proxy = proxy_factory(fault_origin.url, readahead_slices=0)

    out = await fetch(http, proxy.url_for("r2.bin"), headers={"Range": "bytes=0-99"})
    assert out.status == 502, (out.status, out.error)
    assert [r.fault for r in fault_origin.gets_for("r2.bin")] == ["reset_before_status"] * 2, "retried more than once"

    out = await fetch(http, proxy.url_for("r2.bin"), headers={"Range": "bytes=0-99"})
    assert out.status == 206 and out.body == DATA[:100]
