"""Passive upstream health and the failover order (proxy.core.health), with explicit ``now`` values."""

from __future__ import annotations

import math

import pytest

from proxy.core.health import HealthPolicy, UpstreamHealth, retryable

A, B, C = "http://a:8080", "http://b:8080", "http://c:8080"


def test_all_healthy_keeps_the_configured_order() -> None:
    h = UpstreamHealth([A, B, C])
    assert h.order(0.0) == [A, B, C]
    assert h.tries == 3 and h.attempts(0.0) == [A, B, C]


def test_a_failed_base_is_tried_last_until_its_cooldown_ends() -> None:
    h = UpstreamHealth([A, B, C], HealthPolicy(cooldown=10.0))
    h.failed(A, now=100.0)
    assert h.order(100.0) == [B, C, A]
    assert h.order(109.999) == [B, C, A]
    assert h.order(110.0) == [A, B, C]  # cooled down: back in its configured place


def test_cooling_bases_come_soonest_cooled_first() -> None:
    h = UpstreamHealth([A, B, C], HealthPolicy(cooldown=10.0))
    h.failed(B, now=100.0)
    h.failed(A, now=105.0)
    assert h.order(106.0) == [C, B, A]  # B cools at 110, A at 115
    h.failed(C, now=106.0)
    assert h.order(106.0) == [B, A, C]  # every base cooling: a request still has somewhere to go
    assert h.order(111.0) == [B, A, C]  # B healthy again, then A (115) and C (116)


def test_equal_cooldowns_keep_the_configured_order() -> None:
    h = UpstreamHealth([A, B, C])
    h.failed(C, now=5.0)
    h.failed(A, now=5.0)
    assert h.order(5.0) == [B, A, C]


def test_a_success_makes_a_base_healthy_at_once() -> None:
    h = UpstreamHealth([A, B])
    h.failed(A, now=0.0)
    h.succeeded(A)
    assert h.order(0.0) == [A, B]
    assert h.snapshot(0.0)[0] == {"base": A, "healthy": True, "failures": 0, "cool_until": None}


def test_failures_threshold_counts_consecutive_failures() -> None:
    h = UpstreamHealth([A, B], HealthPolicy(cooldown=30.0, failures=3))
    h.failed(A, now=1.0)
    h.failed(A, now=2.0)
    assert h.order(2.0) == [A, B]
    h.succeeded(A)  # the run is broken: counting starts again
    h.failed(A, now=3.0)
    h.failed(A, now=4.0)
    assert h.order(4.0) == [A, B]
    h.failed(A, now=5.0)
    assert h.order(5.0) == [B, A]
    assert h.snapshot(5.0)[0] == {"base": A, "healthy": False, "failures": 3, "cool_until": 35.0}


def test_after_the_cooldown_one_more_failure_cools_the_base_again() -> None:
    h = UpstreamHealth([A, B], HealthPolicy(cooldown=10.0, failures=2))
    h.failed(A, now=0.0)
    h.failed(A, now=0.0)
    assert h.order(10.0) == [A, B]  # on probation
    h.failed(A, now=10.0)
    assert h.order(10.0) == [B, A] and h.snapshot(10.0)[0]["cool_until"] == 20.0


def test_a_failure_while_cooling_restarts_the_cooldown() -> None:
    h = UpstreamHealth([A, B, C], HealthPolicy(cooldown=10.0))
    h.failed(A, now=0.0)
    h.failed(B, now=4.0)
    h.failed(A, now=8.0)  # a request that had to try A (every other base cooling, say)
    assert h.order(12.0) == [C, B, A]  # B cools at 14, A now at 18
    assert h.order(14.0) == [B, C, A]  # B healthy at 14, A not before 18
    assert h.order(18.0) == [A, B, C]


def test_snapshot_lists_every_base_in_configured_order() -> None:
    h = UpstreamHealth([A, B], HealthPolicy(cooldown=2.5))
    h.failed(B, now=1.0)
    assert h.snapshot(1.0) == [
        {"base": A, "healthy": True, "failures": 0, "cool_until": None},
        {"base": B, "healthy": False, "failures": 1, "cool_until": 3.5},
    ]
    assert h.snapshot(3.5)[1] == {"base": B, "healthy": True, "failures": 1, "cool_until": None}


@pytest.mark.parametrize(("max_tries", "tries"), [(0, 3), (1, 1), (2, 2), (3, 3), (9, 3)])
def test_tries_per_request_is_min_of_bases_and_max_tries(max_tries: int, tries: int) -> None:
    h = UpstreamHealth([A, B, C], HealthPolicy(max_tries=max_tries))
    assert h.tries == tries
    h.failed(A, now=0.0)
    assert h.attempts(0.0) == [B, C, A][:tries]


def test_a_single_base_is_always_tried() -> None:
    h = UpstreamHealth([A])
    h.failed(A, now=0.0)
    assert h.order(0.0) == [A] and h.attempts(0.0) == [A]


@pytest.mark.parametrize("bases", [[], [A, A], A])
def test_bad_base_lists_are_refused(bases: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        UpstreamHealth(bases)  # type: ignore[arg-type]


def test_an_unknown_base_is_refused() -> None:
    h = UpstreamHealth([A])
    with pytest.raises(ValueError, match="not one of"):
        h.failed(B, now=0.0)
    with pytest.raises(ValueError, match="not one of"):
        h.succeeded(B)


@pytest.mark.parametrize("policy", [dict(cooldown=-1.0), dict(cooldown=math.nan), dict(failures=0),
                                    dict(max_tries=-1)])
def test_bad_policies_are_refused(policy: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        HealthPolicy(**policy)  # type: ignore[arg-type]


@pytest.mark.parametrize(("status", "method", "expected"), [
    (None, "GET", True),  # connection refused, reset or timed out before any answer
    (500, "GET", True),
    (502, "GET", True),
    (503, "HEAD", True),
    (504, "OPTIONS", True),
    (599, "GET", True),
    (None, "get", False),  # RFC 9110 §9.1: methods are case-sensitive; an unknown one is not retried
    (503, "PUT", True),  # idempotent (RFC 9110 §9.2.2)
    (None, "DELETE", True),
    (None, "POST", False),  # never repeated: it may already have taken effect
    (503, "POST", False),
    (502, "PATCH", False),
    (200, "GET", False),
    (206, "GET", False),
    (304, "GET", False),
    (404, "GET", False),
    (416, "GET", False),
    (429, "GET", False),
    (499, "GET", False),
    (600, "GET", False),
])
def test_retryable(status: int | None, method: str, expected: bool) -> None:
    assert retryable(status, method) is expected
