"""Requests to the origin, counted by status and outcome (ok, mismatch, error, timeout)."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, Iterable

import aiohttp

from proxy.cache.upstream import Upstream
from proxy.core.counters import Counters
from proxy.core.variants import target_url
from proxy.http.errors import UpstreamMismatch, UpstreamStatus, UpstreamTimeout, VersionChanged
from proxy.http.ranges import Span

__all__ = ["Origin"]


class Origin:
    """The upstream as the engine uses it: every request counted in ``counters``."""

    def __init__(self, upstream: Upstream, counters: Counters) -> None:
        self.upstream = upstream
        self.counters = counters

    @asynccontextmanager
    async def get(self, url: str, span: Span | None,
                  headers: Iterable[tuple[str, str]] = ()) -> AsyncIterator[aiohttp.ClientResponse]:
        status, outcome = "none", "ok"
        t0 = time.monotonic()
        try:
            # ``url`` is a cache key: a variant's key stands for its URL (proxy.core.variants), and
            # that URL for the client URL it is fetched with (proxy.cache.targets). Only here: a
            # client's own request (pass-through, a signed URL's check) goes out as it came.
            fetched = self.upstream.clients.fetch_url(target_url(url))
            async with self.upstream.get(fetched, span, headers) as resp:
                status = str(resp.status)
                yield resp
        except UpstreamTimeout:
            outcome = "timeout"
            raise
        except (UpstreamMismatch, VersionChanged):
            outcome = "mismatch"
            raise
        except BaseException:
            outcome = "error"
            raise
        finally:
            self.counters.upstream[(status, outcome)] += 1
            self.counters.upstream_seconds += time.monotonic() - t0

    async def error_status(self, resp: aiohttp.ClientResponse) -> UpstreamStatus:
        return await self.upstream.error_status(resp)
