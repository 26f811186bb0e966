"""SliceFill: readers see bytes as they arrive, and stop where a released fill left memory."""

from __future__ import annotations

import asyncio

import pytest

from proxy.cache.flights import FillAbandoned, SliceFill


async def collect(fill: SliceFill, lo: int, hi: int) -> bytes:
    return b"".join([c async for c in fill.read(lo, hi)])


async def test_a_reader_gets_bytes_as_they_are_appended() -> None:
    fill = SliceFill(0, 10)
    task = asyncio.create_task(collect(fill, 2, 9))
    await asyncio.sleep(0)
    fill.append(b"0123")
    await asyncio.sleep(0)
    fill.append(b"456789")
    fill.finish()
    assert await task == b"2345678"


async def test_a_released_fill_ends_its_readers_where_they_are() -> None:
    """Once stored, a fill drops its bytes; a reader part way stops at its position
    (the caller then reads the rest from the slice file)."""
    fill = SliceFill(0, 8)
    fill.append(b"abcd")
    fill.append(b"efgh")
    fill.finish()
    reader = fill.read(0, 8)
    first = await reader.__anext__()
    assert first == b"abcd"
    fill.release()
    assert fill.chunks == [] and fill.stored
    with pytest.raises(StopAsyncIteration):
        await reader.__anext__()
    assert await collect(fill, 0, 8) == b""  # a reader arriving now gets nothing from memory


async def test_a_fill_ended_short_fails_its_readers() -> None:
    fill = SliceFill(0, 8)
    fill.append(b"abc")
    fill.fail(FillAbandoned("gone"))
    with pytest.raises(FillAbandoned):
        await collect(fill, 0, 8)
