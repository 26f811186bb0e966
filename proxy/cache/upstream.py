"""The origin side: one ClientSession with a bounded pool; faults become typed errors.

A fetch carries the fields its caller gives (a client's, see :mod:`proxy.core.forwarding`),
then ``Accept-Encoding: identity`` unless they name one (byte offsets must mean the
stored bytes), a User-Agent unless they have one, and its ``Range``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, Iterable
from urllib.parse import quote, unquote

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from proxy.cache.signing import AwsCredentials, SigV4Signer
from proxy.cache.targets import ClientUrls
from proxy.cache.tls import client_context, tls_failure
from proxy.core.config_error import ConfigError
from proxy.core.fields import stored_fields
from proxy.core.health import HealthPolicy, UpstreamHealth, retryable
from proxy.core.signatures import without_signature
from proxy.core.origins import OriginConfig, default_origin
from proxy.core.settings import Settings
from proxy.http.errors import UpstreamError, UpstreamStatus, UpstreamTimeout
from proxy.http.ranges import Span

__all__ = ["Upstream", "ERROR_BODY_LIMIT"]

ERROR_BODY_LIMIT = 1024 * 1024  # bytes of an origin error body kept to pass through (more: cut, see UpstreamStatus)
USER_AGENT = "rangeproxy/0.1"
log = logging.getLogger("rangeproxy.upstream")


class Upstream:
    """One origin's upstream: its pool, its upstream URLs in failover order, and what every
    request to it carries (the operator's fields, its Host, a SigV4 signature)."""

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
        self.health = UpstreamHealth(self.origin.upstreams, HealthPolicy(cooldown=self.origin.failover_cooldown))
        self.clients = ClientUrls()
        tls = self.origin.tls
        self._ssl = client_context(self.name, verify=tls.verify, ca_bundle=tls.ca_bundle,
                                   client_cert=tls.client_cert, client_key=tls.client_key) \
            if any(u.startswith("https:") for u in self.origin.upstreams) or tls.ca_bundle or tls.client_cert else None
        self.signer = _signer(self.origin)

    @classmethod
    def for_origin(cls, origin: OriginConfig, settings: Settings) -> Upstream:
        """The upstream of ``origin``; a CA bundle, client certificate or credentials that cannot be
        loaded raise a ConfigError naming the key."""
        return cls(origin.primary, connections=settings.upstream_connections,
                   connect_timeout=settings.upstream_connect_timeout, read_timeout=settings.upstream_read_timeout,
                   origin=origin)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._connections, limit_per_host=self._connections,
                                         enable_cleanup_closed=True, ssl=self._ssl if self._ssl is not None else True)
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

    def _fields(self, method: str, url: str, headers: Iterable[tuple[str, str]], span: Span | None,
                sign: bool) -> CIMultiDict[str]:
        hdrs: CIMultiDict[str] = CIMultiDict(headers)
        for name, value in self._added:
            hdrs[name] = value
        hdrs.setdefault("Accept-Encoding", "identity")
        hdrs.setdefault("User-Agent", USER_AGENT)
        if span is not None:
            hdrs["Range"] = f"bytes={span.start}-{span.end - 1}"
        if sign and self.signer is not None:
            # The proxy's signature replaces the client's credentials: S3 refuses two mechanisms.
            for name in [n for n in hdrs if n.lower() == "authorization" or n.lower().startswith("x-amz-")]:
                hdrs.popall(name, None)
            hdrs.extend(self.signer.headers(method, url, hdrs.items()))
        return hdrs

    def _attempts(self, method: str, data: object) -> list[str]:
        """The upstream URLs to try, in order: a request with a body is sent once."""
        order = self.health.attempts(time.monotonic())
        return order if data is None and retryable(None, method) else order[:1]

    @asynccontextmanager
    async def get(self, url: str, span: Span | None, headers: Iterable[tuple[str, str]] = (),
                  method: str = "GET", data: object = None, sign: bool = True) -> AsyncIterator[aiohttp.ClientResponse]:
        """A ranged request; connection faults map to 502, timeouts to 504. A connection failure or
        a 5xx moves an idempotent request to the next upstream URL (failover, RFC 9110 §9.2.2).
        ``url`` is on the first upstream, sent as given (the cache's fetches give a client's URL
        for their key, see :mod:`proxy.cache.origin`; a client's request goes as it came).
        ``sign=False`` sends it without the proxy's signature (a client's own)."""
        sign = sign and data is None  # the signature is a bodiless one's (proxy.cache.signing)
        rest = url[len(self.base_url):] if url.startswith(self.base_url) else url
        if sign and self.signer is not None:
            rest = _canonical(rest)
        headers = list(headers)
        attempts = self._attempts(method, data)
        for n, base in enumerate(attempts):
            last = n == len(attempts) - 1
            target = base + rest
            hdrs = self._fields(method, target, headers, span, sign)
            # encoded=True: the target goes out byte for byte (RFC 3986 §2.2: "%2F" is not "/",
            # and a signed URL's signature covers the bytes as the client sent them).
            request = self.session.request(method, URL(target, encoded=True), headers=hdrs, data=data,
                                           allow_redirects=False)
            try:
                resp = await request.__aenter__()
            except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
                self.health.failed(base, time.monotonic())
                if last:
                    raise self._fault(target, exc) from exc
                log.warning("origin %s: %s failed (%s), trying the next upstream", self.name, base,
                            exc.__class__.__name__)
                continue
            try:
                if resp.status >= 500 and not last and retryable(resp.status, method):
                    self.health.failed(base, time.monotonic())
                    log.warning("origin %s: %s answered %d, trying the next upstream", self.name, base, resp.status)
                    continue
                if resp.status >= 500:
                    self.health.failed(base, time.monotonic())
                else:
                    self.health.succeeded(base)
                try:
                    yield resp
                except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
                    raise self._fault(target, exc) from exc
                return
            finally:
                await request.__aexit__(None, None, None)

    def _fault(self, url: str, exc: BaseException) -> UpstreamError:
        if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
            return UpstreamTimeout(f"origin timed out: {url}")
        said = tls_failure(self.name, url, exc)
        if said is not None:
            log.error("%s", said)
            return UpstreamError(said)
        return UpstreamError(f"origin failed: {url}: {exc.__class__.__name__}: {exc}")

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


def _signer(origin: OriginConfig) -> SigV4Signer | None:
    aws = origin.aws
    if aws is None:
        return None
    creds = AwsCredentials(aws.access_key_id, aws.secret_access_key, aws.session_token or None) \
        if aws.access_key_id else None
    try:
        return SigV4Signer(aws.region, aws.service, creds)
    except ConfigError as exc:
        raise ConfigError(f"origin.{origin.name}.{exc.key}", exc.message) from None


def _canonical(target: str) -> str:
    """A target as a signing proxy sends it: the path in S3's canonical spelling (each byte
    outside RFC 3986's unreserved set and "/" percent-encoded), the query without a client's
    signature parameters (S3 refuses a request with two authentication mechanisms)."""
    path, sep, query = target.partition("?")
    path = quote(unquote(path), safe="/~")
    query = without_signature(query) if sep else ""
    return path + ("?" + query if query else "")
