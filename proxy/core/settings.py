"""Proxy settings: defaults < TOML file < environment < command line.

A pure module (stdlib ``tomllib``/``argparse``/``dataclasses`` only; no I/O
framework, nothing that imports ``socket``), so every rule is unit-tested.

* The TOML file is read only when named: ``--config FILE`` or
  ``$RANGEPROXY_CONFIG``.  Without one, the defaults apply (``upstream`` is
  still required from somewhere).  ``config/proxy.toml`` documents every key.
* Environment variables are ``RANGEPROXY_<KEY>``, e.g. ``RANGEPROXY_SLICE_SIZE``.
* Command line: a few dedicated flags (``--port``, ``--slice-size``, ...) and a
  generic, repeatable ``--set KEY=VALUE`` for any key.

Values from the TOML file keep their TOML types and are type-checked (an
integer where a string is wanted is an error); environment and command-line
values are strings parsed per field.  Sizes accept ``1MiB``, ``512KiB``,
``1.5GiB``, ``10GB`` or plain bytes; durations accept seconds or ``500ms``,
``30s``, ``5m``, ``1h``, ``1d``.

Every mistake is a :class:`ConfigError` naming the key and what is allowed; an
unknown key (in the file, the environment or ``--set``) suggests the closest
known one.  The caller prints ``rangeproxy: config error: <error>`` and exits 2.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
import sys
import tomllib
from dataclasses import MISSING, dataclass, field, fields, replace
from fractions import Fraction
from typing import Any, Callable, Mapping, Sequence, TypeVar

from proxy.core.config_error import ConfigError, shown as _got
from proxy.core.changes import check_feed_url
from proxy.http.target import split_absolute_url
from proxy.core.origins import OriginConfig, check_feed_token, default_origin, parse_origins

__all__ = [
    "Settings",
    "ConfigError",
    "load",
    "parse_size",
    "parse_duration",
    "format_size",
    "format_duration",
    "settings_from_mapping",
    "build_arg_parser",
    "field_names",
    "ENV_PREFIX",
    "CONFIG_ENV",
]

ENV_PREFIX = "RANGEPROXY_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
# RANGEPROXY_* variables that belong to other programs of this project and are
# not proxy settings (the demo origin reads its media directory from this one).
FOREIGN_ENV = frozenset({ENV_PREFIX + "MEDIA_DIR"})

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB
YEAR = 365 * 86400.0

_SIZE_UNITS: dict[str, int | Fraction] = {
    "": 1, "b": 1,
    "kib": KiB, "mib": MiB, "gib": GiB, "tib": TiB,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
}
_DURATION_UNITS: dict[str, int | Fraction] = {"": 1, "ms": Fraction(1, 1000), "s": 1, "m": 60, "h": 3600, "d": 86400}
# Strict: ASCII digits, an optional fraction, optional blanks, an optional unit.
# No sign, no exponent, no "_", no ".5" or "5." (str.isdigit / float() accept far more).
_NUMBER_UNIT = re.compile(r"[ \t]*([0-9]+(?:\.[0-9]+)?)[ \t]*([A-Za-z]*)[ \t]*", re.ASCII)
_INTEGER = re.compile(r"[ \t]*([+-]?[0-9]+)[ \t]*", re.ASCII)
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("combined", "json")


# --- sizes and durations --------------------------------------------------------


def _number_with_unit(text: str, units: Mapping[str, int | Fraction]) -> Fraction:
    """``text`` (a number and an optional unit) as an exact number times the unit's multiplier.

    ValueError when ``text`` is not a number followed by one of ``units`` (case-insensitive).
    """
    m = _NUMBER_UNIT.fullmatch(text)
    if m is None:
        raise ValueError(text)
    number, unit = m.groups()
    mult = units.get(unit.lower())
    if mult is None:
        raise ValueError(text)
    return Fraction(number) * mult


def _parse_size(value: object) -> int:
    """Bytes from ``value``; ValueError when it is not a size."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(value)
        return value
    # Exact arithmetic; a fractional byte count ("1.3GiB") is rounded down.
    return math.floor(_number_with_unit(value, _SIZE_UNITS))


