"""What a signed URL says about itself: its scheme and when it stops being valid (pure).

The one home of the signature parameter names of the three schemes (AWS SigV4 query auth,
CloudFront signed URLs, GCS V4 signing) and of how a query parameter's name is compared;
``proxy.core.cachekeys`` builds its "signed-urls" preset from them. Nothing here checks a
signature: only the origin can. The expiry lets the proxy refuse what the origin would refuse.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal
from urllib.parse import unquote, unquote_to_bytes

__all__ = [
    "CLOUDFRONT_PARAMS", "GCS_PARAMS", "SIGNATURE_PARAMS", "SIGV4_PARAMS", "Scheme", "UrlSignature",
    "canonical_name", "param_name", "signature_of", "without_signature",
]

Scheme = Literal["sigv4", "cloudfront", "gcs"]

# AWS SigV4 query auth ("Authenticating Requests: Using Query Parameters").
SIGV4_PARAMS = (
    "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
    "X-Amz-Signature", "X-Amz-Security-Token",
)
# CloudFront signed URLs: canned policy (Expires) or custom policy (Policy).
CLOUDFRONT_PARAMS = ("Expires", "Signature", "Key-Pair-Id", "Policy")
# GCS V4 signing ("Signed URLs", query string parameters).
GCS_PARAMS = (
    "X-Goog-Algorithm", "X-Goog-Credential", "X-Goog-Date", "X-Goog-Expires", "X-Goog-SignedHeaders",
    "X-Goog-Signature",
)
SIGNATURE_PARAMS = SIGV4_PARAMS + CLOUDFRONT_PARAMS + GCS_PARAMS

# S3 and GCS read their X-Amz-* / X-Goog-* query parameters in any case (x-amz-signature works),
# so those names are compared in their canonical spelling; CloudFront's are case-sensitive.
_CASELESS = {name.lower(): name for name in SIGV4_PARAMS + GCS_PARAMS}
_SIGNATURE_NAMES = frozenset(SIGNATURE_PARAMS)

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DIGITS = re.compile(r"[0-9]{1,12}", re.ASCII)
_AMZ_DATE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})Z", re.ASCII)
_MAX_EXPIRES = 604800  # seconds: S3 and GCS refuse X-*-Expires over 7 days
_MAX_EPOCH = 253402300799  # 9999-12-31T23:59:59Z: later is not a time CloudFront can mean
_EXPIRED = 0.0  # what malformed expiry fields become: expired, never "valid forever"


@dataclass(frozen=True, slots=True)
class UrlSignature:
    """The scheme a URL is signed with, and the Unix time it stops being valid (None: it does not say)."""

    scheme: Scheme
    expires_at: float | None

    def expired(self, now: float) -> bool:
        """At ``expires_at`` itself the URL is already expired (S3: valid while now < date + expires)."""
        return self.expires_at is not None and now >= self.expires_at


def param_name(piece: str) -> str:
    """The name a raw ``name[=value]`` query piece is compared by.

    Percent-decoded with "+" as space (the form encoding query strings use); when the escapes are
    bad or not UTF-8 the raw name is used, so odd input never raises. AWS/GCS signature names come
    out in their canonical spelling (ASCII case only: "K", the Kelvin sign, is not a "k").
    """
    raw = piece.partition("=")[0]
    name = raw
    if "%" in raw or "+" in raw:
        if not _BAD_ESCAPE.search(raw):
            try:
                name = unquote_to_bytes(raw.replace("+", " ")).decode("utf-8")
            except UnicodeDecodeError:
                name = raw
    return canonical_name(name)


def canonical_name(name: str) -> str:
    """``name`` (decoded), or its canonical spelling when it is an AWS/GCS signature name in any ASCII case."""
    return _CASELESS.get(name.lower(), name) if name.isascii() else name


def _fields(query: str) -> dict[str, list[str]]:
    """The percent-decoded values of the signature parameters present, by canonical name."""
    out: dict[str, list[str]] = {}
    for piece in query.split("&"):
        if piece and (name := param_name(piece)) in _SIGNATURE_NAMES:
            out.setdefault(name, []).append(unquote(piece.partition("=")[2]))
    return out


def _one(fields: dict[str, list[str]], name: str) -> str | None:
    """The value of ``name``; a repeated expiry field raises ValueError, as which one counts is unclear."""
    values = fields.get(name)
    if values is None:
        return None
    if len(values) != 1:
        raise ValueError(name)
    return values[0]


def _amz_expiry(date: str | None, expires: str | None) -> float | None:
    """X-Amz-Date / X-Goog-Date (ISO 8601 basic, UTC) plus X-*-Expires seconds; ValueError when malformed."""
    if date is None and expires is None:
        return None
    if date is None or expires is None:
        raise ValueError("half an expiry")
    m = _AMZ_DATE.fullmatch(date)
    if not m or not _DIGITS.fullmatch(expires) or int(expires) > _MAX_EXPIRES:
        raise ValueError(date, expires)
    year, month, day, hour, minute, second = (int(g) for g in m.groups())
    signed = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)  # ValueError: no such day
    return signed.timestamp() + int(expires)


def _epoch(value: object) -> float:
    """A Unix time in seconds, strictly: a non-negative integer up to year 9999 (bool is no integer)."""
    if type(value) is not int or not 0 <= value <= _MAX_EPOCH:
        raise ValueError(value)
    return float(value)


def _policy_expiry(policy: str) -> float:
    """Statement[0].Condition.DateLessThan.AWS:EpochTime of a custom policy.

    CloudFront's base64 swaps '+' for '-', '=' for '_' and '/' for '~' so the value needs no escaping.
    """
    standard = policy.translate(str.maketrans("-_~", "+=/"))
    try:
        raw = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
        statement = json.loads(raw)["Statement"][0]
        return _epoch(statement["Condition"]["DateLessThan"]["AWS:EpochTime"])
    except (binascii.Error, ValueError, RecursionError, LookupError, TypeError):
        # ValueError covers bad JSON and bad UTF-8; LookupError/TypeError a policy of the wrong shape.
        raise ValueError("malformed policy") from None


def _cloudfront_expiry(fields: dict[str, list[str]]) -> float | None:
    """A custom policy's DateLessThan when there is a Policy, else the canned policy's Expires."""
    policy = _one(fields, "Policy")
    if policy is not None:
        return _policy_expiry(policy)
    expires = _one(fields, "Expires")
    if expires is None:
        return None
    if not _DIGITS.fullmatch(expires):
        raise ValueError(expires)
    return _epoch(int(expires))


def signature_of(query: str) -> UrlSignature | None:
    """The signature a raw query carries, or None when it has none.

    SigV4 is recognised by X-Amz-Signature, GCS V4 by X-Goog-Signature, CloudFront by Signature
    with Key-Pair-Id (in that order when a query somehow has several). Expiry fields that are
    present but malformed, half present or repeated make ``expires_at`` 0.0: expired.
    """
    fields = _fields(query)
    scheme: Scheme
    if "X-Amz-Signature" in fields:
        scheme = "sigv4"
    elif "X-Goog-Signature" in fields:
        scheme = "gcs"
    elif "Signature" in fields and "Key-Pair-Id" in fields:
        scheme = "cloudfront"
    else:
        return None
    try:
        if scheme == "sigv4":
            expires_at = _amz_expiry(_one(fields, "X-Amz-Date"), _one(fields, "X-Amz-Expires"))
        elif scheme == "gcs":
            expires_at = _amz_expiry(_one(fields, "X-Goog-Date"), _one(fields, "X-Goog-Expires"))
        else:
            expires_at = _cloudfront_expiry(fields)
    except ValueError:
        expires_at = _EXPIRED
    return UrlSignature(scheme, expires_at)


def without_signature(query: str) -> str:
    """The raw query without the signature parameters of any of the three schemes.

    For when the proxy signs its own upstream requests: S3 refuses a request that carries two
    authentication mechanisms. Every other piece is kept byte for byte, in order; empty ones go.
    """
    return "&".join(p for p in query.split("&") if p and param_name(p) not in _SIGNATURE_NAMES)
