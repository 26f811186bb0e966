"""proxy.core.node: /healthz's states (a drain wins over a degraded cache) and the drain's timing."""

from __future__ import annotations

import math

import pytest

from proxy.core.node import Drain, node_health


@pytest.mark.parametrize("started, writable, draining, want", [
    (False, True, False, ("starting", 503)),
    (False, True, True, ("starting", 503)),
    (True, True, False, ("ok", 200)),
    (True, False, False, ("degraded", 200)),
    (True, True, True, ("draining", 503)),
    (True, False, True, ("draining", 503)),  # out of the balancer whatever the cache
])
def test_health_states(started: bool, writable: bool, draining: bool, want: tuple[str, int]) -> None:
    assert node_health(started, writable, draining) == want


def test_a_drain_begins_once_and_counts_down() -> None:
    d = Drain(2.0)
    assert not d.draining and d.remaining(100.0) == 0.0
    assert d.begin(100.0) is True  # the caller times it
    assert d.draining and d.since == 100.0
    assert d.remaining(100.5) == 1.5 and d.remaining(103.0) == 0.0
    assert d.begin(101.0) is False  # a second SIGTERM: stop now
    assert d.since == 100.0


def test_no_drain_period_stops_at_once() -> None:
    d = Drain(0.0)
    assert d.begin(5.0) is False
    assert not d.draining


@pytest.mark.parametrize("bad", [-1.0, math.nan])
def test_a_drain_period_is_a_duration(bad: float) -> None:
    with pytest.raises(ValueError, match="drain period"):
        Drain(bad)
