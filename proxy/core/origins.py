"""Origins as configuration: the ``[[origin]]`` tables of the config file, checked (pure).

Each origin has a ``name`` (a metrics label, so a small fixed set), what requests it
takes (``hosts``, ``path_prefix``), its ``upstream`` URL or URLs (failover order), and
the settings where it differs from the global ones (:data:`OVERRIDABLE`). The single
``upstream = ...`` setting is one more origin, ``default``, that takes what no table
takes. Every mistake is a :class:`ConfigError` naming ``origin.<name>.<key>``.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

from proxy.core.cachekeys import QueryRule, parse_query_rule
from proxy.core.changes import check_feed_url
from proxy.core.config_error import ConfigError

__all__ = ["OriginConfig", "OriginTls", "AwsSigning", "OVERRIDABLE", "DEFAULT_NAME", "parse_origins",
           "default_origin", "host_matches", "check_feed_token"]

DEFAULT_NAME = "default"
# Global settings an [[origin]] table may set for itself (where origins differ in practice).
OVERRIDABLE = frozenset({
    "slice_size", "block_size", "default_ttl", "negative_ttl", "stale_if_error", "upstream_connect_timeout",
    "upstream_read_timeout", "upstream_connections", "drop_request_fields", "max_variants", "store_set_cookie",
    "readahead_slices", "max_run_slices", "max_ranges", "max_object_size",
})
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}", re.ASCII)
_HOST = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:.]+\]", re.ASCII)
_FIELD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", re.ASCII)  # a field name (RFC 9110 §5.1)
_VALUE = re.compile(r"[\x20-\x7e\x80-\xff]*", re.ASCII)  # a field value: no control characters (§5.5)
_PATH = re.compile(r"/[\x21-\x7e]*", re.ASCII)
_TOKEN = re.compile(r"[\x21-\x7e]+", re.ASCII)
# Fields a table may not add: the framing and the hop (the cache sets those itself).
_NOT_ADDED = frozenset({"host", "content-length", "transfer-encoding", "connection", "range", "te", "upgrade"})


@dataclass(frozen=True, slots=True)
class OriginTls:
    """How the proxy checks an origin's certificate, and the one it shows (mutual TLS)."""

    verify: bool = True
    ca_bundle: str = ""  # PEM file of the CAs to trust instead of the system's
    client_cert: str = ""  # PEM chain shown to an origin that asks for one
    client_key: str = ""  # its key, when it is not in client_cert's file


@dataclass(frozen=True, slots=True)
class AwsSigning:
    """AWS Signature Version 4 on every upstream request (private S3-style buckets)."""

    region: str
    service: str = "s3"
    access_key_id: str = ""  # empty: botocore's chain (environment, shared credentials file)
    secret_access_key: str = ""
    session_token: str = ""


@dataclass(frozen=True, slots=True)
class OriginConfig:
    """One origin: what it takes, where it fetches, and how it differs from the global settings."""

    name: str
    upstreams: tuple[str, ...]
    hosts: tuple[str, ...] = ()  # exact names or "*.example.org"; empty: any host
    path_prefix: str = "/"
    strip_prefix: bool = False
    host_header: str = ""  # the Host sent upstream; empty: the upstream URL's
    add_request_headers: tuple[tuple[str, str], ...] = ()
    bypass_paths: tuple[str, ...] = ()  # globs of request paths never served from or stored in the cache
    bypass_headers: tuple[str, ...] = ()  # request fields whose presence sends a request straight to the origin
    cache_key: QueryRule = QueryRule()
    tls: OriginTls = OriginTls()
    aws: AwsSigning | None = None
    failover_cooldown: float = 10.0  # seconds a failed upstream is tried last
    change_feed: str = ""  # ws:// URL of the origin's change feed: its announcements purge (proxy.cache.changefeed)
    change_feed_token: str = field(default="", repr=False)  # sent as "Authorization: Bearer <token>"
    overrides: tuple[tuple[str, Any], ...] = field(default=())  # (global key, value), checked

    @property
    def primary(self) -> str:
        """The first upstream: cache keys are made of it, so a failover never changes a key."""
        return self.upstreams[0]

    def bypasses(self, path: str, names: Sequence[str]) -> bool:
        """Does a request for ``path`` with these (lower-case) field names skip the cache?"""
        if any(fnmatch.fnmatchcase(path, g) for g in self.bypass_paths):
            return True
        return any(n in self.bypass_headers for n in names)


