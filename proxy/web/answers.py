"""Small complete answers: proxy errors with their status hint, origin errors passed through, 416."""

from __future__ import annotations

from aiohttp import web

from proxy.core.representation import ObjectMeta
from proxy.http.errors import ProxyError, UpstreamStatus
from proxy.http.ranges import format_unsatisfied

__all__ = ["VIA", "error", "origin_error", "unsatisfiable", "validators"]

VIA = "1.1 rangeproxy"


def error(exc: ProxyError) -> web.Response:
    status = exc.status_hint if 400 <= exc.status_hint < 600 else 502
    text = {504: "Gateway Timeout", 502: "Bad Gateway"}.get(status, "Error")
    return web.Response(status=status, text=f"{status} {text}: {exc}\n", headers={"Via": VIA})


def origin_error(exc: UpstreamStatus) -> web.Response:
    """The origin's own error status, before any byte was sent: passed through."""
    return web.Response(status=exc.status, body=exc.body, headers={**exc.headers, "Via": VIA})


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
