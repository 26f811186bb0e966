"""The one error a configuration mistake becomes, naming the key at fault (pure)."""

from __future__ import annotations

__all__ = ["ConfigError", "shown"]


class ConfigError(Exception):
    """A configuration mistake; ``str()`` is ``"<key>: <message>"``."""

    def __init__(self, key: str, message: str):
        super().__init__(key, message)
        self.key = key
        self.message = message

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


def shown(value: object) -> str:
    """How a rejected value is shown: strings quoted, TOML values with their type."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value!r}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
