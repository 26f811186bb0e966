"""Settings for ``python -m appserver``: a TOML file, overridden by command-line flags.

The file (default ``config/appserver.toml``, relative to the working directory;
a missing default file just means "all defaults") holds top-level keys:

    media_dir = "media"      # directory to serve; relative to the working directory
    host = "127.0.0.1"
    port = 8081
    server = "aiohttp"       # "aiohttp" | "granian" | "hypercorn" | "h3" (HTTP/3 + WebTransport on UDP)
    cors_origin = "*"        # optional: send CORS headers (see appserver.app); off by default
    events_token = "s3cret"  # optional: turns on the change feed at /_events (appserver.events)
    certfile = "cert.pem"    # optional, with keyfile: TLS; server = "hypercorn" (HTTP/2 by ALPN) or "h3" (required)
    keyfile = "key.pem"

``--config --media-dir --host --port --server --cors-origin --events-token --certfile --keyfile`` win over
the file. A bad value exits with a message naming the key (``SystemExit`` via :class:`ConfigError`).
``certfile`` and ``keyfile`` go together and must load as a certificate chain and its key; h3 requires
them (QUIC is always TLS), and with another server than hypercorn or h3 they are refused rather than
ignored (the project's runner and granian are run without TLS here: the proxy in front speaks plain
HTTP/1.1 to them).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import ssl
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

__all__ = ["Settings", "ConfigError", "DEFAULT_CONFIG", "SERVERS", "TLS_SERVERS", "load", "parse_args"]

DEFAULT_CONFIG = os.path.join("config", "appserver.toml")
SERVERS = ("aiohttp", "granian", "hypercorn", "h3")
TLS_SERVERS = ("hypercorn", "h3")  # the servers run here with certfile/keyfile
DEFAULTS: dict[str, Any] = {
    "media_dir": "media",
    "host": "127.0.0.1",
    "port": 8081,
    "server": "aiohttp",
    "cors_origin": None,
    "events_token": None,
    "certfile": None,
    "keyfile": None,
}


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the key."""


@dataclass(frozen=True)
class Settings:
    media_dir: str
    host: str
    port: int
    server: str
    cors_origin: str | None = None
    events_token: str | None = field(default=None, repr=False)  # a secret: kept out of reprs and logs
    certfile: str | None = None
    keyfile: str | None = None
    config_path: str | None = None


def _check_host(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"host: expected a non-empty string, got {value!r}")
    value = value.strip()
    try:
        ipaddress.ip_address(value)
    except ValueError:
        label = value.rstrip(".")
        ok = all(
            part and len(part) <= 63 and part.replace("-", "").isalnum() and part.isascii()
            for part in label.split(".")
        )
        if not ok:
            raise ConfigError(f"host: not an IP address or host name: {value!r}") from None
    return value


