"""Stored answers other than 200/206 (proxy.core.statuses), in memory, bounded."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

from proxy.core.statuses import StatusAnswer

__all__ = ["StatusAnswers"]

MAX_ANSWERS = 10_000
MAX_BYTES = 64 * 1024 * 1024  # bodies kept at once (each up to upstream.ERROR_BODY_LIMIT)


class StatusAnswers:
    """Per cache key, the last storable non-200/206 answer, least recently used dropped first.
    Kept in memory only: after a restart the origin is asked again."""

    def __init__(self, count: int = MAX_ANSWERS, size: int = MAX_BYTES) -> None:
        self.count = count
        self.size = size
        self.bytes = 0
        self._by_key: OrderedDict[str, StatusAnswer] = OrderedDict()

    def keep(self, key: str, answer: StatusAnswer) -> None:
        self.forget(key)
        self._by_key[key] = answer
        self.bytes += len(answer.body)
        while self._by_key and (len(self._by_key) > self.count or self.bytes > self.size):
            _, old = self._by_key.popitem(last=False)
            self.bytes -= len(old.body)

    def fresh(self, key: str, now: Callable[[], float] = time.time) -> StatusAnswer | None:
        answer = self._by_key.get(key)
        if answer is None:  # the hot path: no clock read
            return None
        if not answer.is_fresh(now()):
            self.forget(key)
            return None
        self._by_key.move_to_end(key)
        return answer

    def keys_under(self, prefix: str) -> list[str]:
        return [k for k in self._by_key if k.startswith(prefix)]

    def forget(self, key: str) -> None:
        old = self._by_key.pop(key, None)
        if old is not None:
            self.bytes -= len(old.body)
