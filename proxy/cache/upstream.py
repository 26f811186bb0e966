"""The origin side: one ClientSession with a bounded pool; faults become typed errors.

Slice fetches are shared by every client that collapses onto them, so they carry
no client headers: only ``Range``, ``Accept-Encoding: identity`` (byte offsets must
mean the stored bytes) and the conditional headers of a revalidation.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator, Mapping

import aiohttp

from proxy.http.errors import UpstreamError, UpstreamStatus, UpstreamTimeout
from proxy.http.ranges import Span

__all__ = ["Upstream", "ERROR_BODY_LIMIT"]

ERROR_BODY_LIMIT = 64 * 1024  # bytes of an origin error body passed through to the client
USER_AGENT = "rangeproxy/0.1"


class Upstream:
    def __init__(self, base_url: str, *, connections: int, connect_timeout: float, read_timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._connections = connections
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_connect=connect_timeout,
                                              sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._connections, limit_per_host=self._connections,
                                         enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, auto_decompress=False,
                                              skip_auto_headers=("User-Agent", "Accept-Encoding"))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Upstream.start() not called"
        return self._session

    def url_for(self, path_qs: str) -> str:
        return self.base_url + path_qs

    @asynccontextmanager
    async def get(self, url: str, span: Span | None, headers: Mapping[str, str] | None = None,
                  method: str = "GET", data: object = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """A ranged request; connection faults map to 502, timeouts to 504."""
        hdrs = {"Accept-Encoding": "identity", "User-Agent": USER_AGENT}
        if span is not None:
            hdrs["Range"] = f"bytes={span.start}-{span.end - 1}"
        if headers:
            hdrs.update(headers)
        try:
            async with self.session.request(method, url, headers=hdrs, data=data, allow_redirects=False) as resp:
                yield resp
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(f"origin timed out: {url}") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"origin failed: {url}: {exc.__class__.__name__}: {exc}") from exc

    @staticmethod
    async def error_status(resp: aiohttp.ClientResponse) -> UpstreamStatus:
        """Read (a bounded part of) an error answer so it can be passed through."""
        try:
            body = await resp.content.read(ERROR_BODY_LIMIT)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            body = b""
        keep = {k: v for k, v in resp.headers.items()
                if k.lower() in ("content-type", "cache-control", "www-authenticate", "retry-after", "location",
                                 "allow", "content-range")}
        return UpstreamStatus(resp.status, keep, body)