def _check_port(value: Any) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip(), 10)
        except ValueError:
            raise ConfigError(f"port: expected an integer 0-65535, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(f"port: expected an integer 0-65535, got {value!r}")
    return value


def _check_server(value: Any) -> str:
    if value not in SERVERS:
        raise ConfigError(f"server: expected one of {', '.join(SERVERS)}, got {value!r}")
    return value


def _check_media_dir(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"media_dir: expected a directory path, got {value!r}")
    path = os.path.abspath(os.path.expanduser(value))
    if not os.path.isdir(path):
        raise ConfigError(f"media_dir: not a directory: {value}")
    if not os.access(path, os.R_OK | os.X_OK):
        raise ConfigError(f"media_dir: not readable: {value}")
    return path


def _check_cors_origin(value: Any) -> str | None:
    """``None``/``""`` (off), ``"*"``, or one serialized origin ``scheme://host[:port]``."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"cors_origin: expected \"*\" or an origin like https://example.org, got {value!r}")
    value = value.strip()
    if value == "*":
        return value
    scheme, sep, rest = value.partition("://")
    host, _, port = rest.partition(":")
    if (not sep or scheme not in ("http", "https") or not host or "/" in rest or "?" in rest or "#" in rest
            or "@" in rest or (port and not (port.isdigit() and 0 < int(port) < 65536))):
        raise ConfigError(f"cors_origin: expected \"*\" or an origin like https://example.org, got {value!r}")
    try:
        _check_host(host)
    except ConfigError:
        raise ConfigError(f"cors_origin: not a valid origin host: {value!r}") from None
    return value


def _check_events_token(value: Any) -> str | None:
    """None (the feed off) or a non-empty token of visible ASCII (0x21-0x7e): what fits a Bearer field."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or not all("!" <= c <= "~" for c in value):
        # The value itself is not repeated: it may be a real secret with a typo.
        raise ConfigError("events_token: expected a non-empty string of visible ASCII characters "
                          "(no spaces or control characters)")
    return value


def _check_pem(key: str) -> Callable[[Any], str | None]:
    """None (no TLS) or a readable file, made absolute (the server may change directory)."""

    def check(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: expected a path to a PEM file, got {value!r}")
        path = os.path.abspath(os.path.expanduser(value))
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise ConfigError(f"{key}: not a readable file: {value}")
        return path

    return check


def _check_tls(checked: dict[str, Any]) -> None:
    """The settings that only make sense together: both PEM files, loadable, on a TLS server."""
    cert, key = checked["certfile"], checked["keyfile"]
    if cert is None and key is None:
        if checked["server"] == "h3":
            raise ConfigError("certfile: server h3 needs certfile and keyfile (QUIC is always TLS)")
        return
    if cert is None or key is None:
        missing = "certfile" if cert is None else "keyfile"
        raise ConfigError(f"{missing}: required with {'keyfile' if cert is None else 'certfile'} (TLS needs both)")
    if checked["server"] not in TLS_SERVERS:
        raise ConfigError(f"certfile: TLS is served with server = {' or '.join(TLS_SERVERS)} only, "
                          f"not {checked['server']!r}")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"certfile: {cert} and keyfile {key} do not load as a certificate and its key: "
                          f"{exc}") from None


# Each check returns the value of the Settings field of its name.
_CHECKS: dict[str, Callable[[Any], Any]] = {
    "media_dir": _check_media_dir,
    "host": _check_host,
    "port": _check_port,
    "server": _check_server,
    "cors_origin": _check_cors_origin,
    "events_token": _check_events_token,
    "certfile": _check_pem("certfile"),
    "keyfile": _check_pem("keyfile"),
}


def read_file(path: str, *, required: bool) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config: file not found: {path}") from None
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc}") from None
    unknown = sorted(set(data) - set(_CHECKS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key in {path} (known: {', '.join(_CHECKS)})")
    return data


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m appserver",
        description="Demo ASGI media origin with HTTP Range support.",
    )
    p.add_argument("--config", help=f"TOML settings file (default: {DEFAULT_CONFIG} if present)")
    p.add_argument("--media-dir", dest="media_dir", help="directory to serve")
    p.add_argument("--host", help="address to bind")
    p.add_argument("--port", help="TCP port to bind (0: any free port)")
    p.add_argument("--server", help="ASGI server: aiohttp (pathsend with ranges), granian, hypercorn "
                   "(HTTP/2: server push, 103 Early Hints), or h3 (HTTP/3 and WebTransport on UDP; needs --certfile)")
    p.add_argument("--cors-origin", dest="cors_origin",
                   help='send CORS headers allowing this origin ("*" or scheme://host[:port]); "" turns them off')
    p.add_argument("--events-token", dest="events_token",
                   help="turn on the change feed at /_events (WebSocket) for clients presenting this token")
    p.add_argument("--certfile", help="TLS certificate chain (PEM), with --keyfile: HTTPS and HTTP/2 by ALPN "
                   "(--server hypercorn; required by h3)")
    p.add_argument("--keyfile", help="the TLS certificate's private key (PEM)")
    return p


def load(argv: Sequence[str] | None = None) -> Settings:
    """Merge defaults, the TOML file and the flags; raise ConfigError on a bad value."""
    args = build_parser().parse_args(argv)
    config_path = args.config or DEFAULT_CONFIG
    merged: dict[str, Any] = dict(DEFAULTS)
    merged.update(read_file(config_path, required=args.config is not None))
    for key in _CHECKS:
        value = getattr(args, key)
        if value is not None:
            merged[key] = value
    checked = {key: check(merged[key]) for key, check in _CHECKS.items()}
    _check_tls(checked)
    return Settings(config_path=config_path, **checked)


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    """Like :func:`load`, but exit with the message (status 1) on a bad setting."""
    try:
        return load(argv)
    except ConfigError as exc:
        raise SystemExit(f"appserver: config error: {exc}") from None
