"""A 206 relayed from the origin without being stored (no-store) is checked against the Range asked.

Found by the fuzzer (hardening.fuzz, issue 13): once the proxy knew a ``no-store`` object, a
range request was passed to the origin and an origin answering other bytes (``Content-Range:
bytes 5100-5200`` to ``bytes=100-200``) was relayed as it was; a client that trusts the range it
asked for read the wrong bytes. The cached path already refuses such a piece with a 502.
"""

from __future__ import annotations

from typing import Callable

import pytest

from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.rawhttp import raw_request
from tests.support.servers import ProxyProc

pytestmark = pytest.mark.integration

SIZE = 70_000


@pytest.mark.parametrize("cache_control", ["no-store", "no-cache", "max-age=1"])
def test_an_origin_206_for_other_bytes_is_refused_not_relayed(
        fault_origin: FaultOrigin, proxy_factory: Callable[..., ProxyProc], cache_control: str) -> None:
    data = seeded_bytes(SIZE, 7)
    fault_origin.set_object("a.bin", data, cache_control=cache_control)
    proxy = proxy_factory(fault_origin.url)
    # The proxy learns the object first (its length, that it is not stored).
    first = raw_request(proxy.port, "GET", "/a.bin", {"Range": "bytes=0-10"})
    assert first.status == 206 and first.body == data[:11]
    for shift, asked in ((5000, "bytes=100-200"), (-1, "bytes=69999-69999"), (1, "bytes=65536-65536")):
        fault_origin.set_fault("a.bin", shift_content_range=shift)
        r = raw_request(proxy.port, "GET", "/a.bin", {"Range": asked})
        if r.status == 206:  # whatever is relayed is what was asked, and its bytes
            first_s, last_s = r.headers["content-range"].split(" ")[1].split("/")[0].split("-")
            a, b = int(first_s), int(last_s)
            lo, hi = (int(x) for x in asked.removeprefix("bytes=").split("-"))
            assert lo <= a <= b <= hi, (asked, r.headers["content-range"])
            assert r.body == data[a:b + 1]
        else:
            assert r.status == 502, (asked, r.status)
    fault_origin.clear_faults("a.bin")
    ok = raw_request(proxy.port, "GET", "/a.bin", {"Range": "bytes=100-200"})
    assert ok.status == 206 and ok.headers["content-range"] == f"bytes 100-200/{SIZE}" and ok.body == data[100:201]
