"""The media directory's changes as change-feed events (issue 14): one watcher, many subscribers.

The pure part turns a watchfiles batch (a set of ``(Change, path)``) into events, by the app's
own serving rules (:mod:`appserver.files`), so only what a GET would return is announced:

- ``path``: the URL path the app serves the file at, ``urllib.parse.quote(rel, safe="/")``;
  names the app refuses (backslash, NUL, not UTF-8) are not announced.
- one event per path and batch, from the path's state *now* (a batch is an unordered set):
  a regular file inside the root is ``created`` (an ``added`` in the batch, which is also what a
  rename over it gives) or ``changed``, with the ETag and size a GET would now send; a directory
  is skipped; anything else (gone, a symlink out of the root, a FIFO) is ``deleted``, unless the
  path is reached through a symlinked directory leading out of the root.
- ``time``: when the server noticed the change (unix time).

:class:`ChangeHub` runs ``watchfiles.awatch`` (inotify on Linux) while there is at least one
subscriber: started by the first, stopped through awatch's ``stop_event`` when the last leaves.
Each subscriber has a bounded queue; one that overflows is closed with 1013 (try again later)
rather than buffered without end or silently missing events.

Known gaps (the proxy's normal freshness covers them): files created in a new directory before
inotify watches it, and the contents of a directory moved out of the root, are not announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
import time
from collections import deque
from typing import Any, Iterable
from urllib.parse import quote

from watchfiles import Change, awatch

from .files import inside_root, make_etag, url_segments

__all__ = [
    "CLOSE_GOING_AWAY", "CLOSE_INTERNAL_ERROR", "CLOSE_TRY_AGAIN_LATER", "ChangeHub", "Subscription",
    "event", "events_for", "served_stat", "url_path",
]

log = logging.getLogger("appserver.changes")
# watchfiles logs every batch at INFO ("3 changes detected"): a line per file written would drown
# the server's own log, so only its warnings and errors are kept.
logging.getLogger("watchfiles").setLevel(logging.WARNING)

# Latency: watchfiles' watch thread wakes every STEP_MS and hands over a batch once a step passes
# with no new change, or DEBOUNCE_MS after the batch's first change under constant churn. So a
# lone change goes out 20-40 ms after it happens, and never later than ~0.2 s plus the stats,
# well under the 1 s the proxy is promised (watchfiles' defaults, 50/1600 ms, would allow 1.6 s).
STEP_MS = 20
DEBOUNCE_MS = 200
QUEUE_SIZE = 1000  # events a subscriber may fall behind by before it is closed with 1013
CLOSE_GOING_AWAY = 1001  # RFC 6455 7.4.1: the server is shutting down
CLOSE_INTERNAL_ERROR = 1011  # the watcher failed
CLOSE_TRY_AGAIN_LATER = 1013  # RFC 6455 / IANA registry: the subscriber fell too far behind


# ------------------------------------------------------------------ the pure part


def url_path(root: str, path: str) -> str | None:
    """The URL path the app serves ``path`` (a path under ``root``) at, or None if no URL reaches it."""
    rel = os.path.relpath(path, root)
    if rel == "." or rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return None
    rel = rel.replace(os.sep, "/")
    if url_segments("/" + rel) is None:
        return None
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:  # not UTF-8 on disk: the app refuses such a request target
        return None
    return "/" + quote(rel, safe="/")


def served_stat(root: str, path: str) -> os.stat_result | None:
    """The stat of what a GET of ``path`` would send: a regular file resolving inside ``root``, else None."""
    real = os.path.realpath(path)
    if not inside_root(root, real):
        return None
    try:
        st = os.stat(real)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def event(kind: str, path: str, st: os.stat_result | None, now: float) -> dict[str, Any]:
    """One change-feed message: ``etag``/``size`` from ``st``, null for a deletion."""
    return {
        "type": kind,
        "path": path,
        "etag": None if st is None else make_etag(st),
        "size": None if st is None else st.st_size,
        "time": now,
    }


def events_for(root: str, batch: Iterable[tuple[Change, str]], now: float) -> list[dict[str, Any]]:
    """The events for one watcher batch: one per URL path (its state now), sorted by path."""
    kinds: dict[str, set[Change]] = {}
    for change, path in batch:
        kinds.setdefault(path, set()).add(change)
    out: list[dict[str, Any]] = []
    for path in sorted(kinds):
        url = url_path(root, path)
        if url is None:
            continue
        st = served_stat(root, path)
        if st is not None:
            out.append(event("created" if Change.added in kinds[path] else "changed", url, st, now))
        elif os.path.isdir(path):
            continue  # the app serves no directory; its files get their own events
        else:
            parent = os.path.realpath(os.path.dirname(path))
            if parent == root or inside_root(root, parent):  # not reached through a symlink out of the root
                out.append(event("deleted", url, None, now))
    return out


# ------------------------------------------------------------------ subscribers


class Subscription:
    """One subscriber's bounded queue of event texts, until it is closed with a WebSocket code."""

    def __init__(self, limit: int) -> None:
        self._items: deque[str] = deque()
        self._limit = limit
        self._wake = asyncio.Event()
        self.ended = asyncio.Event()  # set by close(): the handler stops sending and closes with close_code
        self.close_code: int | None = None

    def offer(self, text: str) -> bool:
        """Queue one event; False (and closed with 1013) if the subscriber is too far behind."""
        if self.close_code is not None:
            return False
        if len(self._items) >= self._limit:
            self.close(CLOSE_TRY_AGAIN_LATER)
            return False
        self._items.append(text)
        self._wake.set()
        return True

    def close(self, code: int) -> None:
        if self.close_code is None:
            self.close_code = code
            self._items.clear()
            self._wake.set()
            self.ended.set()

    async def next(self) -> str | None:
        """The next event text, or None once closed."""
        while not self._items:
            if self.close_code is not None:
                return None
            self._wake.clear()
            await self._wake.wait()
        return self._items.popleft()


