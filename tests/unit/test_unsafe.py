"""RFC 9111 §4.4: what a non-error answer to an unsafe method invalidates."""

from __future__ import annotations

import pytest

from proxy.core.unsafe import invalidated, invalidates

URL = "http://o:81/media/a.mp4?x=1"


@pytest.mark.parametrize(("method", "status", "yes"), [
    ("POST", 200, True), ("PUT", 201, True), ("DELETE", 204, True), ("PATCH", 302, True),
    ("M-SEARCH", 200, True),  # safety unknown: treated as unsafe
    ("POST", 404, False), ("DELETE", 500, False), ("GET", 200, False), ("HEAD", 200, False),
    ("OPTIONS", 204, False), ("TRACE", 200, False),
])
def test_which_answers_invalidate(method: str, status: int, yes: bool) -> None:
    assert invalidates(method, status) is yes


def test_location_and_content_location_of_the_same_origin_are_invalidated_too() -> None:
    got = invalidated(URL, [("Location", "/media/b.mp4"), ("Content-Location", "c.mp4"),
                            ("Location", "http://elsewhere/x"), ("Content-Location", "https://o:81/media/d")])
    assert got == [URL, "http://o:81/media/b.mp4", "http://o:81/media/c.mp4"]
    assert invalidated(URL, [("Location", URL)]) == [URL]
