"""Which origin takes a request: by Host, then by path prefix (pure).

As nginx picks a ``server`` by name and then a ``location`` by longest prefix: exact
host names first, then ``*.example.org`` patterns (longest first), then origins that
take any host; within those, the longest ``path_prefix`` that the path lies under
(on a segment boundary: ``/videos`` takes ``/videos/a`` and not ``/videosa``). The
client never chooses an upstream: what no origin takes is 421 (no origin for this Host,
RFC 9110 §15.5.20) or 404 (an origin for the Host, none for the path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from proxy.core.origins import OriginConfig

__all__ = ["Router", "Routed", "Unrouted", "request_host"]


@dataclass(frozen=True, slots=True)
class Routed:
    origin: OriginConfig
    target: str  # path and query as sent upstream (the prefix stripped where configured)


@dataclass(frozen=True, slots=True)
class Unrouted:
    status: int  # 421 or 404
    reason: str


def request_host(host: str | None) -> str:
    """The Host field's name part, lower-case, without port or trailing dot (RFC 9110 §7.2)."""
    if not host:
        return ""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[:end + 1] if end > 0 else host.rstrip(".")
    return host.rpartition(":")[0].rstrip(".") if ":" in host else host.rstrip(".")


def _under(path: str, prefix: str) -> bool:
    if prefix == "/":
        return True
    bare = prefix.rstrip("/")
    return path == bare or path.startswith(bare + "/")


class Router:
    """The configured origins, indexed for one lookup per request."""

    def __init__(self, origins: Sequence[OriginConfig]) -> None:
        self.origins = tuple(origins)

        def by_prefix(os: list[OriginConfig]) -> tuple[OriginConfig, ...]:
            return tuple(sorted(os, key=lambda o: len(o.path_prefix.rstrip("/")), reverse=True))

        exact: dict[str, list[OriginConfig]] = {}
        wild: dict[str, list[OriginConfig]] = {}
        anyhost: list[OriginConfig] = []
        for o in self.origins:
            if not o.hosts:
                anyhost.append(o)
            for h in o.hosts:
                (wild if h.startswith("*.") else exact).setdefault(h, []).append(o)
        self._exact = {h: by_prefix(os) for h, os in exact.items()}
        self._wild = tuple((h[1:], by_prefix(os)) for h, os in sorted(wild.items(), key=lambda kv: -len(kv[0])))
        self._any = by_prefix(anyhost)
        # The usual case, one origin for everything: no lookup at all.
        only = self.origins[0] if len(self.origins) == 1 else None
        self._only = only if only is not None and not only.hosts and only.path_prefix == "/" else None

    def route(self, host: str | None, target: str) -> Routed | Unrouted:
        if self._only is not None:
            return Routed(self._only, target)
        name = request_host(host)
        classes: list[tuple[OriginConfig, ...]] = []
        if name in self._exact:
            classes.append(self._exact[name])
        classes += [os for suffix, os in self._wild if name.endswith(suffix) and len(name) > len(suffix)]
        if self._any:
            classes.append(self._any)
        if not classes:
            return Unrouted(421, f"no origin is configured for the host {name or '(none)'}")
        path = target.partition("?")[0]
        for candidates in classes:
            for o in candidates:
                if _under(path, o.path_prefix):
                    return Routed(o, _stripped(target, o) if o.strip_prefix else target)
        return Unrouted(404, f"no origin is configured for {path} on {name or 'this host'}")


def _stripped(target: str, origin: OriginConfig) -> str:
    """``/videos/a.mp4?x`` under ``/videos`` -> ``/a.mp4?x``."""
    rest = target[len(origin.path_prefix.rstrip("/")):]
    return rest if rest.startswith("/") else "/" + rest
