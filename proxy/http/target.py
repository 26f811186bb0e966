"""The request target: the upstream path and query, and the proxy's own ``?range=`` parameter."""

from __future__ import annotations

from urllib.parse import unquote_plus

__all__ = ["split_target"]


def split_target(raw_path: str) -> tuple[str, str | None]:
    """(upstream path?query without ``range=``, the ``range=`` value if any).

    The ``?range=a-b`` form is the proxy's own: never forwarded, never in a cache key.
    """
    path, sep, query = raw_path.partition("?")
    if not sep:
        return path, None
    keep: list[str] = []
    value: str | None = None
    for item in query.split("&"):
        name, _, val = item.partition("=")
        if unquote_plus(name) == "range":
            value = unquote_plus(val)
        elif item:
            keep.append(item)
    return (path + "?" + "&".join(keep)) if keep else path, value
