"""URLs that pass through for a while because their last answer could not be stored."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

__all__ = ["PassList", "PASS_WINDOW"]

PASS_WINDOW = 30.0  # seconds a URL whose answer could not be stored passes through


class PassList:
    """URLs whose last answer could not be stored: for PASS_WINDOW seconds their GETs and
    HEADs pass through (one answer each, the origin's own), instead of a discovery each."""

    def __init__(self, window: float = PASS_WINDOW, size: int = 10_000) -> None:
        self.window = window
        self.size = size
        self._until: OrderedDict[str, float] = OrderedDict()

    def note(self, url: str, now: float) -> None:
        self._until[url] = now + self.window
        self._until.move_to_end(url)
        while len(self._until) > self.size:
            self._until.popitem(last=False)

    def passing(self, url: str, now: Callable[[], float] = time.monotonic) -> bool:
        until = self._until.get(url)
        if until is None:  # the hot path: no clock read
            return False
        if now() < until:
            return True
        del self._until[url]
        return False

    def forget(self, url: str) -> None:
        self._until.pop(url, None)
