"""appserver.wt_ranges.parse_request: the one-line request of a /_ranges stream (the rest of the
endpoint runs against the real h3 server in tests/integration/test_appserver_h3.py)."""

from __future__ import annotations

import pytest

from appserver.wt_ranges import parse_request


def test_a_request_line() -> None:
    assert parse_request(b"GET /a%20b/c.bin bytes=0-9") == ("/a b/c.bin", b"/a%20b/c.bin", "bytes=0-9")
    assert parse_request(b"GET /x bytes=-5") == ("/x", b"/x", "bytes=-5")


@pytest.mark.parametrize("line", [
    b"PUT /x bytes=0-1", b"GET /x", b"GET /x bytes=0-1 extra", b"GET  /x bytes=0-1", b"GET /x range=0-1",
    b"GET /x?a=1 bytes=0-1", b"GET /x#f bytes=0-1", b"GET /\xff bytes=0-1", b"GET /%ff bytes=0-1",
])
def test_refused_lines_say_why(line: bytes) -> None:
    reason = parse_request(line)
    assert isinstance(reason, str) and reason