def _parse_duration(value: object) -> float:
    """Seconds from ``value``; ValueError when it is not a duration."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        seconds = float(value)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(value)
        return seconds
    return float(_number_with_unit(value, _DURATION_UNITS))


# The field kinds whose values are a number with a unit, and their parsers.
_UNIT_PARSERS: dict[str, Callable[[object], float]] = {"size": _parse_size, "duration": _parse_duration}
_N = TypeVar("_N", int, float)


def _parse_or_raise(parse: Callable[[object], _N], value: object, key: str, allowed: str) -> _N:
    """``parse(value)``; a :class:`ConfigError` naming ``key`` and what is ``allowed`` when it fails."""
    try:
        return parse(value)
    except ValueError:
        raise ConfigError(key, f"must be {allowed} (got {_got(value)})") from None


def parse_size(text: str | int, *, key: str = "size") -> int:
    """Bytes from ``"1MiB"``, ``"512 KiB"``, ``"1.5GiB"``, ``"10GB"``, ``"1048576"`` or ``1048576``.

    Units (case-insensitive): B, KiB, MiB, GiB, TiB (powers of 1024) and
    KB, MB, GB, TB (powers of 1000); no unit means bytes.  A fraction is
    allowed before a unit and the result is rounded down to whole bytes.
    Anything else (signs, exponents, "1M", "1.", "") raises :class:`ConfigError`.
    """
    return _parse_or_raise(_parse_size, text, key, "a size like 1MiB, 512KiB, 1.5GiB, 10GB or 1048576")


def parse_duration(text: str | float, *, key: str = "duration") -> float:
    """Seconds from a number (``30``, ``0.5``) or ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"``.

    Units are case-insensitive; no unit means seconds.  Negative, infinite and
    NaN values and anything else raise :class:`ConfigError`.
    """
    return _parse_or_raise(_parse_duration, text, key, "a duration like 30, 0.5, 500ms, 30s, 5m, 1h or 1d")


def format_size(n: int) -> str:
    """``4096`` -> ``"4KiB"``: the largest binary unit that divides ``n`` exactly."""
    for name, unit in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n and n % unit == 0:
            return f"{n // unit}{name}"
    return f"{n}B"


def format_duration(seconds: float) -> str:
    """``3600`` -> ``"1h"``, ``0.5`` -> ``"500ms"``: the largest unit that divides exactly."""
    if seconds == 0:
        return "0s"
    for name, unit in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds % unit == 0:
            return f"{int(seconds // unit)}{name}"
    return f"{seconds * 1000:g}ms"


def _format_value(kind: str, value: Any) -> str:
    """A field's value as it is written in the config: sizes and durations with their unit."""
    if kind == "size":
        return format_size(value)
    if kind == "duration":
        return format_duration(value)
    return str(value)


# --- the settings ---------------------------------------------------------------
#
# Each field's metadata says how to parse and check it:
#   kind: url | feedurl | str | path | optpath | route | prefix | token | nodename | level | fieldnames | int | size | duration | bool
#   lo, hi: inclusive bounds (int/size/duration); lo_open: lo itself is excluded
#   help: one line for --help and the docs


