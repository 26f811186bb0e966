"""Which client URL a cache key's fetches go out with, and which signed URLs the origin accepted.

A cache key may leave parts of the URL out (the origin's ``cache_key`` rule: signature
parameters, ``utm_*``...): a miss is still fetched with the full URL a client sent, and
so are the fetches no single client asked for (read-ahead, revalidation), with the most
recent one, until it expires. A signed URL is answered from the cache only once the origin
has accepted that very URL, and for no longer than its signature lasts.
"""

from __future__ import annotations

import time
from collections import OrderedDict

__all__ = ["ClientUrls"]

LIMIT = 100_000  # keys (and accepted URLs) remembered; the least recently used go first


class ClientUrls:
    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._fetch: OrderedDict[str, tuple[str, float]] = OrderedDict()  # key -> (client URL, until)
        self._accepted: OrderedDict[tuple[str, str], float] = OrderedDict()  # (method, URL) -> until

    @staticmethod
    def _put(table: OrderedDict[object, object], key: object, value: object, limit: int) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > limit:
            table.popitem(last=False)

    def use(self, key: str, url: str, until: float = float("inf")) -> None:
        """Fetch ``key`` with ``url`` (a client's full URL) until ``until`` (Unix time)."""
        self._put(self._fetch, key, (url, until), self.limit)  # type: ignore[arg-type]

    def fetch_url(self, key: str, now: float | None = None) -> str:
        """The URL to fetch ``key`` with: the latest client URL still valid, else the key itself."""
        got = self._fetch.get(key)
        if got is None:
            return key
        if got[1] <= (time.time() if now is None else now):
            del self._fetch[key]
            return key
        return got[0]

    def accept(self, method: str, url: str, until: float) -> None:
        """The origin accepted ``url`` for ``method``; remember it until ``until``."""
        self._put(self._accepted, (method, url), until, self.limit)  # type: ignore[arg-type]

    def accepted(self, method: str, url: str, now: float) -> bool:
        until = self._accepted.get((method, url))
        if until is None:
            return False
        if until <= now:
            del self._accepted[(method, url)]
            return False
        return True
