"""An origin's change feed, as values: what one announcement says, and which cached object it names (pure).

The origin (``appserver``'s ``/_events``) sends one JSON text message per file created, changed or
deleted: ``{"type": "changed", "path": "/videos/a.mp4", "etag": "\\"...\\"", "size": 123}``. The path
is the one the origin serves the file at; the proxy fetches ``<upstream URL><target>``, so an
upstream URL with a path of its own (``http://media.internal/films``) takes the announcements
under that path and nothing else.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from proxy.core.config_error import ConfigError
from proxy.http.target import split_absolute_url

__all__ = ["OriginChange", "FeedHello", "parse_message", "upstream_target", "check_feed_url", "KINDS"]

KINDS = frozenset({"created", "changed", "deleted"})
_PATH = re.compile(r"/[\x21-\x7e]*", re.ASCII)  # what a request target's path may hold (RFC 9110 §4.1)


@dataclass(frozen=True, slots=True)
class OriginChange:
    """One file the origin announced: its kind, the path it is served at, and its new ETag and size."""

    kind: str
    path: str
    etag: str | None = None
    size: int | None = None


@dataclass(frozen=True, slots=True)
class FeedHello:
    """The first message after the handshake: the feed is live from here on."""

    version: int


def parse_message(text: str) -> OriginChange | FeedHello | None:
    """A feed message as a value; None for a message of a type this proxy does not know (a newer
    origin may add some). A malformed one raises ValueError saying what is wrong."""
    try:
        msg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ValueError("not a JSON object with a string \"type\"")
    kind = msg["type"]
    if kind == "hello":
        version = msg.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError("hello without an integer \"version\"")
        return FeedHello(version)
    if kind not in KINDS:
        return None
    path, etag, size = msg.get("path"), msg.get("etag"), msg.get("size")
    if not isinstance(path, str) or not _PATH.fullmatch(path):
        raise ValueError(f"{kind}: \"path\" must be a URL path starting with \"/\" (got {path!r})")
    if etag is not None and not isinstance(etag, str):
        raise ValueError(f"{kind}: \"etag\" must be a string or null")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise ValueError(f"{kind}: \"size\" must be a non-negative integer or null")
    return OriginChange(kind, path, etag, size)


def upstream_target(upstream: str, path: str) -> str | None:
    """The target the proxy fetches ``path`` of the origin by, with ``upstream`` its base URL (no
    trailing slash); None when the path is not under the base URL's own path."""
    base = urlsplit(upstream).path.rstrip("/")
    if not base:
        return path
    if path.startswith(base + "/"):
        return path[len(base):]
    return None


def check_feed_url(value: object, key: str) -> str:
    """A change feed's URL: ``ws://`` or ``wss://``, a host, no credentials or fragment; empty: none."""
    bad = ConfigError(key, f"must be a ws:// or wss:// URL such as ws://127.0.0.1:8081/_events, or empty "
                      f"(got {value!r})")
    if not isinstance(value, str):
        raise bad
    if not value:
        return ""
    if any(c <= " " or c == "\x7f" for c in value) or "#" in value or split_absolute_url(value, ("ws", "wss")) is None:
        raise bad
    return value
