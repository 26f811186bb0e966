"""The one error a configuration mistake becomes, naming the key at fault (pure)."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(Exception):
    """A configuration mistake; ``str()`` is ``"<key>: <message>"``."""

    def __init__(self, key: str, message: str):
        super().__init__(key, message)
        self.key = key
        self.message = message

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"
