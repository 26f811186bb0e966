"""ByteBudget: the bound on fill memory (FIFO, never stuck, cancellation-safe)."""

from __future__ import annotations

import asyncio

import pytest

from proxy.cache.budget import ByteBudget


async def test_acquire_within_the_limit_does_not_wait() -> None:
    b = ByteBudget(100)
    await b.acquire(60)
    await b.acquire(40)
    assert (b.held, b.waits, b.peak) == (100, 0, 100)
    b.release(60)
    b.release(40)
    assert b.held == 0


async def test_a_request_over_the_room_waits_until_a_release_in_fifo_order() -> None:
    b = ByteBudget(100)
    await b.acquire(80)
    order: list[str] = []

    async def take(name: str, n: int) -> None:
        await b.acquire(n)
        order.append(name)

    big = asyncio.create_task(take("big", 50))
    await asyncio.sleep(0)
    small = asyncio.create_task(take("small", 10))  # would fit now, but must not overtake "big"
    await asyncio.sleep(0)
    assert order == [] and b.waiting == 2 and b.held == 80
    b.release(80)
    await asyncio.gather(big, small)
    assert order == ["big", "small"] and b.held == 60 and b.waits == 2


async def test_a_request_larger_than_the_limit_passes_when_nothing_is_held() -> None:
    b = ByteBudget(10)
    await b.acquire(5)
    t = asyncio.create_task(b.acquire(50))
    await asyncio.sleep(0)
    assert not t.done()
    b.release(5)
    await asyncio.wait_for(t, 1)
    assert b.held == 50


async def test_a_cancelled_waiter_gives_way_and_leaks_nothing() -> None:
    b = ByteBudget(100)
    await b.acquire(100)
    head = asyncio.create_task(b.acquire(90))
    await asyncio.sleep(0)
    behind = asyncio.create_task(b.acquire(10))
    await asyncio.sleep(0)
    head.cancel()
    with pytest.raises(asyncio.CancelledError):
        await head
    b.release(100)
    await asyncio.wait_for(behind, 1)
    assert b.held == 10 and b.waiting == 0


async def test_take_never_waits_and_goes_past_the_limit_while_new_requests_wait() -> None:
    """A run already receiving its response takes room for its next slice at once
    (waiting there could deadlock on the connection pool); new runs wait."""
    b = ByteBudget(100)
    await b.acquire(100)
    b.take(50)
    assert b.held == 150 and b.peak == 150
    t = asyncio.create_task(b.acquire(10))
    await asyncio.sleep(0)
    b.release(50)  # still at the limit
    await asyncio.sleep(0)
    assert not t.done()
    b.release(100)
    await asyncio.wait_for(t, 1)
    assert b.held == 10


async def test_release_of_more_than_held_is_a_bug() -> None:
    b = ByteBudget(10)
    with pytest.raises(AssertionError):
        b.release(1)


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ByteBudget(0)