def default_origin(upstream: str, change_feed: str = "", change_feed_token: str = "") -> OriginConfig:
    """The origin the single ``upstream`` setting stands for: any host, any path."""
    return OriginConfig(DEFAULT_NAME, (upstream,), change_feed=change_feed, change_feed_token=change_feed_token)


def check_feed_token(feed: str, token: str, key: str) -> None:
    """A token needs a feed to be sent to."""
    if token and not feed:
        raise ConfigError(key, "needs change_feed to be set too (the feed the token is sent to)")


def host_matches(pattern: str, host: str) -> bool:
    """``*.example.org`` takes any name under example.org (not example.org itself)."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


Convert = Callable[[str, object, str], Any]  # (global key, value, key to name in errors) -> checked value


class _Table:
    """One [[origin]] table being read: every key taken is crossed off, what remains is unknown."""

    def __init__(self, table: Mapping[str, object], where: str) -> None:
        self.rest = dict(table)
        self.where = where

    def key(self, name: str) -> str:
        return f"{self.where}.{name}"

    def bad(self, name: str, allowed: str, value: object) -> ConfigError:
        return ConfigError(self.key(name), f"must be {allowed} (got {value!r})")

    def text(self, name: str, default: str, pattern: re.Pattern[str] | None = None, allowed: str = "") -> str:
        value = self.rest.pop(name, default)
        if not isinstance(value, str) or (pattern is not None and value and not pattern.fullmatch(value)):
            raise self.bad(name, allowed or "a string", value)
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.rest.pop(name, default)
        if not isinstance(value, bool):
            raise self.bad(name, "true or false", value)
        return value

    def texts(self, name: str, pattern: re.Pattern[str], allowed: str, lower: bool = False) -> tuple[str, ...]:
        value = self.rest.pop(name, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise self.bad(name, allowed, value)
        out = []
        for v in value:
            if not isinstance(v, str) or not pattern.fullmatch(v.lower() if lower else v):
                raise self.bad(name, allowed, v)
            out.append(v.lower() if lower else v)
        return tuple(out)

    def table(self, name: str) -> Mapping[str, object] | None:
        value = self.rest.pop(name, None)
        if value is not None and not isinstance(value, dict):
            raise self.bad(name, "a table", value)
        return value


def _upstreams(t: _Table, check_url: Callable[[str, str], str]) -> tuple[str, ...]:
    value = t.rest.pop("upstream", None)
    if value is None:
        raise ConfigError(t.key("upstream"), "required: the origin's base URL (or a list of them, for failover)")
    urls = [value] if isinstance(value, str) else value
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise t.bad("upstream", "a base URL or a non-empty list of them", value)
    out = tuple(check_url(u, t.key("upstream")) for u in urls)
    if len(set(out)) != len(out):
        raise ConfigError(t.key("upstream"), "lists one URL twice")
    return out


def _added_headers(t: _Table) -> tuple[tuple[str, str], ...]:
    table = t.table("add_request_headers") or {}
    out = []
    for name, value in table.items():
        key = t.key(f"add_request_headers.{name}")
        if not _FIELD.fullmatch(name) or name.lower() in _NOT_ADDED:
            raise ConfigError(key, "must be a field name other than Host, Range and the framing fields "
                              "(set Host with host_header)")
        if not isinstance(value, str) or not _VALUE.fullmatch(value):
            raise ConfigError(key, f"must be a string without control characters (got {value!r})")
        out.append((name, value))
    return tuple(out)


def _tls(t: _Table) -> OriginTls:
    return OriginTls(t.flag("tls_verify", True), t.text("ca_bundle", ""), t.text("client_cert", ""),
                     t.text("client_key", ""))


def _aws(t: _Table) -> AwsSigning | None:
    table = t.table("aws")
    if table is None:
        return None
    a = _Table(table, t.key("aws"))
    region = a.text("region", "", re.compile(r"[a-z0-9-]+"), "a region name like us-east-1 or auto")
    if not region:
        raise ConfigError(a.key("region"), "required: the bucket's region (e.g. us-east-1; auto for R2)")
    signing = AwsSigning(region, a.text("service", "s3", re.compile(r"[a-z0-9-]+"), "a service name like s3"),
                         a.text("access_key_id", ""), a.text("secret_access_key", ""), a.text("session_token", ""))
    if bool(signing.access_key_id) != bool(signing.secret_access_key):
        missing = "secret_access_key" if signing.access_key_id else "access_key_id"
        raise ConfigError(a.key(missing), "must be set too (or neither, for the environment's credentials)")
    if a.rest:
        raise ConfigError(a.key(sorted(a.rest)[0]), "unknown key; known: region, service, access_key_id, "
                          "secret_access_key, session_token")
    return signing


def _one(table: object, index: int, convert: Convert, check_url: Callable[[str, str], str]) -> OriginConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"origin[{index}]", "must be a table ([[origin]])")
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"origin[{index}].name", "required: 1 to 32 of a-z, 0-9, '_', '-' (a metrics label), "
                          f"got {name!r}")
    t = _Table(table, f"origin.{name}")
    t.rest.pop("name")
    upstreams = _upstreams(t, check_url)
    hosts = t.texts("hosts", _HOST, 'host names, exact or "*.example.org"', lower=True)
    prefix = t.text("path_prefix", "/", _PATH, 'a URL path starting with "/"') or "/"
    cooldown = convert("grace_period", t.rest.pop("failover_cooldown", 10.0), t.key("failover_cooldown"))
    feed = check_feed_url(t.rest.pop("change_feed", ""), t.key("change_feed"))
    feed_token = t.text("change_feed_token", "", _TOKEN, "a token of visible ASCII characters, no blanks")
    check_feed_token(feed, feed_token, t.key("change_feed_token"))
    cfg = OriginConfig(
        name, upstreams, hosts, prefix, t.flag("strip_prefix", False),
        t.text("host_header", "", _HOST, "a host name, with a port if needed"),
        _added_headers(t),
        t.texts("bypass_paths", _PATH, 'path globs starting with "/", e.g. "/live/*"'),
        t.texts("bypass_headers", _FIELD, "field names", lower=True),
        parse_query_rule(t.table("cache_key") or {}, t.key("cache_key")),
        _tls(t), _aws(t), cooldown,
    )
    overrides = []
    for key in sorted(t.rest):
        if key not in OVERRIDABLE:
            raise ConfigError(t.key(key), "unknown key in an [[origin]] table; known: name, upstream, hosts, "
                              "path_prefix, strip_prefix, host_header, add_request_headers, bypass_paths, "
                              "bypass_headers, cache_key, tls_verify, ca_bundle, client_cert, client_key, aws, "
                              "failover_cooldown, change_feed, change_feed_token, " + ", ".join(sorted(OVERRIDABLE)))
        overrides.append((key, convert(key, t.rest[key], t.key(key))))
    if cfg.strip_prefix and prefix == "/":
        raise ConfigError(t.key("strip_prefix"), "needs a path_prefix other than \"/\"")
    return replace(cfg, overrides=tuple(overrides), change_feed=feed, change_feed_token=feed_token)


def parse_origins(value: object, convert: Convert, check_url: Callable[[str, str], str]) -> tuple[OriginConfig, ...]:
    """The ``[[origin]]`` tables, checked one by one and against each other."""
    if not isinstance(value, list):
        raise ConfigError("origin", "must be [[origin]] tables (an array of tables)")
    origins = tuple(_one(table, i + 1, convert, check_url) for i, table in enumerate(value))
    seen: dict[str, str] = {}
    for o in origins:
        if o.name == DEFAULT_NAME:
            raise ConfigError(f"origin.{o.name}.name", f'"{DEFAULT_NAME}" is the origin of the upstream setting')
        if o.name in seen:
            raise ConfigError(f"origin.{o.name}.name", "names two origins")
        seen[o.name] = o.name
    primaries: dict[str, str] = {}
    for o in origins:
        if o.primary in primaries:
            # One upstream is one cache key space: two origins on it would share keys with their own settings.
            raise ConfigError(f"origin.{o.name}.upstream", f"{o.primary} is origin {primaries[o.primary]}'s "
                              "first upstream already; give that origin more hosts instead")
        primaries[o.primary] = o.name
    routes: dict[tuple[str, str], str] = {}
    for o in origins:
        for host in o.hosts or ("",):
            where = (host, o.path_prefix)
            if where in routes:
                raise ConfigError(f"origin.{o.name}.path_prefix", f"origin {routes[where]} already takes "
                                  f"{host or 'any host'} under {o.path_prefix}")
            routes[where] = o.name
    return origins
