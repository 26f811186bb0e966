"""Typed errors, each carrying the status it suggests (h11's ``error_status_hint``)."""

from __future__ import annotations

from typing import Mapping, Sequence

__all__ = ["ProxyError", "UpstreamError", "UpstreamMismatch", "UpstreamTimeout", "UpstreamStatus", "VersionChanged",
           "RangeNotSatisfiable", "ClientGone"]


class ProxyError(Exception):
    status_hint = 500


class UpstreamError(ProxyError):
    """The origin was unreachable or answered something we must not use."""

    status_hint = 502


class UpstreamMismatch(UpstreamError):
    """An upstream answer disagreed with the request or the object's reference."""


class UpstreamTimeout(UpstreamError):
    status_hint = 504


class UpstreamStatus(UpstreamError):
    """The origin answered an error status before any byte was sent: pass it through."""

    def __init__(self, status: int, headers: Sequence[tuple[str, str]] | Mapping[str, str], body: bytes,
                 complete: bool = True) -> None:
        super().__init__(f"origin answered {status}")
        self.status = status
        self.status_hint = status
        self.headers = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        self.body = body
        self.complete = complete  # False: the origin's body was longer than what was kept


class VersionChanged(UpstreamError):
    """The origin's validator moved while we were reading: never splice versions."""


class RangeNotSatisfiable(ProxyError):
    """The origin says the requested range starts past the end (learned length)."""

    status_hint = 416

    def __init__(self, length: int) -> None:
        super().__init__(f"range not satisfiable for length {length}")
        self.length = length


class ClientGone(ProxyError):
    """The client closed its connection; stop writing."""
