"""Small complete answers: proxy errors with their status hint, origin errors passed through, 416."""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict

from proxy.core.fields import cache_status, replay, via
from proxy.core.forwarding import VIA
from proxy.core.representation import ObjectMeta
from proxy.core.statuses import StatusAnswer
from proxy.http.errors import ProxyError, UpstreamStatus
from proxy.http.ranges import format_unsatisfied
from proxy.web.sending import cut

__all__ = ["VIA", "error", "origin_error", "stored_status", "unsatisfiable", "validators", "not_cached"]


def error(exc: ProxyError) -> web.Response:
    status = exc.status_hint if 400 <= exc.status_hint < 600 else 502
    text = {504: "Gateway Timeout", 502: "Bad Gateway"}.get(status, "Error")
    return web.Response(status=status, text=f"{status} {text}: {exc}\n", headers={"Via": VIA})


async def origin_error(request: web.Request, exc: UpstreamStatus) -> web.StreamResponse:
    """The origin's own status, fields and body, before any byte was sent: passed through.
    A body the proxy could not keep whole is sent as far as it goes and the connection cut."""
    headers: CIMultiDict[str] = CIMultiDict(exc.headers)
    headers["Via"] = via(tuple(exc.headers))
    if exc.complete:
        return web.Response(status=exc.status, body=exc.body, headers=headers)
    resp = web.StreamResponse(status=exc.status, headers=headers)
    await resp.prepare(request)
    await resp.write(exc.body)
    cut(request)  # never a clean end for a body we did not get whole
    return resp


def stored_status(answer: StatusAnswer, now: float) -> web.Response:
    """A stored answer other than 200/206, as it came (RFC 9111 §4), with its Age and this hop
    (to a HEAD, aiohttp sends the same fields without the body)."""
    headers: CIMultiDict[str] = CIMultiDict(replay(answer.fields))
    headers["Via"] = via(answer.fields)
    headers["Age"] = str(answer.age(now))
    headers["X-Cache"] = "HIT"
    headers["Cache-Status"] = cache_status("HIT", answer.stored_at + answer.ttl - now, True)
    return web.Response(status=answer.status, body=answer.body, headers=headers)


def not_cached() -> web.Response:
    """RFC 9111 §5.2.1.7: only-if-cached and the cache cannot answer: 504."""
    return web.Response(status=504, text="504 Gateway Timeout: not in the cache (only-if-cached)\n",
                        headers={"Via": VIA, "Cache-Status": "rangeproxy; fwd=miss; detail=only-if-cached"})


def validators(meta: ObjectMeta) -> dict[str, str]:
    out = {}
    if meta.etag:
        out["ETag"] = meta.etag
    if meta.last_modified:
        out["Last-Modified"] = meta.last_modified
    return out


def unsatisfiable(length: int, meta: ObjectMeta | None = None) -> web.Response:
    """RFC 9110 §15.5.17: 416 with ``Content-Range: bytes */length``."""
    headers = {"Content-Range": format_unsatisfied(length), "Accept-Ranges": "bytes", "Via": VIA}
    if meta is not None:
        headers.update(validators(meta))
    return web.Response(status=416, headers=headers)