def _f(default: Any, kind: str, help: str, lo: Any = None, hi: Any = None,
       lo_open: bool = False) -> Any:
    meta = {"kind": kind, "help": help, "lo": lo, "hi": hi, "lo_open": lo_open}
    if default is MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated proxy settings; build with :func:`load` (or :func:`settings_from_mapping`)."""

    upstream: str = _f("", "url",
                       "origin base URL (http:// or https://, no query or fragment): the default origin, "
                       "for what no [[origin]] table takes")
    origin: tuple[OriginConfig, ...] = _f((), "origins", "[[origin]] tables: origins by Host and path prefix")
    change_feed: str = _f("", "feedurl",
                          "ws:// or wss:// URL of the upstream origin's change feed: each file it announces as "
                          "changed is purged at once (empty: none; an [[origin]] table sets its own)")
    change_feed_token: str = _f("", "token", "token sent to change_feed as Authorization: Bearer <token>")
    host: str = _f("127.0.0.1", "str", "address to listen on")
    port: int = _f(8080, "int", "port to listen on (0: pick a free port)", 0, 65535)
    tls_cert: str = _f("", "optpath", "PEM certificate chain for HTTPS on tls_port (empty: no HTTPS listener)")
    tls_key: str = _f("", "optpath", "PEM private key of tls_cert")
    tls_port: int = _f(8443, "int", "port of the HTTPS listener, beside port (0: pick a free port)", 0, 65535)
    cache_dir: str = _f("data/cache", "path", "directory of the slice cache (diskcache)")
    slice_size: int = _f(1 * MiB, "size", "bytes per cached slice", 4 * KiB, 64 * MiB)
    block_size: int = _f(16 * KiB, "size",
                         "bytes per block fetched for small random reads (divides slice_size; "
                         ">= slice_size turns blocks off)", 1 * KiB, 64 * MiB)
    cache_size: int = _f(10 * GiB, "size",
                         "cache size limit in bytes, LRU eviction (>= 4 * slice_size)",
                         16 * MiB, 1024 * TiB)
    max_ranges: int = _f(100, "int", "ranges in one Range header before it is ignored", 1, 1000)
    max_run_slices: int = _f(16, "int",
                             "contiguous missing slices fetched in one upstream request", 1, 1024)
    readahead_slices: int = _f(4, "int", "slices prefetched ahead of a sequential reader", 0, 64)
    default_ttl: float = _f(300.0, "duration",
                            "freshness when the origin gives no max-age/Expires", 0.0, YEAR)
    negative_ttl: float = _f(60.0, "duration",
                             "freshness of a stored 404, 410, 405, 414 or 501 when the origin gives none "
                             "(0: not stored without the origin's own freshness)", 0.0, YEAR)
    max_object_size: int = _f(0, "size", "objects larger than this are passed through, not cached (0: no limit)",
                              0, 1024 * TiB)
    stale_if_error: float = _f(0.0, "duration",
                               "how long past expiry an object may answer when its revalidation fails and the "
                               "origin sent no stale-if-error (0: never)", 0.0, YEAR)
    upstream_connect_timeout: float = _f(5.0, "duration", "timeout connecting to the origin",
                                         0.0, None, lo_open=True)
    upstream_read_timeout: float = _f(30.0, "duration", "timeout between bytes from the origin",
                                      0.0, None, lo_open=True)
    upstream_connections: int = _f(64, "int", "connection pool size to the origin", 1, 10000)
    grace_period: float = _f(10.0, "duration",
                             "time to finish in-flight responses on SIGTERM", 0.0, 3600.0)
    drain_period: float = _f(0.0, "duration",
                             "after SIGTERM, time the node keeps serving while /healthz answers 503 draining, "
                             "so a balancer takes it out before it stops (0: stop at once)", 0.0, 3600.0)
    node_name: str = _f("", "nodename",
                        "this node's name, sent as X-Cache-Node on every response and shown in /stats "
                        "(empty: the host name)")
    store_threads: int = _f(4, "int", "threads doing cache I/O off the event loop", 1, 64)
    scrub_rate: int = _f(8 * MiB, "size",
                         "bytes a second the background scrubber reads slice files back to compare their "
                         "checksums (0: off; with several workers, the first one scrubs)", 0, 64 * GiB)
    fill_memory: int = _f(16 * MiB, "size",
                          "bytes of slices being filled or waiting for the disk, held in memory at once "
                          "(per worker; runs wait for room)", 64 * KiB, 64 * GiB)
    log_level: str = _f("info", "level", "log level: " + ", ".join(LOG_LEVELS))
    access_log_format: str = _f("combined", "logformat",
                                "access log line format: combined (+ cache fields) or json")
    access_log: bool = _f(True, "bool", "log one line per request")
    workers: int = _f(1, "int", "processes sharing the port and the cache dir", 1, 64)
    listen_backlog: int = _f(4096, "int",
                             "connections the kernel queues for accept per listening socket (capped by "
                             "net.core.somaxconn)", 1, 65535)
    header_timeout: float = _f(60.0, "duration",
                               "time a client has to send a whole request head, from its first byte (408 and "
                               "closed after)", 0.0, 3600.0, lo_open=True)
    keepalive_timeout: float = _f(75.0, "duration",
                                  "an idle client connection (no request under way, none begun) is closed after this",
                                  0.0, 3600.0, lo_open=True)
    max_connections: int = _f(10000, "int",
                              "client connections open at once per worker; beyond it a new one gets 503 and is "
                              "closed at once", 1, 1_000_000)
    admin_token: str = _f("", "token", "token for purge (DELETE <purge_prefix>...); empty: no purge")
    protect_stats: bool = _f(False, "bool", "stats and metrics need the admin token too")
    stats_path: str = _f("/stats", "route", "stats page (JSON at the same path + .json)")
    metrics_path: str = _f("/metrics", "route", "Prometheus metrics")
    health_path: str = _f("/healthz", "route", "health check")
    purge_prefix: str = _f("/_cache/", "prefix", "DELETE <purge_prefix><path> purges <path>")
    drop_request_fields: str = _f("", "fieldnames",
                                  "client request fields never sent to the origin (comma-separated; hop-by-hop "
                                  "fields and those the cache controls are never sent with its fetches)")
    max_variants: int = _f(8, "int", "variants of one URL stored at once (Vary), least recently used dropped",
                           1, 1000)
    store_set_cookie: bool = _f(False, "bool",
                                "store responses that set a cookie (never their Set-Cookie, which goes "
                                "only to the client that caused it)")

    def dropped_request_fields(self) -> tuple[str, ...]:
        """``drop_request_fields`` as lower-case names."""
        return tuple(n for n in self.drop_request_fields.split(",") if n)

    @property
    def origins(self) -> tuple[OriginConfig, ...]:
        """Every origin: the [[origin]] tables, then the default one of ``upstream`` (if set)."""
        return self.origin + ((default_origin(self.upstream, self.change_feed, self.change_feed_token),)
                              if self.upstream else ())

    def of_origin(self, origin: OriginConfig) -> Settings:
        """The settings an origin's engine runs with: these, with the origin's own values."""
        return replace(self, upstream=origin.primary, origin=(), **dict(origin.overrides))

    def describe(self) -> dict[str, Any]:
        """All values, for logging; a set ``admin_token`` or ``change_feed_token`` is shown as ``"***"``."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for secret in ("admin_token", "change_feed_token"):
            if out[secret]:
                out[secret] = "***"
        return out


