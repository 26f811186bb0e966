"""Vary (RFC 9111 §4.1): which stored variant of a URL a request may be given.

Pure. A response that varies is stored under a *variant key*: its URL and the
normalised values, in the request that caused it, of the fields it names. A later
request is given that variant only if its own values make the same key. Fields the
cache sets itself on its fetches (``Range``, the conditionals, ``Accept-Encoding:
identity``) are the same for every fetch, so varying on them makes no variant.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable, Mapping

from proxy.core.forwarding import CACHE_CONTROLLED
from proxy.core.representation import field_value

__all__ = ["ANY", "SEPARATOR", "vary_names", "variant_key", "target_url", "is_variant"]

ANY = ("*",)  # Vary: * -- no stored response matches any request (§4.1)
SEPARATOR = " vary="  # a request target has no blank: no URL contains it
_BLANKS = re.compile(r"[ \t]*,[ \t]*")


def vary_names(response: Mapping[str, str]) -> tuple[str, ...] | None:
    """The request fields an answer varies on, lower-case and sorted; None if it varies on
    nothing that makes a variant here; :data:`ANY` for ``Vary: *``."""
    value = field_value(response, "Vary")
    if value is None:
        return None
    names = {n.strip().lower() for n in value.split(",") if n.strip()}
    if "*" in names:
        return ANY
    names -= CACHE_CONTROLLED
    return tuple(sorted(names)) or None


def _normalised(fields: Iterable[tuple[str, str]], name: str) -> str | None:
    """RFC 9111 §4.1: the field's lines combined, blanks around commas and at the ends
    removed (semantically the same value); absent is not the same as empty."""
    values = [v for n, v in fields if n.lower() == name]
    if not values:
        return None
    return _BLANKS.sub(",", ",".join(v.strip() for v in values))


def variant_key(url: str, names: tuple[str, ...], request: Iterable[tuple[str, str]]) -> str:
    """The key of the variant of ``url`` that a request with these fields selects."""
    fields = list(request)
    parts = []
    for name in names:
        value = _normalised(fields, name)
        parts.append(f"{name}\x00-" if value is None else f"{name}\x00={value}")
    digest = hashlib.sha256("\x01".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return f"{url}{SEPARATOR}{digest}"


def target_url(key: str) -> str:
    """The URL a cache key stands for (a variant key, or the URL itself)."""
    return key.partition(SEPARATOR)[0]


def is_variant(key: str) -> bool:
    return SEPARATOR in key
