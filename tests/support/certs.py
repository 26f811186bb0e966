"""A self-signed ECDSA P-256 certificate for loopback, valid for at most 14 days: the kind
Chromium accepts through WebTransport's ``serverCertificateHashes`` (and aioquic's client
trusts when given it as its CA file). Made with ``cryptography`` at test time."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["SelfSignedCert", "make_self_signed_cert"]

VALIDITY = datetime.timedelta(days=10)  # Chromium's limit for serverCertificateHashes is 14 days


@dataclass(frozen=True)
class SelfSignedCert:
    certfile: Path
    keyfile: Path
    sha256: bytes  # of the DER certificate: the value serverCertificateHashes takes


def make_self_signed_cert(directory: Path, name: str = "h3") -> SelfSignedCert:
    """Write ``<name>-cert.pem`` and ``<name>-key.pem`` for 127.0.0.1 / localhost into ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now - datetime.timedelta(minutes=5) + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    certfile = directory / f"{name}-cert.pem"
    keyfile = directory / f"{name}-key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    der = cert.public_bytes(serialization.Encoding.DER)
    return SelfSignedCert(certfile, keyfile, hashlib.sha256(der).digest())