_FIELDS = {f.name: f for f in fields(Settings)}


def field_names() -> tuple[str, ...]:
    """Every settings key, in declaration order."""
    return tuple(_FIELDS)


def _allowed(name: str) -> str:
    """What ``name`` must be, as the end of "must be ..."."""
    meta = _FIELDS[name].metadata
    kind, lo, hi, lo_open = meta["kind"], meta["lo"], meta["hi"], meta["lo_open"]
    if kind == "origins":
        return "[[origin]] tables in the config file"
    if kind == "url":
        return ("an http:// or https:// base URL with a host and no query, fragment or "
                "credentials, e.g. http://127.0.0.1:8081")
    if kind == "feedurl":
        return "a ws:// or wss:// URL such as ws://127.0.0.1:8081/_events, or empty"
    if kind == "str":
        return "a non-empty string without blanks"
    if kind == "path":
        return "a non-empty directory path"
    if kind == "optpath":
        return "a file path (empty: none)"
    if kind == "route":
        return 'a URL path starting with "/" (no blanks, "?" or "#")'
    if kind == "prefix":
        return 'a URL path starting and ending with "/" (no blanks, "?" or "#")'
    if kind == "token":
        return "a string of visible ASCII characters without blanks (empty: disabled)"
    if kind == "nodename":
        return f"at most {NODE_NAME_MAX} visible ASCII characters without blanks (empty: the host name)"
    if kind == "level":
        return "one of " + ", ".join(LOG_LEVELS)
    if kind == "logformat":
        return "one of " + ", ".join(LOG_FORMATS)
    if kind == "bool":
        return "true or false (or 1/0, yes/no)"
    if kind == "fieldnames":
        return 'header field names separated by commas, e.g. "Cookie, X-Debug" (empty: none)'
    if kind == "int":
        return f"an integer between {lo} and {hi}"
    if kind == "size":
        return f"a size between {format_size(lo)} and {format_size(hi)}"
    if kind == "duration":
        if lo_open and hi is None:
            return "a duration > 0, e.g. 5s or 500ms"
        return f"a duration between {format_duration(lo)} and {format_duration(hi)}"
    raise AssertionError(kind)


