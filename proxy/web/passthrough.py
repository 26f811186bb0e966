"""Methods other than GET and HEAD: straight through to the origin, uncached, headers both ways."""

from __future__ import annotations

import logging
from typing import Iterable

from aiohttp import web
from multidict import CIMultiDict

from proxy.cache.engine import Engine
from proxy.core import fields
from proxy.core.forwarding import Asker, origin_fields
from proxy.core.unsafe import invalidated, invalidates
from proxy.http.errors import UpstreamError, UpstreamMismatch
from proxy.http.ranges import answers_range
from proxy.web import answers
from proxy.web.answers import VIA
from proxy.web.sending import cut

__all__ = ["passthrough", "HOP_BY_HOP"]

log = logging.getLogger("rangeproxy.handlers")
# Hop-by-hop fields (proxy.core.fields), and Host and Content-Length, which the client session sets itself.
HOP_BY_HOP = fields.HOP_BY_HOP | {"host", "content-length"}


def asker(request: web.Request) -> Asker:
    return Asker(request.remote or "unknown", request.scheme, request.host)


def forwarded(request: web.Request, drop: Iterable[str] = ()) -> CIMultiDict[str]:
    """The client's end-to-end fields for the origin, as they are (nothing is cached),
    plus who asked and this hop in Via (:func:`proxy.core.forwarding.origin_fields`)."""
    return CIMultiDict(origin_fields(request.headers.items(), asker(request), drop, cache_controlled=False))


async def passthrough(engine: Engine, request: web.Request, url: str, sign: bool = True) -> web.StreamResponse:
    """The origin's own answer to the client's request (``sign=False``: without the proxy's
    SigV4 signature, so that the origin judges the client's own)."""
    headers = forwarded(request, engine.settings.dropped_request_fields())
    data = None
    if request.body_exists:
        if request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)
        data = request.content.iter_chunked(64 * 1024)
    try:
        async with engine.upstream.get(url, None, headers.items(), method=request.method, data=data,
                                       sign=sign) as up:
            if (request.method == "GET" and up.status == 206 and "Content-Range" in up.headers
                    and not answers_range(request.headers.get("Range"), up.headers["Content-Range"])):
                # Bytes the client did not ask for, under a Content-Range it may not read: refused,
                # as the cached path refuses an upstream piece that is not the one asked.
                log.warning("origin answered %s for Range %r of %s: refused", up.headers["Content-Range"],
                            request.headers.get("Range"), url)
                return answers.error(UpstreamMismatch(f"origin answered {up.headers['Content-Range']!a} "
                                                      f"for {request.headers.get('Range')!a}"))
            # Fetched with the client's own headers: pass the origin's answer back as is.
            out: CIMultiDict[str] = CIMultiDict((k, v) for k, v in up.headers.items()
                                                if k.lower() not in HOP_BY_HOP)
            out["Via"] = ", ".join([*out.popall("Via", []), VIA])
            resp = web.StreamResponse(status=up.status, headers=out)
            if up.content_length is not None:
                resp.content_length = up.content_length
            if invalidates(request.method, up.status):
                # RFC 9111 §4.4: a successful unsafe method invalidates the target URI (and
                # what its Location and Content-Location name on the same origin).
                for gone in invalidated(url, up.headers.items()):
                    await engine.invalidate(gone, f"{request.method} {up.status}")
            await resp.prepare(request)
            try:
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
            except (ConnectionResetError, ConnectionError):
                return resp
            except Exception as exc:
                log.warning("aborting pass-through of %s: %s", url, exc)
                cut(request)
                return resp
            await resp.write_eof()
            return resp
    except UpstreamError as exc:
        return answers.error(exc)
