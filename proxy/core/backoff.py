"""How long to wait before connecting again: doubling up to a cap, with jitter (pure).

"Equal jitter": half of each delay is fixed, half random, so a fleet of proxies that lost the same
origin at once spreads its reconnects out without any one of them trying again at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["Backoff"]


@dataclass(slots=True)
class Backoff:
    """Delays ``first``, ``2 * first``, ... up to ``cap`` seconds, each between half and all of it."""

    first: float = 0.5
    cap: float = 30.0
    failures: int = 0  # in a row, since the last success

    def next_delay(self, random: Callable[[], float]) -> float:
        """The wait before the next try (``random()`` in [0, 1)); counts one more failure."""
        ceiling = min(self.cap, self.first * (1 << min(self.failures, 32)))
        self.failures += 1
        return ceiling / 2 + random() * ceiling / 2

    def succeeded(self) -> None:
        self.failures = 0