def _bad(name: str, value: object, source: str | None) -> ConfigError:
    where = f" from {source}" if source else ""
    return ConfigError(name, f"must be {_allowed(name)} (got {_got(value)}{where})")


_VISIBLE = re.compile(r"[\x21-\x7e]+", re.ASCII)
NODE_NAME_MAX = 64  # a node name goes into a response field on every answer: short


def host_name() -> str:
    """The host's name, as ``socket.gethostname()`` gives it on Linux (the kernel's nodename;
    ``socket`` itself stays out of this pure module)."""
    return os.uname().nodename


def check_node_name(value: str) -> bool:
    """A node name: 1 to 64 visible ASCII characters (a response field value, a label)."""
    return len(value) <= NODE_NAME_MAX and _VISIBLE.fullmatch(value) is not None
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", re.ASCII)  # a field name (RFC 9110 §5.1)
_ROUTE = re.compile(r"/[\x21-\x7e]*", re.ASCII)


def _convert(name: str, value: object, typed: bool, source: str | None) -> Any:
    """Parse and check one value.

    ``typed``: ``value`` comes from TOML (or Python) and must already have the
    field's type; otherwise it is a string from the environment or the CLI.
    """
    meta = _FIELDS[name].metadata
    kind = meta["kind"]
    bad = _bad(name, value, source)
    if kind == "origins":
        if not typed:
            raise ConfigError(name, "[[origin]] tables are read from the config file only")
        if isinstance(value, tuple):  # already checked (settings_from_mapping after load)
            return value
        return parse_origins(value, _convert_in_origin, _check_url_in_origin)
    if kind in ("url", "feedurl", "str", "path", "optpath", "route", "prefix", "token", "nodename", "level",
                "logformat", "fieldnames"):
        if kind == "fieldnames" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = ",".join(value)  # a TOML array of names
        if not isinstance(value, str):
            raise bad
        return _check_text(kind, value, bad)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if typed or not isinstance(value, str):
            raise bad
        parsed = _BOOLS.get(value.strip().lower())
        if parsed is None:
            raise bad
        return parsed
    n: float  # an int for int and size
    if kind == "int":
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            n = value
        elif not typed and isinstance(value, str) and (m := _INTEGER.fullmatch(value)):
            n = int(m.group(1))
        else:
            raise bad
    elif kind in _UNIT_PARSERS:
        try:
            n = _UNIT_PARSERS[kind](value)
        except ValueError:
            raise bad from None
    else:
        raise AssertionError(kind)
    lo, hi = meta["lo"], meta["hi"]
    if lo is not None and (n <= lo if meta["lo_open"] else n < lo):
        raise bad
    if hi is not None and n > hi:
        raise bad
    return n


