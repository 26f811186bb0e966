"""A real S3 API on loopback, with authentication on: moto's server mode as a subprocess
(``python -m tests.support.moto_presigned -H 127.0.0.1 -p PORT``: moto's own app, with the
presigned-URL authentication moto lacks added in front, see that module), set up with one IAM
user, its access key, a bucket and (optionally) a role to assume for temporary credentials.

How moto turns authentication on (moto 5.2, ``moto/core/authorization.py``,
``ActionAuthenticatorMixin._authenticate_and_authorize_action``):

- ``INITIAL_NO_AUTH_ACTION_COUNT`` is read from the environment once, at import, into
  ``moto.settings``; unset it is infinity: nothing is ever checked.
- One counter per server process (a class attribute, shared by every service: IAM, STS and S3
  count together). Each request that reaches the authorization step while the counter is below N
  adds one and is not checked at all (any signature, or none). Every later one is checked: the
  access key is looked up in moto's IAM (or among STS's assumed roles, when a session token is
  sent), the signature is recomputed with botocore (``S3SigV4Auth`` for S3) from the raw request
  path and the fields named in ``SignedHeaders``, then the user's or role's policies are evaluated.
- Not counted: ``/moto-api/*`` (the health probe here), and an S3 GET or HEAD of an object whose
  ACL refuses an anonymous caller, when the request has no Authorization: moto answers that 403
  from its ACL check before the authorization step, with authentication on or off. So an
  unsigned GET's 403 alone does not show authentication is on; a wrongly signed request's does.
- A retried call counts again: the set-up clients here never retry.

The set-up makes exactly :data:`SETUP_ACTIONS` unsigned calls (CreateUser, PutUserPolicy,
CreateAccessKey, CreateRole, PutRolePolicy, CreateBucket); everything after them, objects put
included, is signed with the user's key (or the role's temporary credentials).

moto verifies signatures with botocore itself, from the raw path: it accepts any spelling of a
key that the signer signed as sent (``+`` or ``%2B``), so it cannot tell whether real S3 would.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path
from urllib.parse import quote, unquote

from typing import Any

from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.session import Session

from proxy.cache.signing import AwsCredentials
from tests.support.moto_presigned import LOG_PATH
from tests.support.servers import ServerProc, start_on_free_port

__all__ = ["SETUP_ACTIONS", "S3Server", "start_s3", "write_proxy_config"]

SETUP_ACTIONS = 6
STARTUP_TIMEOUT = 20.0
REGION = "us-east-1"
BUCKET = "rangeproxy-private"
USER = "rangeproxy"
ROLE = "rangeproxy-reader"

_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Resource": "*", "Action": [
        "s3:*", "iam:CreateAccessKey", "iam:DeleteAccessKey", "sts:AssumeRole"]}],
}
_ROLE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Resource": "*", "Action": ["s3:GetObject"]}],
}
_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
}
# The set-up's calls must be counted once each: no retries.
_CLIENT_CONFIG = Config(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"},
                        connect_timeout=5, read_timeout=10)
# botocore presigns S3 URLs with SigV2 unless told otherwise.
_PRESIGN_CONFIG = _CLIENT_CONFIG.merge(Config(signature_version="s3v4"))


class S3Server(ServerProc):
    """moto's server: ``endpoint``, ``bucket``, ``region``, ``credentials`` (the IAM user's key)."""

    name = "moto"
    bucket = BUCKET
    region = REGION

    def __init__(self, workdir: Path, port: int) -> None:
        super().__init__(
            [sys.executable, "-m", "tests.support.moto_presigned", "-H", "127.0.0.1", "-p", str(port)],
            workdir, port, health_path="/moto-api/data.json",
            env={"INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_ACTIONS)},
        )
        self.credentials = AwsCredentials("", "")
        self.role_arn = ""
        self._session = Session()

    @property
    def endpoint(self) -> str:
        return self.url

    def object_url(self, key: str) -> str:
        """The key's URL, path-style, spelled as S3 canonicalizes it (RFC 3986 unreserved bytes and
        ``/`` as they are, every other byte ``%XX`` in upper case)."""
        return f"{self.endpoint}/{self.bucket}/{quote(key, safe='/~')}"

    def put_object(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key`` (signed with the user's key); returns the ETag."""
        etag = self._client("s3").put_object(Bucket=self.bucket, Key=key, Body=data)["ETag"]
        return str(etag)

    def rotate_credentials(self) -> AwsCredentials:
        """Create a second access key for the user, delete the first; returns (and keeps) the new pair."""
        old = self.credentials
        self.credentials = self.add_access_key()
        self.delete_access_key(old)
        return self.credentials

    def requests(self) -> list[dict[str, str]]:
        """Every request moto has received so far, in order (:mod:`tests.support.moto_presigned`'s log)."""
        with urllib.request.urlopen(self.endpoint + LOG_PATH, timeout=5) as r:
            got: list[dict[str, str]] = json.load(r)
        return got

    def requests_for(self, key: str, since: int = 0) -> list[dict[str, str]]:
        """The requests for object ``key`` (in any spelling of its path), from the ``since``-th
        request on (``len(requests())`` taken before: only what came after)."""
        path = f"/{self.bucket}/{key}"
        return [r for r in self.requests()[since:] if unquote(r["target"].split("?", 1)[0]) == path]

    def through(self, url: str, proxy_base: str) -> str:
        """``url`` (on the endpoint, in the bucket) as a client asks a proxy whose origin's upstream
        is ``<endpoint>/<bucket>``: the same path after the bucket, the same query, byte for byte."""
        prefix = f"{self.endpoint}/{self.bucket}"
        assert url.startswith(prefix + "/"), url
        return proxy_base + url[len(prefix):]

    def add_access_key(self) -> AwsCredentials:
        """Another access key of the user (the one in ``credentials`` stays valid and in use)."""
        made = self._client("iam").create_access_key(UserName=USER)["AccessKey"]
        return AwsCredentials(made["AccessKeyId"], made["SecretAccessKey"])

    def delete_access_key(self, credentials: AwsCredentials) -> None:
        """Delete one of the user's access keys (signed with ``credentials``, the in-use key)."""
        self._client("iam").delete_access_key(UserName=USER, AccessKeyId=credentials.access_key_id)

    def presign(self, key: str, expires: int = 3600, credentials: AwsCredentials | None = None,
                method: str = "get_object") -> str:
        """A SigV4 presigned URL of ``key`` (path-style, on the endpoint), made by botocore with the
        user's key (or ``credentials``), valid ``expires`` seconds."""
        url = self._client("s3", credentials, _PRESIGN_CONFIG).generate_presigned_url(
            method, Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires)
        return str(url)

    def assume_role(self) -> AwsCredentials:
        """Temporary credentials (with a session token) of a role that may only GetObject."""
        got = self._client("sts").assume_role(RoleArn=self.role_arn, RoleSessionName="rangeproxy-test")
        c = got["Credentials"]
        return AwsCredentials(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])

    def set_up(self) -> None:
        """The :data:`SETUP_ACTIONS` unsigned calls; then checks that a wrongly signed call is refused."""
        anyone = AwsCredentials("setup", "setup")
        iam = self._client("iam", anyone)
        iam.create_user(UserName=USER)
        iam.put_user_policy(UserName=USER, PolicyName="all-s3", PolicyDocument=json.dumps(_POLICY))
        made = iam.create_access_key(UserName=USER)["AccessKey"]
        self.role_arn = iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(_TRUST))["Role"]["Arn"]
        iam.put_role_policy(RoleName=ROLE, PolicyName="read", PolicyDocument=json.dumps(_ROLE_POLICY))
        self._client("s3", anyone).create_bucket(Bucket=self.bucket)
        self.credentials = AwsCredentials(made["AccessKeyId"], made["SecretAccessKey"])
        bad = self._client("s3", AwsCredentials(self.credentials.access_key_id, "wrong"))
        try:
            bad.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            if e.response["ResponseMetadata"]["HTTPStatusCode"] != 403:
                raise
        else:
            raise AssertionError(f"moto accepts a wrong secret: did it count more than {SETUP_ACTIONS} set-up calls?")

    def _client(self, service: str, credentials: AwsCredentials | None = None, config: Config = _CLIENT_CONFIG) -> Any:
        # Any: botocore makes each client's methods at run time from the service's model.
        c = credentials or self.credentials
        return self._session.create_client(
            service, region_name=self.region, endpoint_url=self.endpoint, config=config,
            aws_access_key_id=c.access_key_id, aws_secret_access_key=c.secret_access_key,
            aws_session_token=c.session_token,
        )