class ChangeHub:
    """Watches one media root while anyone subscribes, and fans the events out to the subscribers."""

    def __init__(self, root: str, *, queue_size: int = QUEUE_SIZE, step_ms: int = STEP_MS,
                 debounce_ms: int = DEBOUNCE_MS) -> None:
        self.root = root
        self.queue_size = queue_size
        self.step_ms = step_ms
        self.debounce_ms = debounce_ms
        self._subs: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._lock = asyncio.Lock()
        self.starts = 0  # watchers started and stopped, for tests and logs
        self.stops = 0

    @property
    def watching(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    async def subscribe(self) -> Subscription:
        """A new subscription; once this returns, every later change of the root reaches it."""
        async with self._lock:
            if not self.watching or (self._stop is not None and self._stop.is_set()):
                await self._start()
            sub = Subscription(self.queue_size)
            self._subs.add(sub)
            return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget ``sub`` (again is fine); the last one out stops the watcher."""
        self._subs.discard(sub)
        if not self._subs and self._stop is not None:
            self._stop.set()  # awatch returns within one step

    async def close(self) -> None:
        """Server shutdown: close every subscriber (1001) and wait for the watcher to stop."""
        for sub in list(self._subs):
            sub.close(CLOSE_GOING_AWAY)
            self.unsubscribe(sub)
        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            await asyncio.wait({self._task})

    async def _start(self) -> None:
        if self._task is not None:
            await asyncio.wait({self._task})  # the previous watcher is stopping: let it finish
        stop = asyncio.Event()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stop = stop
        self._task = asyncio.create_task(self._watch(stop, ready))
        await ready  # raises what made the watcher fail to start

    async def _watch(self, stop: asyncio.Event, ready: asyncio.Future[None]) -> None:
        """Run one watcher until ``stop`` is set; a failure closes every subscriber with 1011."""
        self.starts += 1
        log.info("change feed: watching %s", self.root)
        changes = awatch(self.root, watch_filter=None, debounce=self.debounce_ms, step=self.step_ms,
                         stop_event=stop, recursive=True)
        try:
            # awatch sets up its inotify watches synchronously in its first step, before its first
            # await: once that step has run (the sleep(0) lets it), no later change can be missed.
            first = asyncio.ensure_future(changes.__anext__())
            await asyncio.sleep(0)
            failed = first.exception() if first.done() else None
            if failed is not None:
                raise failed
            ready.set_result(None)
            try:
                batch = await first
            except StopAsyncIteration:
                return
            await self._publish(batch)
            async for batch in changes:
                await self._publish(batch)
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
                return
            log.exception("change feed: the watcher failed")
            for sub in list(self._subs):
                sub.close(CLOSE_INTERNAL_ERROR)
            self._subs.clear()
        finally:
            with contextlib.suppress(Exception):
                await changes.aclose()
            self.stops += 1
            log.info("change feed: stopped watching %s", self.root)

    async def _publish(self, batch: set[tuple[Change, str]]) -> None:
        # Stats of a large batch (many files copied in) must not hold up the event loop.
        events = await asyncio.to_thread(events_for, self.root, batch, time.time())
        for ev in events:
            text = json.dumps(ev)
            for sub in list(self._subs):
                if not sub.offer(text):
                    log.warning("change feed: a subscriber fell %d events behind; closing it with %d",
                                self.queue_size, CLOSE_TRY_AGAIN_LATER)
                    self.unsubscribe(sub)
