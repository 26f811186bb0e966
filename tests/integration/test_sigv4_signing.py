"""SigV4Signer against a real S3 API with authentication on (moto's server, ``tests.support.s3``):
requests sent with aiohttp, byte for byte (``URL(url, encoded=True)``), signed with
``SigV4Signer.headers``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import aiohttp
import pytest
from yarl import URL

from proxy.cache.signing import AwsCredentials, SigV4Signer
from proxy.core.config_error import ConfigError
from tests.support.s3 import S3Server, start_s3

pytestmark = pytest.mark.integration

KEY = "media/object.bin"
ODD_KEYS = ["with space.bin", "a+b.bin", "caf\u00e9 \u65e5\u672c.bin", "100%.bin", "dir/sub dir/x+y.bin"]
DATA = random.Random(7).randbytes(64 * 1024 + 13)
TIMEOUT = aiohttp.ClientTimeout(total=10)

# Every variable botocore's credential chain reads, besides the two files.
CHAIN_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                   "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                   "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
                   "AWS_CREDENTIAL_EXPIRATION")


def _start(tmp: Path) -> S3Server:
    s3 = start_s3(tmp)
    s3.put_object(KEY, DATA)
    for key in ODD_KEYS:
        s3.put_object(key, key.encode() + DATA[:1000])
    return s3


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One server for the tests that do not change its credentials."""
    server = _start(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop(check=False)


@pytest.fixture
def own_s3(tmp_path: Path) -> Iterator[S3Server]:
    """A server of the test's own (its credentials get rotated)."""
    server = _start(tmp_path)
    yield server
    server.stop(check=False)


@pytest.fixture
def no_chain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """botocore's chain finds nothing: no variables, no files, no instance metadata."""
    for name in CHAIN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _signer(s3: S3Server, credentials: AwsCredentials | None = None) -> SigV4Signer:
    return SigV4Signer(s3.region, credentials=credentials or s3.credentials)


async def _send(signer: SigV4Signer | None, method: str, url: str,
                fields: list[tuple[str, str]] | None = None) -> tuple[int, dict[str, str], bytes]:
    sent = list(fields or [])
    if signer is not None:
        sent += signer.headers(method, url, sent)
    async with aiohttp.ClientSession(timeout=TIMEOUT, auto_decompress=False) as session:
        async with session.request(method, URL(url, encoded=True), headers=sent) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read()


async def test_signed_get_returns_the_stored_bytes(s3: S3Server) -> None:
    status, _, body = await _send(_signer(s3), "GET", s3.object_url(KEY))
    assert status == 200
    assert body == DATA


async def test_signed_ranged_get_returns_206_with_exactly_those_bytes(s3: S3Server) -> None:
    status, fields, body = await _send(_signer(s3), "GET", s3.object_url(KEY), [("Range", "bytes=100-199")])
    assert status == 206
    assert fields["content-range"] == f"bytes 100-199/{len(DATA)}"
    assert body == DATA[100:200]


async def test_multi_range_get_is_answered_with_the_whole_object(s3: S3Server) -> None:
    # S3 does not serve multiple ranges in one response; moto (s3/responses.py, _handle_range_header)
    # does as S3: a Range with a comma gets 200 and the whole representation, not a multipart/byteranges.
    status, fields, body = await _send(_signer(s3), "GET", s3.object_url(KEY), [("Range", "bytes=0-9,20-29")])
    assert status == 200
    assert "content-range" not in fields
    assert not fields.get("content-type", "").startswith("multipart/")
    assert body == DATA


async def test_signed_head_has_the_get_etag_and_length(s3: S3Server) -> None:
    signer = _signer(s3)
    head_status, head, head_body = await _send(signer, "HEAD", s3.object_url(KEY))
    get_status, got, _ = await _send(signer, "GET", s3.object_url(KEY))
    again_status, again, _ = await _send(signer, "HEAD", s3.object_url(KEY))
    assert (head_status, get_status, again_status) == (200, 200, 200)
    assert head_body == b""
    assert head["etag"].startswith('"') and len(head["etag"]) > 2
    assert head["etag"] == got["etag"] == again["etag"]
    assert int(head["content-length"]) == len(DATA)


@pytest.mark.parametrize("key", ODD_KEYS)
async def test_keys_with_space_plus_unicode_and_percent_work_signed(s3: S3Server, key: str) -> None:
    url = s3.object_url(key)
    assert "%" in url.rsplit("/", 1)[1] or "/" in key
    status, _, body = await _send(_signer(s3), "GET", url, [("Range", "bytes=0-1999")])
    assert status == 206
    assert body == key.encode() + DATA[:1000]


async def test_encoded_slash_is_signed_as_sent(s3: S3Server) -> None:
    # "%2F" in a path: moto (as S3) decodes it to the key "dir/sub dir/x+y.bin"; the signature covers
    # the path as sent, %2F included, since S3SigV4Auth does not normalize it.
    url = f"{s3.endpoint}/{s3.bucket}/dir%2Fsub%20dir%2Fx%2By.bin"
    status, _, body = await _send(_signer(s3), "GET", url)
    assert status == 200
    assert body == b"dir/sub dir/x+y.bin" + DATA[:1000]


async def test_unsigned_get_is_refused(s3: S3Server) -> None:
    status, _, _ = await _send(None, "GET", s3.object_url(KEY))
    assert status == 403


async def test_wrong_secret_is_refused(s3: S3Server) -> None:
    wrong = AwsCredentials(s3.credentials.access_key_id, s3.credentials.secret_access_key[:-1] + "x")
    status, _, body = await _send(_signer(s3, wrong), "GET", s3.object_url(KEY))
    assert status == 403
    assert b"SignatureDoesNotMatch" in body


async def test_unknown_access_key_is_refused(s3: S3Server) -> None:
    unknown = AwsCredentials("AKIAUNKNOWNKEY000000", s3.credentials.secret_access_key)
    status, _, body = await _send(_signer(s3, unknown), "GET", s3.object_url(KEY))
    assert status == 403
    assert b"InvalidAccessKeyId" in body


async def test_signed_range_cannot_be_changed_on_the_way(s3: S3Server) -> None:
    url = s3.object_url(KEY)
    signed = _signer(s3).headers("GET", url, [("Range", "bytes=0-9")])
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        async with session.get(URL(url, encoded=True), headers=[("Range", "bytes=0-99"), *signed]) as r:
            assert r.status == 403


async def test_temporary_credentials_sign_with_their_session_token(s3: S3Server) -> None:
    temporary = s3.assume_role()
    assert temporary.session_token
    status, _, body = await _send(_signer(s3, temporary), "GET", s3.object_url(KEY), [("Range", "bytes=5-9")])
    assert (status, body) == (206, DATA[5:10])
    other_token = AwsCredentials(temporary.access_key_id, temporary.secret_access_key, "not-the-token")
    status, _, body = await _send(_signer(s3, other_token), "GET", s3.object_url(KEY))
    # As S3: 400 InvalidToken (a token that does not belong to the key), not 403.
    assert status == 400
    assert b"InvalidToken" in body


async def test_after_rotation_old_key_is_refused_and_new_one_accepted(own_s3: S3Server) -> None:
    old = own_s3.credentials
    before, _, _ = await _send(_signer(own_s3, old), "GET", own_s3.object_url(KEY))
    new = own_s3.rotate_credentials()
    assert new.access_key_id != old.access_key_id
    old_status, _, _ = await _send(_signer(own_s3, old), "GET", own_s3.object_url(KEY))
    new_status, _, body = await _send(_signer(own_s3, new), "GET", own_s3.object_url(KEY))
    assert (before, old_status, new_status) == (200, 403, 200)
    assert body == DATA


async def test_credentials_from_the_environment(s3: S3Server, no_chain: None,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.credentials.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.credentials.secret_access_key)
    signer = SigV4Signer(s3.region)
    assert signer.access_key_id == s3.credentials.access_key_id
    status, _, body = await _send(signer, "GET", s3.object_url(KEY), [("Range", "bytes=0-99")])
    assert (status, body) == (206, DATA[:100])


async def test_session_token_from_the_environment(s3: S3Server, no_chain: None,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    temporary = s3.assume_role()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", temporary.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", temporary.secret_access_key)
    monkeypatch.setenv("AWS_SESSION_TOKEN", temporary.session_token or "")
    status, _, _ = await _send(SigV4Signer(s3.region), "GET", s3.object_url(KEY))
    assert status == 200


async def test_credentials_from_a_profile_in_the_shared_file(s3: S3Server, no_chain: None, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "credentials"
    shared.write_text(f"[origin]\naws_access_key_id = {s3.credentials.access_key_id}\n"
                      f"aws_secret_access_key = {s3.credentials.secret_access_key}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
    monkeypatch.setenv("AWS_PROFILE", "origin")
    status, _, _ = await _send(SigV4Signer(s3.region), "GET", s3.object_url(KEY))
    assert status == 200


def test_no_credentials_anywhere_is_a_config_error(no_chain: None) -> None:
    with pytest.raises(ConfigError) as raised:
        SigV4Signer("us-east-1")
    assert raised.value.key == "aws.access_key_id"
    assert "AWS_ACCESS_KEY_ID" in raised.value.message
