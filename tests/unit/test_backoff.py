"""proxy.core.backoff: reconnect delays double up to the cap, half fixed and half random."""

from __future__ import annotations

from proxy.core.backoff import Backoff


def test_delays_double_up_to_the_cap_within_half_and_all_of_it() -> None:
    b = Backoff(first=0.5, cap=30.0)
    lows = [b.next_delay(lambda: 0.0) for _ in range(10)]
    assert lows == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0, 15.0]
    b = Backoff(first=0.5, cap=30.0)
    highs = [b.next_delay(lambda: 0.999999) for _ in range(8)]
    assert [round(h, 3) for h in highs] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_a_success_starts_over() -> None:
    b = Backoff(first=1.0, cap=8.0)
    for _ in range(5):
        b.next_delay(lambda: 0.0)
    b.succeeded()
    assert b.next_delay(lambda: 0.0) == 0.5


def test_many_failures_stay_at_the_cap() -> None:
    b = Backoff(first=0.5, cap=30.0, failures=10_000)
    assert b.next_delay(lambda: 0.0) == 15.0
