"""SigV4Signer without a server: AWS's own worked example, and which fields are signed.

moto checks signatures with botocore itself, so the integration tests alone could not catch a
signer that agrees with botocore but not with S3: the example from AWS's documentation
("Signature Calculations for the Authorization Header: Transferring Payload in a Single Chunk",
example "GET Object") pins the real algorithm.
"""

from __future__ import annotations

import datetime

import botocore.auth
import pytest

from proxy.cache.signing import SIGNATURE_FIELDS, AwsCredentials, SigV4Signer

EXAMPLE = AwsCredentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.fixture
def at_example_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # The example is signed at 2013-05-24T00:00:00Z; botocore reads the clock through this name.
    monkeypatch.setattr(botocore.auth, "get_current_datetime",
                        lambda remove_tzinfo=True: datetime.datetime(2013, 5, 24))


def _fields(pairs: list[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in pairs}


def test_matches_aws_documented_get_object_example(at_example_time: None) -> None:
    signer = SigV4Signer("us-east-1", credentials=EXAMPLE)
    got = _fields(signer.headers("GET", "https://examplebucket.s3.amazonaws.com/test.txt",
                                 [("Range", "bytes=0-9")]))
    assert got["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    assert got["x-amz-date"] == "20130524T000000Z"
    assert got["x-amz-content-sha256"] == EMPTY_SHA256
    assert got["host"] == "examplebucket.s3.amazonaws.com"


def test_signs_host_range_conditionals_and_amz_fields_only(at_example_time: None) -> None:
    signer = SigV4Signer("eu-west-1", credentials=EXAMPLE)
    sent = [("Host", "bucket.example:9000"), ("Range", "bytes=1-2"), ("If-None-Match", '"x"'),
            ("If-Modified-Since", "Fri, 24 May 2013 00:00:00 GMT"), ("x-amz-request-payer", "requester"),
            ("User-Agent", "rangeproxy"), ("Connection", "keep-alive"), ("Accept-Encoding", "identity"),
            ("Via", "1.1 rangeproxy"), ("X-Amz-Date", "19990101T000000Z"), ("Authorization", "old")]
    got = _fields(signer.headers("GET", "http://bucket.example:9000/k", sent))
    assert "SignedHeaders=host;if-modified-since;if-none-match;range;x-amz-content-sha256;x-amz-date;" \
           "x-amz-request-payer," in got["authorization"]
    assert got["x-amz-date"] == "20130524T000000Z"
    assert "host" not in got  # the caller's Host is signed and sent as it is


@pytest.mark.parametrize(("url", "host"), [
    ("http://127.0.0.1:80/k", "127.0.0.1"),
    ("https://B.Example:443/k", "b.example"),
    ("https://b.example:8443/k", "b.example:8443"),
    ("http://[::1]:9000/k", "[::1]:9000"),
])
def test_host_from_url_drops_default_port(url: str, host: str) -> None:
    got = _fields(SigV4Signer("us-east-1", credentials=EXAMPLE).headers("HEAD", url, []))
    assert got["host"] == host


def test_path_is_signed_as_sent_and_differs_per_spelling(at_example_time: None) -> None:
    signer = SigV4Signer("us-east-1", credentials=EXAMPLE)
    spellings = ["/b/a%20b%2Bc", "/b/a%20b+c", "/b/a%2Fb", "/b/a/b", "/b/./a", "/b/a"]
    signatures = {_fields(signer.headers("GET", "http://h" + p, []))["authorization"] for p in spellings}
    # No normalization: each spelling (even ./ and %2F) is a different canonical request.
    assert len(signatures) == len(spellings)


def test_empty_path_is_signed_as_root(at_example_time: None) -> None:
    signer = SigV4Signer("us-east-1", credentials=EXAMPLE)
    assert signer.headers("GET", "http://h", []) == signer.headers("GET", "http://h/", [])


def test_session_token_is_sent_and_signed(at_example_time: None) -> None:
    signer = SigV4Signer("us-east-1", credentials=AwsCredentials(EXAMPLE.access_key_id,
                                                                  EXAMPLE.secret_access_key, "TOKEN"))
    got = _fields(signer.headers("GET", "http://h/k", []))
    assert got["x-amz-security-token"] == "TOKEN"
    assert "x-amz-security-token" in got["authorization"].split("SignedHeaders=")[1].split(",")[0]


def test_returns_only_signature_fields_and_missing_host(at_example_time: None) -> None:
    got = _fields(SigV4Signer("us-east-1", credentials=EXAMPLE).headers("GET", "http://h/k", []))
    assert set(got) == (SIGNATURE_FIELDS - {"x-amz-security-token"}) | {"host"}


def test_credentials_repr_hides_the_secret() -> None:
    assert EXAMPLE.secret_access_key not in repr(EXAMPLE)