def _convert_in_origin(name: str, value: object, key: str) -> Any:
    """A global setting's value as an [[origin]] table gives it; errors name the table's key."""
    try:
        return _convert(name, value, True, None)
    except ConfigError as exc:
        raise ConfigError(key, exc.message) from None


def _check_url_in_origin(value: str, key: str) -> str:
    return _check_upstream(value, ConfigError(key, f"must be {_allowed('upstream')} (got {_got(value)})"))


def _check_text(kind: str, value: str, bad: ConfigError) -> str:
    if kind == "url":
        return _check_upstream(value, bad)
    if kind == "feedurl":
        try:
            return check_feed_url(value, bad.key)
        except ConfigError:
            raise bad from None
    if kind == "str":
        if not _VISIBLE.fullmatch(value):
            raise bad
        return value
    if kind == "path":
        if not value or "\x00" in value:
            raise bad
        return value
    if kind == "optpath":
        if "\x00" in value:
            raise bad
        return value
    if kind in ("route", "prefix"):
        if not _ROUTE.fullmatch(value) or "?" in value or "#" in value:
            raise bad
        if kind == "prefix" and not value.endswith("/"):
            raise bad
        return value
    if kind == "token":
        if value and not _VISIBLE.fullmatch(value):
            raise bad
        return value
    if kind == "nodename":
        if value and not check_node_name(value):
            raise bad
        return value
    if kind == "level":
        level = value.strip().lower()
        if level not in LOG_LEVELS:
            raise bad
        return level
    if kind == "fieldnames":
        names = [n.strip().lower() for n in value.split(",")]
        if names == [""]:
            return ""
        if not all(_TOKEN.fullmatch(n) for n in names):
            raise bad
        return ",".join(names)
    if kind == "logformat":
        fmt = value.strip().lower()
        if fmt not in LOG_FORMATS:
            raise bad
        return fmt
    raise AssertionError(kind)


def _check_upstream(value: str, bad: ConfigError) -> str:
    """``value`` normalised: scheme lower-cased, trailing slashes stripped."""
    if not _VISIBLE.fullmatch(value) or "?" in value or "#" in value:
        raise bad
    parts = split_absolute_url(value, ("http", "https"))
    if parts is None:
        raise bad
    scheme = parts.scheme.lower()
    if not value.lower().startswith(scheme + "://"):
        raise bad
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _check_slices(values: Mapping[str, Any], key: str, where: Callable[[str], str]) -> None:
    """Slice and block sizes fit the cache (``key``: the table whose values these are)."""
    slice_size, cache_size = values["slice_size"], values["cache_size"]
    if cache_size < 4 * slice_size and key:  # a table's slice size is what is too large
        raise ConfigError(key + "slice_size", f"must be at most cache_size / 4 = {format_size(cache_size // 4)} "
                          f"(got {format_size(slice_size)})")
    if cache_size < 4 * slice_size:
        raise ConfigError("cache_size", f"must be at least 4 * slice_size = {format_size(4 * slice_size)} "
                          f"(got {format_size(cache_size)}{where('cache_size')})")
    block_size = values["block_size"]
    if block_size < slice_size and slice_size % block_size:
        raise ConfigError(
            key + "block_size",
            f"must divide slice_size = {format_size(slice_size)} "
            f"(got {format_size(block_size)}{where('block_size')})",
        )


