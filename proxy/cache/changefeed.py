"""An origin's change feed, subscribed: each announced change purges the object at once.

One WebSocket to the feed URL the origin names (``change_feed``), with its token as a Bearer
credential. A change is handed to ``on_change`` (the site purges the object's cache key); the
connection is made again after any loss, with :class:`proxy.core.backoff.Backoff` between tries.
While the feed is down nothing else changes: freshness and validators work as without a feed, so
a change missed meanwhile is noticed as it would have been without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import aiohttp

from proxy.core.backoff import Backoff
from proxy.core.changes import FeedHello, OriginChange, parse_message

__all__ = ["ChangeFeed", "FeedState", "HEARTBEAT"]

log = logging.getLogger("rangeproxy.changefeed")
HEARTBEAT = 20.0  # seconds between pings; no pong within half of it and the connection is lost
CONNECT_TIMEOUT = 10.0  # seconds for the TCP connect and the handshake
STABLE = 10.0  # seconds a connection must last for the backoff to start over
REFUSED_FLOOR = 30.0  # seconds at least between tries after a 401/403: a wrong token is not fixed by retrying


@dataclass(slots=True)
class FeedState:
    """What ``/metrics`` and ``/stats`` show of one origin's feed."""

    url: str
    connected: bool = False
    since: float = field(default_factory=time.time)  # when ``connected`` last changed
    connects: int = 0  # handshakes that succeeded
    failures: int = 0  # tries that did not connect, and connections lost
    events: int = 0  # change announcements received
    purges: int = 0  # objects purged because of them
    malformed: int = 0  # messages that were not a change this proxy can read
    last_error: str = ""
    last_event: float = 0.0  # unix time of the last announcement

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


OnChange = Callable[[OriginChange], Awaitable[int]]  # -> objects purged


class ChangeFeed:
    """The subscription of one origin: a task that connects, reads, purges and reconnects."""

    def __init__(self, name: str, token: str, session: aiohttp.ClientSession, on_change: OnChange,
                 state: FeedState, backoff: Backoff | None = None) -> None:
        self.name = name
        self.token = token
        self.session = session
        self.on_change = on_change
        self.state = state
        self.backoff = backoff if backoff is not None else Backoff()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"change-feed-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._set_connected(False)

    def _set_connected(self, connected: bool) -> None:
        if self.state.connected != connected:
            self.state.connected = connected
            self.state.since = time.time()

    async def _run(self) -> None:
        while True:
            began = time.monotonic()
            floor = 0.0
            try:
                await self._session_once()
                reason = "closed by the origin"
            except aiohttp.WSServerHandshakeError as exc:
                reason = f"refused: {exc.status} {exc.message}"
                if exc.status in (401, 403):
                    floor = REFUSED_FLOOR
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            was_connected = self.state.connected
            self._set_connected(False)
            self.state.failures += 1
            if reason != self.state.last_error or was_connected:
                log.warning("origin %s: change feed %s %s; connecting again with backoff",
                            self.name, self.state.url, reason)
            self.state.last_error = reason
            if was_connected and time.monotonic() - began >= STABLE:
                self.backoff.succeeded()
            await asyncio.sleep(max(floor, self.backoff.next_delay(random.random)))

    async def _session_once(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0)
        async with asyncio.timeout(CONNECT_TIMEOUT):
            ws = await self.session.ws_connect(self.state.url, headers=headers, heartbeat=HEARTBEAT, timeout=timeout,
                                               autoping=True, max_msg_size=1 << 20)
        async with ws:
            self.state.connects += 1
            self._set_connected(True)
            log.info("origin %s: change feed %s connected", self.name, self.state.url)
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await self._message(msg.data)
                elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                    break
            if ws.close_code not in (None, 1000):
                raise aiohttp.ClientConnectionError(f"closed with code {ws.close_code}")

    async def _message(self, text: str) -> None:
        try:
            got = parse_message(text)
        except ValueError as exc:
            self.state.malformed += 1
            log.warning("origin %s: change feed message ignored: %s", self.name, exc)
            return
        if got is None or isinstance(got, FeedHello):  # a type this proxy does not know, or the greeting
            return
        self.state.events += 1
        self.state.last_event = time.time()
        try:
            self.state.purges += await self.on_change(got)
        except Exception:  # noqa: BLE001 - one purge that fails must not end the subscription
            log.exception("origin %s: purge for %s %s failed", self.name, got.kind, got.path)
