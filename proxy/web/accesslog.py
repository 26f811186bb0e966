"""The access log: one line per request, combined log format plus how the response was made.

::

    127.0.0.1 - - [21/Nov/2026:10:00:00 +0000] "GET /big.bin HTTP/1.1" 206 3145728 "-" "curl/8.5.0" \
cache=MISS origin=default upstream_time=0.031 origin_bytes=3145728 time=0.034

After the combined fields (remote address, ident and user always ``-``, start
time, request line, status, body bytes sent, Referer, User-Agent):

* ``cache`` -- X-Cache of the response (HIT, MISS, PARTIAL, PASS, ERROR) or ``-``
  (answered without the slice path: 304, 416, an admin path);
* ``origin`` -- the name of the origin that took the request (``-``: none, e.g. an admin
  path, or a request no origin takes);
* ``upstream_time`` -- seconds this response spent waiting on the origin (``-``: none,
  or not measured);
* ``origin_bytes`` -- body bytes of this response that came from the origin;
* ``time`` -- seconds from the request to the end of the response.

Lines go to the ``rangeproxy.access`` logger at INFO (so ``log_level = "warning"``
silences them; ``access_log = false`` turns them off), written to stdout without a
prefix. Format ``"json"`` writes the same fields as one JSON object per line. The
request line is escaped like Apache does (``"`` and control bytes), and a
``token=`` query parameter of an admin request is never written.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from proxy.web.handlers import INFO_KEY

__all__ = ["AccessLogger", "access_logger_for", "LOGGER_NAME"]

LOGGER_NAME = "rangeproxy.access"
_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\xff"\\]')
_TOKEN = re.compile(r"(?<=[?&])token=[^&]*")


def _esc(text: str) -> str:
    def sub(m: re.Match[str]) -> str:
        ch = m.group(0)
        return "\\" + ch if ch in '"\\' else f"\\x{ord(ch):02x}"
    return _UNSAFE.sub(sub, text)


def _target(request: BaseRequest, proxied: bool) -> str:
    path = request.raw_path
    if not proxied and "token=" in path:
        path = _TOKEN.sub("token=***", path)
    return path


def _body_bytes(request: BaseRequest, response: StreamResponse, info: Any) -> int:
    """Body bytes sent (Apache's %b; aiohttp's body_length also counts the headers)."""
    if request.method == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200:
        return 0
    if info is not None and info.aborted:  # cut short: what the slice path produced for it
        return info.tally.cache_bytes + info.tally.origin_bytes
    length = response.content_length
    return length if length is not None else response.body_length


class AccessLogger(AbstractAccessLogger):
    """aiohttp access logger reading ``request["rangeproxy"]`` (a handlers.ResponseInfo)."""

    def __init__(self, logger: logging.Logger, log_format: str = "combined") -> None:
        # Anything but "json" (including aiohttp's own default format string) means combined.
        super().__init__(logger, "json" if log_format == "json" else "combined")

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def fields(self, request: BaseRequest, response: StreamResponse, time: float) -> dict[str, Any]:
        info = request.get(INFO_KEY)
        proxied = info is not None
        if info is not None:  # the handler set info.finished before the response went out
            time = max(0.0, info.finished - info.started)  # monotonic, finer than the loop clock
        start = datetime.datetime.now().astimezone() - datetime.timedelta(seconds=time)
        body = _body_bytes(request, response, info)
        cache = "-"
        upstream: float | None = None
        origin_bytes = 0
        if info is not None:
            cache = info.cache_status or "-"
            if cache == "PASS":
                upstream = time  # passed straight through: all of it was the origin's
                origin_bytes = body
            else:
                upstream = info.tally.upstream_seconds
                origin_bytes = info.tally.origin_bytes
        return {
            "remote": request.remote or "-",
            "time": start,
            "method": request.method,
            "path": _target(request, proxied),
            "protocol": f"HTTP/{request.version.major}.{request.version.minor}",
            "status": response.status,
            "bytes": body,
            "referer": request.headers.get("Referer", "-"),
            "user_agent": request.headers.get("User-Agent", "-"),
            "cache": cache,
            "origin": (info.origin if info is not None else "") or "-",
            "upstream_seconds": upstream,
            "origin_bytes": origin_bytes,
            "duration_seconds": time,
        }

    def format(self, f: dict[str, Any]) -> str:
        if self.log_format == "json":
            out = dict(f)
            out["time"] = f["time"].isoformat(timespec="milliseconds")
            out["duration_seconds"] = round(f["duration_seconds"], 6)
            if out["upstream_seconds"] is not None:
                out["upstream_seconds"] = round(out["upstream_seconds"], 6)
            return json.dumps(out, separators=(",", ":"), ensure_ascii=True)
        up = "-" if f["upstream_seconds"] is None else f"{f['upstream_seconds']:.6f}"
        return (f'{f["remote"]} - - [{f["time"].strftime("%d/%b/%Y:%H:%M:%S %z")}] '
                f'"{_esc(f["method"])} {_esc(f["path"])} {f["protocol"]}" {f["status"]} {f["bytes"]} '
                f'"{_esc(f["referer"])}" "{_esc(f["user_agent"])}" '
                f'cache={f["cache"]} origin={f["origin"]} upstream_time={up} origin_bytes={f["origin_bytes"]} '
                f'time={f["duration_seconds"]:.6f}')

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        try:
            self.logger.info("%s", self.format(self.fields(request, response, time)))
        except Exception:  # noqa: BLE001 - a log line must never break serving
            self.logger.exception("access log line failed")


def access_logger_for(settings: Any) -> logging.Logger | None:
    """The access-log logger (stdout, the bare line) or None when ``access_log`` is off."""
    if not settings.access_log:
        return None
    logger = logging.getLogger(LOGGER_NAME)
    if not any(getattr(h, "_rangeproxy_access", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._rangeproxy_access = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
    return logger
