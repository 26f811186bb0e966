"""Which answers other than 200/206 are stored, and for how long (RFC 9111 §3, §4.2.2, §5.2.2.3)."""

from __future__ import annotations

import pytest

from proxy.core.representation import Sharing
from proxy.core.statuses import StatusAnswer, status_lifetime

NOW = 1_700_000_000.0
LM = "Mon, 01 Jan 2024 00:00:00 GMT"


@pytest.mark.parametrize(("status", "headers", "ttl"), [
    (404, {"Cache-Control": "max-age=60"}, 60.0),
    (301, {"Cache-Control": "max-age=60"}, 60.0),
    (503, {"Cache-Control": "s-maxage=5, max-age=60"}, 5.0),
    (599, {"Cache-Control": "max-age=60"}, 60.0),
    (404, {"Last-Modified": LM}, 300.0),  # heuristically cacheable, with a validator
    (201, {"Last-Modified": LM}, None),  # not heuristically cacheable
    (404, {}, None),  # no validator: no heuristic
    (404, {"Cache-Control": "max-age=60, no-store"}, None),
    (404, {"Cache-Control": "max-age=60, private"}, None),
    (404, {"Cache-Control": "max-age=0"}, None),
    (404, {"Cache-Control": "max-age=60", "Vary": "Origin"}, None),
    (404, {"Cache-Control": "max-age=60", "Set-Cookie": "a=1"}, None),
    (599, {"Cache-Control": "max-age=60, must-understand"}, None),
    (404, {"Cache-Control": "max-age=60, must-understand"}, 60.0),
    (304, {"Cache-Control": "max-age=60"}, None),
    (206, {"Cache-Control": "max-age=60"}, None),
])
def test_status_lifetime(status: int, headers: dict[str, str], ttl: float | None) -> None:
    assert status_lifetime(status, headers, NOW, 300.0) == ttl


def test_an_answer_to_credentials_is_stored_only_when_shareable() -> None:
    auth = Sharing(authorized=True)
    assert status_lifetime(404, {"Cache-Control": "max-age=60"}, NOW, 300.0, auth) is None
    assert status_lifetime(404, {"Cache-Control": "public, max-age=60"}, NOW, 300.0, auth) == 60.0


def test_a_stored_answer_is_fresh_for_its_lifetime_and_ages() -> None:
    a = StatusAnswer(404, (("Age", "10"),), b"gone", NOW, 60.0)
    assert a.is_fresh(NOW + 59) and not a.is_fresh(NOW + 60) and a.age(NOW + 5) == 15


@pytest.mark.parametrize(("status", "headers", "ttl"), [
    (404, {}, 30.0),  # no freshness, no validator: the operator's negative_ttl
    (410, {"Last-Modified": LM}, 30.0),  # instead of the heuristic of a 200 (default_ttl)
    (404, {"Age": "10"}, 20.0),  # an upstream cache's age counts
    (404, {"Age": "40"}, None),
    (404, {"Cache-Control": "max-age=5"}, 5.0),  # the origin's own freshness wins
    (404, {"Cache-Control": "no-cache"}, None),
    (404, {"Cache-Control": "no-store"}, None),
    (301, {"Last-Modified": LM}, 300.0),  # not a negative answer: the heuristic
    (500, {}, None),  # not heuristically cacheable at all
])
def test_negative_ttl_is_the_lifetime_of_a_not_found_without_freshness(status: int, headers: dict[str, str],
                                                                     ttl: float | None) -> None:
    assert status_lifetime(status, headers, NOW, 300.0, negative_ttl=30.0) == ttl
    assert status_lifetime(404, {}, NOW, 300.0, negative_ttl=0.0) is None  # 0: not stored
