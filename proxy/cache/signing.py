"""AWS Signature Version 4 for upstream requests to private S3-style buckets (S3, MinIO, R2, GCS
interoperability), computed by botocore's ``S3SigV4Auth``: we do not write our own signer.

What is signed is what goes on the wire:

- the path and query exactly as given (``S3SigV4Auth`` does not normalize or re-encode the path,
  and botocore sorts the query pairs without re-encoding them). S3 compares the signature with
  one it computes from the object key, each byte outside RFC 3986's unreserved set and ``/``
  percent-encoded with upper-case hex (``' '`` -> ``%20``, ``'+'`` -> ``%2B``, ``é`` -> ``%C3%A9``).
  A target in another spelling (``a+b``, ``%2b``, a raw ``!``) is sent fine but real S3 may
  refuse its signature: the caller sends targets in that canonical spelling.
- the fields that are sent unchanged and that S3 wants signed: ``Host``, ``Range``, ``If-*`` and
  ``x-amz-*``. Hop-by-hop fields (``Connection``, ``TE``...) and ``User-Agent`` may be changed on
  the way and are left out (SigV4 lets unsigned fields through).

Requests are signed as bodiless (GET, HEAD): ``X-Amz-Content-Sha256`` is the SHA-256 of the empty
body, which is what botocore itself sends for them, over HTTP and HTTPS alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError
from botocore.session import Session

from proxy.core.config_error import ConfigError

__all__ = ["SIGNATURE_FIELDS", "AwsCredentials", "SigV4Signer"]

# The fields SigV4Signer.headers always sets (lower-case): a caller drops any field of these names
# from its request before adding the signature's, so that none is sent twice.
SIGNATURE_FIELDS = frozenset({"authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"})

_SIGNED_NAMES = frozenset({"host", "range"})
_SIGNED_PREFIXES = ("if-", "x-amz-")


@dataclass(frozen=True, slots=True)
class AwsCredentials:
    """An access key pair, with the session token of temporary credentials (STS)."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:
        # Never the secret in a log line or a traceback.
        return f"AwsCredentials(access_key_id={self.access_key_id!r}, secret_access_key=***)"


class SigV4Signer:
    """Signs upstream requests for one origin (S3, MinIO, R2, GCS interoperability) with botocore's S3SigV4Auth.

    ``credentials=None`` takes botocore's chain, as the AWS CLI does: the environment
    (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``), the shared credentials
    and config files (``AWS_SHARED_CREDENTIALS_FILE``, ``AWS_CONFIG_FILE``, ``AWS_PROFILE``), then
    container and instance metadata. The chain is resolved once, here (it may read files and, on
    the instance-metadata step, wait on the network: construct the signer at start-up, not on the
    event loop). Temporary credentials from the chain (assume-role, SSO, instance roles) are
    refreshed by botocore when they near their expiry: that refresh is the only call of
    :meth:`headers` that can block.
    """

    def __init__(self, region: str, service: str = "s3", credentials: AwsCredentials | None = None) -> None:
        self.region = region
        self.service = service
        self._credentials = _resolve(credentials)

    @property
    def access_key_id(self) -> str:
        """The access key the requests are signed with (not secret; for logs)."""
        return self._credentials.get_frozen_credentials().access_key or ""

    def headers(self, method: str, url: str, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """The fields to add so the request is signed: ``Authorization``, ``X-Amz-Date``,
        ``X-Amz-Content-Sha256`` (the empty body's SHA-256), ``X-Amz-Security-Token`` when there is a
        session token, and ``Host`` when ``headers`` has none (derived from ``url``: lower-case,
        without a default port), so that the signed Host is the one sent.

        ``url`` is the exact URL that will be sent, already percent-encoded (sent byte for byte,
        e.g. with ``yarl.URL(url, encoded=True)``); ``headers`` are the fields the request will
        carry. Of them ``Host``, ``Range``, ``If-*`` and ``x-amz-*`` are signed, so they must be sent
        unchanged; fields named in :data:`SIGNATURE_FIELDS` are ignored (replace them by these).
        """
        signed_url = _with_root_path(url)
        request = AWSRequest(method=method.upper(), url=signed_url)
        has_host = False
        for name, value in headers:
            lname = name.lower()
            if lname == "host":
                has_host = True
            elif lname in SIGNATURE_FIELDS:
                continue
            if lname in _SIGNED_NAMES or lname.startswith(_SIGNED_PREFIXES):
                request.headers[lname] = value  # HTTPHeaders appends: repeated fields are all signed
        if not has_host:
            request.headers["host"] = _host_from_url(signed_url)
        frozen = self._credentials.get_frozen_credentials()
        # One S3SigV4Auth per request: it is two attributes, and the credentials may have been refreshed.
        S3SigV4Auth(frozen, self.service, self.region).add_auth(request)
        added = [
            ("Authorization", request.headers["Authorization"]),
            ("X-Amz-Date", request.headers["X-Amz-Date"]),
            ("X-Amz-Content-Sha256", request.headers["X-Amz-Content-SHA256"]),
        ]
        if frozen.token:
            added.append(("X-Amz-Security-Token", frozen.token))
        if not has_host:
            added.append(("Host", request.headers["host"]))
        return added


def _resolve(credentials: AwsCredentials | None) -> Credentials:
    if credentials is not None:
        return Credentials(credentials.access_key_id, credentials.secret_access_key, credentials.session_token)
    # One Session, for the chain only: it loads botocore's data lazily, so this stays cheap.
    try:
        found = Session().get_credentials()
    except BotoCoreError as exc:  # e.g. AWS_PROFILE names no profile, a credentials file that does not parse
        raise ConfigError("aws.access_key_id", f"the environment's AWS credentials cannot be read: {exc}") from None
    if found is None or not found.get_frozen_credentials().access_key:
        raise ConfigError(
            "aws.access_key_id",
            "no credentials: set aws.access_key_id and aws.secret_access_key, or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY in the environment, or a profile in the shared credentials file "
            "(AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE)",
        )
    return found


def _with_root_path(url: str) -> str:
    # An empty path goes on the wire as "/" (RFC 9112 §3.2.1), so it is signed as "/".
    parts = urlsplit(url)
    return url if parts.path else urlunsplit(parts._replace(path="/"))


def _host_from_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return host if parts.port is None or parts.port == default else f"{host}:{parts.port}"
