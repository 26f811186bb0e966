"""Which URLs vary, on what, and which of their variants are stored (bounded per URL).

Kept in memory, learnt from answers: after a restart (or in another worker) the first
discovery of a URL learns its Vary again, and the variants already in the store are
found under the same keys.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["VaryIndex", "URLS_KEPT"]

URLS_KEPT = 10_000  # URLs whose Vary is remembered (as many as metadata kept in memory)


class VaryIndex:
    """Per URL: the fields its answers vary on, and its variant keys, least recently used first."""

    def __init__(self, max_variants: int, urls: int = URLS_KEPT) -> None:
        self.max_variants = max_variants
        self.urls = urls
        self._names: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._variants: dict[str, OrderedDict[str, None]] = {}

    def names(self, url: str) -> tuple[str, ...] | None:
        """What ``url`` varies on, if it is known to vary."""
        return self._names.get(url)

    def learn(self, url: str, names: tuple[str, ...] | None) -> None:
        """The origin's latest answer for ``url`` varies on ``names`` (None: on nothing)."""
        if names is None:
            self._names.pop(url, None)
            return
        self._names[url] = names
        self._names.move_to_end(url)
        while len(self._names) > self.urls:
            old, _ = self._names.popitem(last=False)
            self._variants.pop(old, None)

    def use(self, url: str, key: str) -> list[str]:
        """``key`` was used (or stored) now; the variants beyond the bound, to be dropped."""
        keys = self._variants.setdefault(url, OrderedDict())
        keys[key] = None
        keys.move_to_end(key)
        dropped: list[str] = []
        while len(keys) > self.max_variants:
            old, _ = keys.popitem(last=False)
            dropped.append(old)
        return dropped

    def variants(self, url: str) -> list[str]:
        return list(self._variants.get(url, ()))

    def forget(self, url: str) -> None:
        self._names.pop(url, None)
        self._variants.pop(url, None)
