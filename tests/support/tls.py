"""Test certificates: a throwaway CA (trustme) and a leaf for 127.0.0.1/localhost, as PEM files a
server's ``certfile``/``keyfile`` (or ``tls_cert``/``tls_key``) can name."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme

__all__ = ["client_context", "issue_certificate"]


def issue_certificate(tmp_path: Path) -> tuple[trustme.CA, Path, Path]:
    """A new CA, and the chain and key files of a leaf it signed for 127.0.0.1 and localhost."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(chain))
    cert.private_key_pem.write_to_path(str(key))
    return ca, chain, key


def client_context(ca: trustme.CA, alpn: list[str] | None = None) -> ssl.SSLContext:
    """A verifying client context that trusts ``ca`` (and offers ``alpn``, if given)."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx
