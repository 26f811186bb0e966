"""What an answer to an unsafe request invalidates (RFC 9111 §4.4). Pure."""

from __future__ import annotations

from typing import Iterable
from urllib.parse import urljoin, urlsplit

__all__ = ["SAFE", "invalidates", "invalidated"]

SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # RFC 9110 §9.2.1; any other may change the resource


def invalidates(method: str, status: int) -> bool:
    """A non-error answer to an unsafe method, or to one whose safety is unknown (§4.4)."""
    return method.upper() not in SAFE and 200 <= status < 400


def invalidated(url: str, fields: Iterable[tuple[str, str]]) -> list[str]:
    """The target, and the URLs its answer's Location and Content-Location name when they
    have the same origin (§4.4: others could be a way to attack another site's entries)."""
    out = [url]
    origin = urlsplit(url)[:2]
    for name, value in fields:
        if name.lower() in ("location", "content-location") and value.strip():
            other = urljoin(url, value.strip())
            if urlsplit(other)[:2] == origin and other not in out:
                out.append(other)
    return out
