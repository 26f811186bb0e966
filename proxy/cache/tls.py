"""TLS to origins: the client ssl context for an origin's https:// upstreams, and a clear message
when a connection fails on TLS.

The context verifies the origin's certificate by default: against the system CAs, or against
``ca_bundle``'s PEM certificates instead (a private CA). Host name checking and SNI come from each
upstream URL: aiohttp passes the URL's host as ``server_hostname``, so the certificate must name it
(an IP address is checked against the certificate's IP addresses, and sends no SNI: RFC 6066 §3).
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from proxy.core.config_error import ConfigError

__all__ = ["client_context", "tls_failure"]

_PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")
_SSL_NOISE = re.compile(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)$")  # "[SSL: NAME] " and " (_ssl.c:1006)"


def client_context(origin: str, *, verify: bool = True, ca_bundle: str = "", client_cert: str = "",
                   client_key: str = "") -> ssl.SSLContext:
    """The ssl context for origin ``origin``'s https:// upstreams (pass it as ``TCPConnector(ssl=...)``).

    ``verify=False`` turns certificate and host name checks off: for testing only, since anyone on
    the path can then pose as the origin. ``ca_bundle``: a PEM file of CA certificates trusted
    instead of the system's. ``client_cert``: a PEM certificate chain presented to origins that
    require mutual TLS, with its private key in ``client_key`` (PEM), or in the same file when
    ``client_key`` is empty. TLS 1.2 or later. A file that cannot be read or loaded raises a
    :class:`ConfigError` for ``origin.<origin>.ca_bundle`` / ``.client_cert`` / ``.client_key``
    naming the file and what is wrong with it.
    """
    prefix = f"origin.{origin}"
    if ca_bundle:
        _readable(f"{prefix}.ca_bundle", ca_bundle)
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_bundle or None)
    except ssl.SSLError as exc:
        raise ConfigError(f"{prefix}.ca_bundle", f"{ca_bundle} holds no usable PEM CA certificate ({exc})") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False  # must go first: CERT_NONE is refused while it is on
        ctx.verify_mode = ssl.CERT_NONE
    if client_cert:
        _load_client_certificate(ctx, prefix, client_cert, client_key)
    elif client_key:
        raise ConfigError(f"{prefix}.client_key", "is set without client_cert (the certificate it is the key of)")
    return ctx


def _load_client_certificate(ctx: ssl.SSLContext, prefix: str, cert: str, key: str) -> None:
    cert_key = f"{prefix}.client_cert"
    key_key = f"{prefix}.client_key" if key else cert_key  # the key is in the certificate's file
    _readable(cert_key, cert)
    try:  # the certificates alone first, so a bad file is named as such and not as "PEM lib"
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
    except ssl.SSLError as exc:
        raise ConfigError(cert_key, f"{cert} holds no PEM certificate ({exc})") from exc
    key_file = key or cert
    if not _PRIVATE_KEY.search(_readable(key_key, key_file)):
        where = "" if key else " (set client_key to the file that holds it)"
        raise ConfigError(key_key, f"{key_file} holds no PEM private key{where}")

    def no_passphrase() -> str:
        # Without a callback OpenSSL would ask for a passphrase on the terminal and wait.
        raise ConfigError(key_key, f"{key_file} holds an encrypted private key; the proxy needs it unencrypted")

    try:
        ctx.load_cert_chain(cert, key or None, password=no_passphrase)
    except ssl.SSLError as exc:
        what = "does not match the certificate" if exc.reason == "KEY_VALUES_MISMATCH" else "cannot be loaded"
        raise ConfigError(key_key, f"{key_file} {what} in {cert} ({exc})") from exc


def _readable(key: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from exc


def tls_failure(origin: str, url: str, exc: BaseException) -> str | None:
    """A one-line message when ``exc`` (or an error it wraps) is a TLS failure, None otherwise.

    ``'origin "videos": TLS certificate of https://host:port failed verification: <reason>'`` when
    the origin's certificate was refused (host name mismatch, unknown CA, expired, ...);
    ``'origin "videos": TLS handshake with https://host:port failed: <reason>'`` for the other TLS
    errors (a client certificate the origin requires or refuses, no common protocol version, ...).
    """
    found = _ssl_error(exc)
    if found is None:
        return None
    where = _scheme_host_port(url)
    if isinstance(found, ssl.SSLCertVerificationError):
        reason = found.verify_message or found.reason or str(found)
        hint = ""
        if found.verify_code in (18, 19, 20, 21):  # self-signed, self-signed in chain, unknown issuer, leaf only
            hint = f" (not signed by a trusted CA: set origin.{origin}.ca_bundle to the CA's PEM)"
        return f'origin "{origin}": TLS certificate of {where} failed verification: {reason}{hint}'
    hint = ""
    if found.reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED":
        hint = f" (the origin requires a client certificate: set origin.{origin}.client_cert)"
    return f'origin "{origin}": TLS handshake with {where} failed: {_said(found)}{hint}'


def _said(exc: ssl.SSLError) -> str:
    """OpenSSL's words: ``tlsv13 alert certificate required`` out of
    ``[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required (_ssl.c:2580)``."""
    text = exc.strerror if isinstance(exc.strerror, str) else str(exc)
    text = _SSL_NOISE.sub("", text).strip()
    return text or exc.reason or type(exc).__name__


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error ``exc`` is or wraps (aiohttp keeps it as an attribute, or as the cause)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        # aiohttp's own ssl errors subclass ssl's (ClientConnectorCertificateError is an
        # ssl.CertificateError): the error from ssl itself is the one they hold.
        if isinstance(e, aiohttp.ClientConnectorCertificateError):
            todo.append(e.certificate_error)
        elif isinstance(e, aiohttp.ClientConnectorError):
            todo.append(e.os_error)
        elif isinstance(e, ssl.SSLError):
            return e
        todo.extend([e.__cause__, e.__context__])
    return None


def _scheme_host_port(url: str) -> str:
    """``https://host:port`` of ``url`` (the port spelled out even when it is the default)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or parts.netloc
    host = f"[{host}]" if ":" in host else host
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme or 'https'}://{host}:{port or default}"
