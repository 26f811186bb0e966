"""Back-pressure for sends on a QUIC stream: aioquic buffers whatever it is given and has no
await-on-send, so a sender waits here until its stream's unacknowledged bytes fall low enough.

The wait is woken from the protocol's ``transmit()`` (called after every datagram received and
every timer), which is when ACKs have been processed and the stream's send buffer shrinks.
"""

from __future__ import annotations

import asyncio

from aioquic.quic.connection import QuicConnection

__all__ = ["Pacer", "HIGH_WATER", "LOW_WATER"]

HIGH_WATER = 1024 * 1024  # a sender waits once this much of its stream is written but not acked
LOW_WATER = 256 * 1024  # and goes on once the backlog is down to this


class Pacer:
    """Waiters per stream, released when the stream's backlog is <= LOW_WATER, or it is gone."""

    def __init__(self, quic: QuicConnection) -> None:
        self._quic = quic
        self._waiters: dict[int, list[asyncio.Future[None]]] = {}  # several tasks may send on one stream
        self.closed = False

    def backlog(self, stream_id: int) -> int | None:
        """Bytes written to the stream and not yet acknowledged; None if it can no longer send."""
        if self.closed:
            return None
        stream = self._quic._streams.get(stream_id)
        if stream is None:
            return None  # finished and discarded, or never created
        sender = stream.sender
        if sender.is_finished or sender._reset_error_code is not None:
            return None
        return sender._buffer_stop - sender._buffer_start

    async def wait(self, stream_id: int) -> None:
        """Return once the stream may take more data (or cannot take any: the caller checks)."""
        backlog = self.backlog(stream_id)
        if backlog is None or backlog <= HIGH_WATER:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._waiters.setdefault(stream_id, [])
        waiting.append(fut)
        try:
            await fut
        finally:
            waiting.remove(fut)
            if not waiting and self._waiters.get(stream_id) is waiting:
                del self._waiters[stream_id]

    def poke(self) -> None:
        """Release the waiters whose streams drained (called after each transmit)."""
        for stream_id, waiting in list(self._waiters.items()):
            backlog = self.backlog(stream_id)
            if backlog is None or backlog <= LOW_WATER:
                for fut in waiting:
                    if not fut.done():
                        fut.set_result(None)

    def close(self) -> None:
        """The connection is gone: release everyone."""
        self.closed = True
        self.poke()
