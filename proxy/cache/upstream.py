"""The origin side: one ClientSession with a bounded pool; faults become typed errors.

A fetch carries the fields its caller gives (a client's, see :mod:`proxy.core.forwarding`),
then ``Accept-Encoding: identity`` unless they name one (byte offsets must mean the
stored bytes), a User-Agent unless they have one, and its ``Range``.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator, Iterable

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from proxy.core.fields import stored_fields
from proxy.core.origins import OriginConfig, default_origin
from proxy.core.settings import Settings
from proxy.http.errors import UpstreamError, UpstreamStatus, UpstreamTimeout
from proxy.http.ranges import Span

__all__ = ["Upstream", "ERROR_BODY_LIMIT"]

ERROR_BODY_LIMIT = 1024 * 1024  # bytes of an origin error body kept to pass through (more: cut, see UpstreamStatus)
USER_AGENT = "rangeproxy/0.1"


class Upstream:
    """One origin's upstream: its pool, and what every request to it carries."""

    def __init__(self, base_url: str, *, connections: int, connect_timeout: float, read_timeout: float,
                 origin: OriginConfig | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.origin = origin if origin is not None else default_origin(self.base_url)
        self.name = self.origin.name
        self._connections = connections
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_connect=connect_timeout,
                                              sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None
        # The operator's fields, then the Host the origin expects (default: its URL's).
        self._added = list(self.origin.add_request_headers)
        if self.origin.host_header:
            self._added.append(("Host", self.origin.host_header))

    @classmethod
    def for_origin(cls, origin: OriginConfig, settings: Settings) -> Upstream:
        return cls(origin.primary, connections=settings.upstream_connections,
                   connect_timeout=settings.upstream_connect_timeout, read_timeout=settings.upstream_read_timeout,
                   origin=origin)

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
    async def get(self, url: str, span: Span | None, headers: Iterable[tuple[str, str]] = (),
                  method: str = "GET", data: object = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """A ranged request; connection faults map to 502, timeouts to 504."""
        hdrs: CIMultiDict[str] = CIMultiDict(headers)
        for name, value in self._added:
            hdrs[name] = value
        hdrs.setdefault("Accept-Encoding", "identity")
        hdrs.setdefault("User-Agent", USER_AGENT)
        if span is not None:
            hdrs["Range"] = f"bytes={span.start}-{span.end - 1}"
        try:
            # encoded=True: the target goes out byte for byte (RFC 3986 §2.2: "%2F" is not "/",
            # and a signed URL's signature covers the bytes as the client sent them).
            async with self.session.request(method, URL(url, encoded=True), headers=hdrs, data=data,
                                            allow_redirects=False) as resp:
                yield resp
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(f"origin timed out: {url}") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"origin failed: {url}: {exc.__class__.__name__}: {exc}") from exc

    @staticmethod
    async def error_status(resp: aiohttp.ClientResponse) -> UpstreamStatus:
        """Read an error answer (up to ERROR_BODY_LIMIT) so it can be passed through with its
        end-to-end fields; a longer or broken body is marked incomplete (then cut, never ended cleanly)."""
        complete = True
        try:
            parts: list[bytes] = []
            got = 0
            while got <= ERROR_BODY_LIMIT:  # read() returns what is buffered: loop to the end
                chunk = await resp.content.read(ERROR_BODY_LIMIT + 1 - got)
                if not chunk:
                    break
                parts.append(chunk)
                got += len(chunk)
            body = b"".join(parts)
            if len(body) > ERROR_BODY_LIMIT:
                body, complete = body[:ERROR_BODY_LIMIT], False
            elif resp.content_length is not None and len(body) != resp.content_length:
                complete = False
        except (aiohttp.ClientError, asyncio.TimeoutError):
            body, complete = b"", False
        # A collapsed answer goes to every waiting client: a cookie set for one is given to none.
        keep = [(k, v) for k, v in stored_fields(resp.headers.items()) if k.lower() != "content-range"]
        if resp.headers.get("Content-Range") is not None and resp.status == 416:
            keep.append(("Content-Range", resp.headers["Content-Range"]))
        return UpstreamStatus(resp.status, keep, body, complete)
