"""The request target: the upstream path and query, and the proxy's own ``?range=`` parameter;
and the absolute URLs the configuration names (upstreams, change feeds)."""

from __future__ import annotations

from urllib.parse import SplitResult, unquote_plus, urlsplit

__all__ = ["split_target", "split_absolute_url"]


def split_absolute_url(value: str, schemes: tuple[str, ...]) -> SplitResult | None:
    """``value``'s parts when it is a URL of one of ``schemes`` (lower case) with a host, a valid
    port and no credentials; None otherwise."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    if parts.scheme.lower() not in schemes or not parts.hostname or "@" in parts.netloc:
        return None
    return parts


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
