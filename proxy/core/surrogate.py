"""Surrogate-Control (W3C Edge Architecture 1.0): an origin's directives for reverse proxies.

Pure. A surrogate announces itself on its requests (``Surrogate-Capability``); the
origin's ``Surrogate-Control`` directives for all surrogates, or targeted at this one
(``;rangeproxy``), then decide storing and lifetime in place of ``Cache-Control``.
"""

from __future__ import annotations

from typing import Mapping

from proxy.core.fields import CACHE_NAME

__all__ = ["DEVICE", "CAPABILITY", "surrogate_directives"]

DEVICE = CACHE_NAME  # this surrogate's device token
CAPABILITY = f'{DEVICE}="Surrogate/1.0"'  # what it announces in Surrogate-Capability


def surrogate_directives(response: Mapping[str, str]) -> dict[str, str | None] | None:
    """The Surrogate-Control directives that apply here (lower-case names; targeted ones win
    over untargeted ones), or None without a Surrogate-Control field."""
    getall = getattr(response, "getall", None)
    lines = getall("Surrogate-Control", []) if getall is not None else [response.get("Surrogate-Control")]
    if not any(line is not None for line in lines):
        return None
    value = ", ".join(line for line in lines if line is not None)
    general: dict[str, str | None] = {}
    mine: dict[str, str | None] = {}
    for item in value.split(","):
        directive, _, target = item.partition(";")
        raw, eq, arg = directive.strip().partition("=")
        name = raw.lower()
        if not name or name != name.strip() or (eq and (not arg or arg != arg.strip())):
            continue  # "max-age = 5" is not a max-age
        where = general if not target else mine if target.strip() == DEVICE else None
        if where is not None:
            where.setdefault(name, arg.strip('"') if eq else None)
    return {**general, **mine}