def start_s3(workdir: Path, timeout: float = STARTUP_TIMEOUT) -> S3Server:
    """Start moto on a free port, wait (``timeout`` s at most) until it answers, and set it up."""
    server = start_on_free_port(lambda port: S3Server(workdir, port), timeout)
    try:
        server.set_up()
    except BaseException:
        server.kill()
        raise
    return server


def write_proxy_config(path: Path, s3: S3Server, *, sign: bool = True, credentials: AwsCredentials | None = None,
                       signed_urls: bool = False, name: str = "bucket") -> Path:
    """Write a proxy config file with one ``[[origin]]`` for the bucket (``upstream`` is
    ``<endpoint>/<bucket>``, path-style): with ``sign`` an ``aws`` table (``credentials`` in it, or
    only the region: the proxy's environment's), with ``signed_urls`` the signed-urls cache key."""
    lines = ["[[origin]]", f"name = {json.dumps(name)}", f"upstream = {json.dumps(f'{s3.endpoint}/{s3.bucket}')}"]
    if signed_urls:
        lines.append('cache_key = { preset = "signed-urls" }')
    if sign:
        aws = {"region": s3.region}
        if credentials is not None:
            aws["access_key_id"] = credentials.access_key_id
            aws["secret_access_key"] = credentials.secret_access_key
            if credentials.session_token:
                aws["session_token"] = credentials.session_token
        lines.append("aws = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in aws.items()) + " }")
    path.write_text("\n".join(lines) + "\n")
    return path