def _check_together(values: Mapping[str, Any], sources: Mapping[str, str | None]) -> None:
    """Rules between fields, checked on the final values."""

    def where(name: str) -> str:
        return f" from {sources[name]}" if sources.get(name) else ""

    _check_slices(values, "", where)
    for o in values["origin"]:
        _check_slices({**values, **dict(o.overrides)}, f"origin.{o.name}.", lambda name: "")
        if o.primary == values["upstream"]:
            # One upstream is one cache key space (as between two tables, proxy.core.origins).
            raise ConfigError("upstream", f"{o.primary} is origin {o.name}'s first upstream already; "
                              f"leave upstream unset, or give origin {o.name} no hosts for it to take any host")
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        missing = "tls_key" if values["tls_cert"] else "tls_cert"
        raise ConfigError(missing, "must be set too: HTTPS needs both tls_cert and tls_key")
    if values["tls_cert"] and values["tls_port"] and values["tls_port"] == values["port"]:
        raise ConfigError("tls_port", f"must differ from port (both are {values['port']})")
    check_feed_token(values["change_feed"], values["change_feed_token"], "change_feed_token")
    if values["change_feed"] and not values["upstream"]:
        raise ConfigError("change_feed", "is the feed of the upstream setting's origin, and upstream is not set; "
                          "give each [[origin]] table its own change_feed")
    if values["protect_stats"] and not values["admin_token"]:
        raise ConfigError(
            "protect_stats",
            "needs admin_token to be set (otherwise the stats could never be read)",
        )
    prefix = values["purge_prefix"]
    taken: dict[str, str] = {}
    for name in ("stats_path", "metrics_path", "health_path"):
        path = values[name]
        paths = (path, path + ".json") if name == "stats_path" else (path,)
        for p in paths:
            if p in taken:
                raise ConfigError(name, f'must differ from {taken[p]} (both serve "{p}")')
            if p.startswith(prefix):
                raise ConfigError(name, f'must not be under purge_prefix "{prefix}" (got "{path}")')
            taken[p] = name


def _unknown(key: str, where: str, prefix: str = "", extra: Sequence[str] = ()) -> ConfigError:
    """``key`` is not a setting; suggest the closest one (``prefix`` for env names)."""
    known = list(field_names()) + list(extra)
    bare = key[len(prefix):].lower() if prefix else key
    close = difflib.get_close_matches(bare, known, n=1, cutoff=0.6)
    if close:
        suggestion = f"did you mean {prefix}{close[0].upper() if prefix else close[0]}?"
    else:
        names = [prefix + k.upper() for k in known] if prefix else known
        suggestion = "known keys: " + ", ".join(names)
    return ConfigError(key, f"unknown key {where}; {suggestion}")


def settings_from_mapping(
    values: Mapping[str, Any], sources: Mapping[str, str | None] | None = None,
    *, typed: bool = True,
) -> Settings:
    """Settings from ``values`` (missing keys take their defaults), fully checked.

    ``typed=True``: the values already have their types (TOML / Python);
    sizes and durations may still be strings like ``"1MiB"`` / ``"5s"``.
    """
    sources = sources or {}
    for key in values:
        if key not in _FIELDS:
            raise _unknown(key, "in settings")
    if not values.get("upstream") and not values.get("origin"):
        raise ConfigError("upstream", "required: the origin base URL, e.g. http://127.0.0.1:8081 "
                          "(or [[origin]] tables in the config file)")
    final: dict[str, Any] = {}
    for name, f in _FIELDS.items():
        if name in values:
            final[name] = _convert(name, values[name], typed, sources.get(name))
        else:
            final[name] = f.default
    if not final["node_name"]:  # the default: the host name, which must make a node name too
        final["node_name"] = host = host_name()
        if not check_node_name(host):
            raise ConfigError("node_name", f"is not set and the host name {_got(host)} cannot be one: set it to "
                              f"{_allowed('node_name')}")
    _check_together(final, sources)
    return Settings(**final)


# --- sources ----------------------------------------------------------------------

# Dedicated command-line flags; any key can also be given with --set KEY=VALUE.
_FLAGS = (
    "upstream", "host", "port", "cache_dir", "slice_size", "cache_size", "workers",
    "log_level", "max_run_slices", "readahead_slices", "default_ttl",
)


