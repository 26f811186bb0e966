"""proxy.core.conditions: RFC 9110 §13.2.2 preconditions and RFC 9111 §5.2.1 request directives."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from proxy.core.conditions import RequestDirectives, preconditions, request_directives

ETAG = '"v1"'
LM = "Tue, 02 Jan 2024 00:00:00 GMT"
EARLIER = "Mon, 01 Jan 2024 00:00:00 GMT"
LATER = "Wed, 03 Jan 2024 00:00:00 GMT"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, "proceed"),
        ({"If-Match": ETAG}, "proceed"),
        ({"If-Match": '"other", "v1"'}, "proceed"),
        ({"If-Match": "*"}, "proceed"),
        ({"If-Match": '"other"'}, "failed"),
        ({"If-Match": 'W/"v1"'}, "failed"),  # §13.1.1: strong comparison
        ({"If-Unmodified-Since": LM}, "proceed"),
        ({"If-Unmodified-Since": LATER}, "proceed"),
        ({"If-Unmodified-Since": EARLIER}, "failed"),  # modified since
        ({"If-Unmodified-Since": "not a date"}, "proceed"),  # §13.1.4: an invalid date is ignored
        ({"If-Match": ETAG, "If-Unmodified-Since": EARLIER}, "proceed"),  # If-Match wins (§13.2.2 step 2)
        ({"If-None-Match": ETAG}, "not-modified"),
        ({"If-None-Match": 'W/"v1"'}, "not-modified"),  # §13.1.2: weak comparison
        ({"If-None-Match": '"other"'}, "proceed"),
        ({"If-None-Match": '"other"', "If-Modified-Since": LATER}, "proceed"),  # INM wins over IMS
        ({"If-Modified-Since": LM}, "not-modified"),
        ({"If-Modified-Since": EARLIER}, "proceed"),
        ({"If-Match": '"other"', "If-None-Match": ETAG}, "failed"),  # 412 before 304
    ],
)
def test_preconditions_in_rfc9110_order(headers: dict[str, str], expected: str) -> None:
    assert preconditions(headers, ETAG, LM) == expected


def test_a_weak_current_etag_never_satisfies_if_match() -> None:
    assert preconditions({"If-Match": 'W/"v1"'}, 'W/"v1"', None) == "failed"
    assert preconditions({"If-Match": "*"}, 'W/"v1"', None) == "proceed"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ([], RequestDirectives()),
        ([("Cache-Control", "no-cache")], RequestDirectives(revalidate=True)),
        ([("Cache-Control", "max-age=0")], RequestDirectives(revalidate=True)),
        ([("Cache-Control", "max-age=10")], RequestDirectives(max_age=10.0)),
        ([("Pragma", "no-cache")], RequestDirectives(revalidate=True)),
        ([("Pragma", "no-cache"), ("Cache-Control", "max-age=5")], RequestDirectives(max_age=5.0)),  # §5.4: CC wins
        ([("Cache-Control", "only-if-cached")], RequestDirectives(only_if_cached=True)),
        ([("Cache-Control", "max-age=5"), ("Cache-Control", "no-cache")],
         RequestDirectives(revalidate=True, max_age=5.0)),
        ([("Cache-Control", "max-stale")], RequestDirectives(max_stale=float("inf"))),
        ([("Cache-Control", "max-stale=30")], RequestDirectives(max_stale=30.0)),
        ([("Cache-Control", "max-stale=soon")], RequestDirectives()),  # an invalid value asks nothing
        ([("Cache-Control", "min-fresh=20")], RequestDirectives(min_fresh=20.0)),
        ([("Cache-Control", "min-fresh=-1")], RequestDirectives()),
    ],
)
def test_request_directives(fields: list[tuple[str, str]], expected: RequestDirectives) -> None:
    assert request_directives(CIMultiDict(fields)) == expected
