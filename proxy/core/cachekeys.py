"""The query part of a cache key, as an operator configures it per origin (pure).

Modelled on Traffic Server's cachekey plugin (--sort-params, --include-params/--exclude-params,
--remove-all-params), nginx's proxy_cache_key and Cloudflare's "ignore/sort query string": a
rule only decides which of the pieces a client sent go into the key, and in which order; every
kept piece stays byte for byte as sent, so two keys are equal only when the origin saw the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Mapping

from proxy.core.config_error import ConfigError, shown
from proxy.core.signatures import SIGNATURE_PARAMS, canonical_name, param_name

__all__ = ["PRESETS", "QueryRule", "parse_query_rule"]

# Named sets of ignore patterns. "signed-urls": a presigned URL's signature and expiry change on
# every signing while the object does not, so they must not split the cache.
PRESETS: Mapping[str, tuple[str, ...]] = MappingProxyType({"signed-urls": SIGNATURE_PARAMS})

_QUERY_MODES = ("keep", "sort", "drop")
_KEYS = ("query", "ignore", "only", "preset")


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    """fnmatch-style, case-sensitive (fnmatchcase: fnmatch itself would fold case on Windows)."""
    return any(name == p or fnmatchcase(name, p) for p in patterns)


@dataclass(frozen=True, slots=True)
class QueryRule:
    """How the query of a request target becomes part of its cache key.

    ``only`` (when set) applies first, then ``ignore`` and the presets' patterns; a parameter is
    matched by its percent-decoded name (``signatures.param_name``), case-sensitively, except that
    AWS/GCS signature names, in names and patterns alike, match in any case (S3 and GCS read them so).
    """

    drop: bool = False  # drop the whole query from the key
    sort: bool = False  # sort the parameters (stable: by name, then in the order sent)
    ignore: tuple[str, ...] = ()  # names or fnmatch-style globs ("utm_*") left out of the key
    only: tuple[str, ...] | None = None  # if set: keep only these names/globs
    presets: tuple[str, ...] = ()  # named sets of ignore patterns (PRESETS)
    _ignored: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _only: tuple[str, ...] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = [p for p in self.presets if p not in PRESETS]
        if unknown:
            raise ValueError(f"unknown presets {unknown}; known: {sorted(PRESETS)}")
        ignored = self.ignore + tuple(n for p in self.presets for n in PRESETS[p])
        object.__setattr__(self, "_ignored", tuple(dict.fromkeys(canonical_name(p) for p in ignored)))
        only = None if self.only is None else tuple(canonical_name(p) for p in self.only)
        object.__setattr__(self, "_only", only)

    @property
    def identity(self) -> bool:
        """Nothing configured: every target is its own key (and the key stays what it was before rules)."""
        return not (self.drop or self.sort or self.ignore or self.presets) and self.only is None

    def key_target(self, target: str) -> str:
        """The request target (path and raw query, as sent: "/a/b?x=1&y=2") as it appears in the cache key.

        The path is untouched; the query is filtered and sorted; empty pieces ("a=1&&b=2") go, and
        an empty result drops the "?". Never raises: a name with bad escapes is compared raw.
        """
        if self.identity:
            return target
        path, question, query = target.partition("?")
        if not question or self.drop:
            return path
        named = [(param_name(p), p) for p in query.split("&") if p]
        if self._only is not None:
            only = self._only
            named = [(n, p) for n, p in named if _matches(n, only)]
        if self._ignored:
            ignored = self._ignored
            named = [(n, p) for n, p in named if not _matches(n, ignored)]
        if self.sort:
            named.sort(key=lambda np: np[0])  # list.sort is stable: equal names keep their order
        return f"{path}?{'&'.join(p for _, p in named)}" if named else path


def _patterns(value: object, key: str) -> tuple[str, ...]:
    """A TOML array of non-empty strings (names or globs)."""
    if not isinstance(value, (list, tuple)):
        raise ConfigError(key, f'must be an array of parameter names or globs, e.g. ["utm_*"] (got {shown(value)})')
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise ConfigError(key, f"must hold non-empty strings (got {shown(item)} at index {i})")
    return tuple(value)


def _presets(value: object, key: str) -> tuple[str, ...]:
    """One preset name or an array of them."""
    names = [value] if isinstance(value, str) else value
    known = ", ".join(f'"{p}"' for p in PRESETS)
    if not isinstance(names, (list, tuple)):
        raise ConfigError(key, f"must be a preset name or an array of them ({known}) (got {shown(value)})")
    for name in names:
        if not isinstance(name, str) or name not in PRESETS:
            raise ConfigError(key, f"must name presets among {known} (got {shown(name)})")
    return tuple(dict.fromkeys(names))


def parse_query_rule(table: Mapping[str, object], where: str) -> QueryRule:
    """A QueryRule from an origin's ``cache_key`` TOML table, e.g.
    ``{"query": "sort", "ignore": ["utm_*"], "preset": ["signed-urls"]}``.

    Keys: query = "keep" | "sort" | "drop" (default "keep"); ignore, only = arrays of names or
    globs; preset = a preset name or an array of them. Each mistake names its key as
    ``f"{where}.<key>"``; ``only`` with ``ignore`` is allowed (only first, then ignore), but either
    with query = "drop" is refused, as it could not have any effect.
    """
    for key in table:
        if key not in _KEYS:
            hint = f'did you mean query = "{key}"?' if key in _QUERY_MODES else f"known keys: {', '.join(_KEYS)}"
            raise ConfigError(f"{where}.{key}", f"unknown key; {hint}")
    mode = table.get("query", "keep")
    if mode not in _QUERY_MODES:
        allowed = " or ".join(f'"{m}"' for m in _QUERY_MODES)
        raise ConfigError(f"{where}.query", f"must be {allowed} (got {shown(mode)})")
    ignore = _patterns(table["ignore"], f"{where}.ignore") if "ignore" in table else ()
    only = _patterns(table["only"], f"{where}.only") if "only" in table else None
    if only == ():
        raise ConfigError(f"{where}.only", 'must name at least one parameter (to keep none: query = "drop")')
    presets = _presets(table["preset"], f"{where}.preset") if "preset" in table else ()
    if mode == "drop":
        for key in ("only", "ignore", "preset"):
            if key in table:
                raise ConfigError(f"{where}.{key}", 'has no effect with query = "drop" (no parameter is kept)')
    return QueryRule(drop=mode == "drop", sort=mode == "sort", ignore=ignore, only=only, presets=presets)