def _set_item(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def build_arg_parser() -> argparse.ArgumentParser:
    """The ``rangeproxy`` command line (values stay strings; :func:`load` parses them)."""
    p = argparse.ArgumentParser(
        prog="rangeproxy",
        description="Reverse caching proxy for HTTP Range requests: fetches fixed-size "
        "slices from the origin and caches them on disk.",
        epilog="Precedence: command line > environment (RANGEPROXY_<KEY>, e.g. "
        "RANGEPROXY_SLICE_SIZE) > config file > defaults. Sizes: 1MiB, 512KiB, 10GB, "
        "1048576. Durations: 30, 500ms, 30s, 5m, 1h. Keys: " + ", ".join(field_names()) + ".",
        allow_abbrev=False,
    )
    p.add_argument("--config", metavar="FILE",
                   help=f"TOML config file (default: ${CONFIG_ENV}, else none)")
    for name in _FLAGS:
        f = _FIELDS[name]
        helptext = f.metadata["help"]
        if f.default is not MISSING:
            helptext += f" (default: {_format_value(f.metadata['kind'], f.default)})"
        p.add_argument("--" + name.replace("_", "-"), dest=name, metavar=name.upper(),
                       help=helptext)
    p.add_argument("--set", dest="overrides", action="append", type=_set_item, default=[],
                   metavar="KEY=VALUE", help="set any key (repeatable), e.g. --set admin_token=s3cret")
    return p


def _from_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as e:
        raise ConfigError("config", f"cannot read {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("config", f"{path} is not valid TOML: {e}") from None
    for key in data:
        if key not in _FIELDS:
            raise _unknown(key, f"in {path}")
    return data


def _from_env(environ: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV or var in FOREIGN_ENV:
            continue
        name = var[len(ENV_PREFIX):].lower()
        if name not in _FIELDS or var != ENV_PREFIX + name.upper():
            raise _unknown(var, "in the environment", ENV_PREFIX, ["config"])
        out[name] = value
    return out


def load(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the command line, environment, config file and defaults.

    ``argv`` defaults to ``sys.argv[1:]``, ``environ`` to ``os.environ``.
    argparse errors exit 2 (``--help`` exits 0); everything else is a
    :class:`ConfigError`.
    """
    if argv is None:
        argv = sys.argv[1:]
    if environ is None:
        environ = os.environ
    args = build_arg_parser().parse_args(list(argv))

    cli: dict[str, str] = {}
    cli_src: dict[str, str] = {}
    for key, value in args.overrides:
        if key == "config":
            raise ConfigError("config", "use --config FILE, not --set config=...")
        if key not in _FIELDS:
            raise _unknown(key, "in --set")
        cli[key], cli_src[key] = value, f"--set {key}"
    for name in _FLAGS:
        value = getattr(args, name)
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if name in cli and cli[name] != value:
            raise ConfigError(name, f"given twice on the command line ({flag} and --set {name})")
        cli[name], cli_src[name] = value, flag

    env = _from_env(environ)
    config_path = args.config if args.config is not None else environ.get(CONFIG_ENV) or None
    file_values = _from_file(config_path) if config_path else {}

    # Convert each layer with its own typing rules, then merge by precedence.
    merged: dict[str, Any] = {}
    sources: dict[str, str | None] = {}
    for name, value in file_values.items():
        merged[name] = _convert(name, value, True, config_path)
        sources[name] = config_path
    for name, value in env.items():
        merged[name] = _convert(name, value, False, ENV_PREFIX + name.upper())
        sources[name] = ENV_PREFIX + name.upper()
    for name, value in cli.items():
        merged[name] = _convert(name, value, False, cli_src[name])
        sources[name] = cli_src[name]
    return settings_from_mapping(merged, sources, typed=True)
