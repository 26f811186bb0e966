"""What a signed URL says about itself (proxy.core.signatures): scheme, expiry, and the query without it."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core.signatures import (
    CLOUDFRONT_PARAMS, GCS_PARAMS, SIGNATURE_PARAMS, SIGV4_PARAMS, Scheme, UrlSignature, param_name, signature_of,
    without_signature,
)

# AWS's own presigned GET example (Signature V4, query auth): signed 2013-05-24T00:00:00Z for 86400 s.
S3 = ("X-Amz-Algorithm=AWS4-HMAC-SHA256"
      "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
      "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
      "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
S3_EXPIRES_AT = 1369353600 + 86400
# With temporary (STS) credentials, and an application parameter S3 itself reads.
S3_STS = ("response-content-disposition=attachment%3B%20filename%3D%22a.mp4%22&" + S3
          + "&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEJr%2F%2F%2F%2F%2F%2F%2F%2F%2F%2FwEaCXVzLWVhc3QtMSJH")

# CloudFront's canned-policy example.
CF_CANNED = ("color=red&size=medium&Expires=1357034400"
             "&Signature=nitfHRCrtziwO2HwPfWw~yYDhUF5EwRunQA-j19DzZrvDh6hQ73lDx~-ar3UocvvRQVw6EkC~GdpGQyyOSKQim-Tx"
             "AnW7d8F5Kkai9HVx0FIu-5jcQb0UEmatEXAMPLE3ReXySpLSMj0yCd3ZAB4UcBCAqEijkytL6f3fVYNGQI6"
             "&Key-Pair-Id=K2JCJMDEHXQW5F")
# A custom policy for .../media/???> until 1357034400, in CloudFront's base64: the resource is chosen so
# that the encoding holds all three swapped characters ('~' for '/', '-' for '+', '_' for '=').
CF_POLICY = ("eyJTdGF0ZW1lbnQiOlt7IlJlc291cmNlIjoiaHR0cHM6Ly9kMTExMTExYWJjZGVmOC5jbG91ZGZyb250Lm5ldC9tZWRpYS8"
             "~Pz8-IiwiQ29uZGl0aW9uIjp7IkRhdGVMZXNzVGhhbiI6eyJBV1M6RXBvY2hUaW1lIjoxMzU3MDM0NDAwfX19XX0_")
CF_CUSTOM = (f"Policy={CF_POLICY}&Signature=Nql641NHEUkUaXQHZINK1FZ~SYeUSoBJMxjdgqrzIdzV2gyEXPDNv0pYdWJkflDKJ3x"
             "&Key-Pair-Id=K2JCJMDEHXQW5F")

# Google's V4 signing example: signed 2018-10-26T18:13:09Z for 900 s.
GCS = ("X-Goog-Algorithm=GOOG4-RSA-SHA256"
       "&X-Goog-Credential=example%40example-project.iam.gserviceaccount.com%2F20181026%2Fus-central1%2Fstorage"
       "%2Fgoog4_request&X-Goog-Date=20181026T181309Z&X-Goog-Expires=900&X-Goog-SignedHeaders=host"
       "&X-Goog-Signature=247a2aa45f169edf4d187d54e7cc46e4731b1e6273242c4f4c39a1d2507a0e58706e25e3a85a7dbb")
GCS_EXPIRES_AT = 1540577589 + 900


def cf_policy(policy: object) -> str:
    """A custom policy as CloudFront puts it in a URL."""
    raw = base64.b64encode(json.dumps(policy).encode()).decode()
    return raw.translate(str.maketrans("+=/", "-_~"))


def cf_custom(policy: object) -> str:
    return f"Policy={cf_policy(policy)}&Signature=abc&Key-Pair-Id=K2JCJMDEHXQW5F"


def epoch_policy(epoch: object) -> dict[str, object]:
    return {"Statement": [{"Resource": "https://d/x", "Condition": {"DateLessThan": {"AWS:EpochTime": epoch}}}]}


def test_the_names_live_in_one_place() -> None:
    assert SIGNATURE_PARAMS == SIGV4_PARAMS + CLOUDFRONT_PARAMS + GCS_PARAMS
    assert len(set(SIGNATURE_PARAMS)) == 17
    assert {"X-Amz-Security-Token", "Key-Pair-Id", "X-Goog-Signature"} <= set(SIGNATURE_PARAMS)


@pytest.mark.parametrize(("query", "scheme", "expires_at"), [
    (S3, "sigv4", S3_EXPIRES_AT),
    (S3_STS, "sigv4", S3_EXPIRES_AT),
    (CF_CANNED, "cloudfront", 1357034400),
    (CF_CUSTOM, "cloudfront", 1357034400),
    (GCS, "gcs", GCS_EXPIRES_AT),
])
def test_real_signed_urls_say_their_scheme_and_expiry(query: str, scheme: Scheme, expires_at: float) -> None:
    assert signature_of(query) == UrlSignature(scheme, float(expires_at))


def test_the_custom_policy_constant_uses_cloudfronts_base64_alphabet() -> None:
    assert {"~", "-", "_"} <= set(CF_POLICY) and not {"+", "/", "="} & set(CF_POLICY)


def test_exactly_at_expiry_is_expired() -> None:
    sig = signature_of(S3)
    assert sig is not None
    assert not sig.expired(S3_EXPIRES_AT - 1)
    assert not sig.expired(S3_EXPIRES_AT - 0.001)
    assert sig.expired(S3_EXPIRES_AT)
    assert sig.expired(S3_EXPIRES_AT + 1)


def test_a_signature_that_does_not_say_when_it_expires_never_expires_here() -> None:
    sig = signature_of("X-Amz-Signature=abc")
    assert sig == UrlSignature("sigv4", None)
    assert not sig.expired(1e12)
    assert signature_of("Signature=abc&Key-Pair-Id=K") == UrlSignature("cloudfront", None)


def test_sigv4_names_are_read_in_any_case_as_s3_does() -> None:
    lower = "x-amz-date=20130524T000000Z&X-AMZ-EXPIRES=86400&x-amz-signature=abc"
    assert signature_of(lower) == UrlSignature("sigv4", float(S3_EXPIRES_AT))
    assert signature_of("x-goog-signature=abc&X-GOOG-DATE=20181026T181309Z&x-goog-expires=900") == \
        UrlSignature("gcs", float(GCS_EXPIRES_AT))


def test_cloudfront_names_are_case_sensitive() -> None:
    assert signature_of("signature=abc&key-pair-id=K&expires=1") is None


def test_percent_encoded_names_and_values_are_decoded() -> None:
    assert signature_of("X%2DAmz%2DSignature=abc&X-Amz-Date=20130524T000000Z&X-Amz-Expires=%3886400") is not None
    sig = signature_of("X%2DAmz%2DSignature=abc&X-Amz-Date=20130524T000000Z&X-Amz-Expires=8640%30")
    assert sig == UrlSignature("sigv4", float(S3_EXPIRES_AT))


def test_a_custom_policy_wins_over_expires_and_standard_base64_is_read_too() -> None:
    assert signature_of(f"Expires=1&{cf_custom(epoch_policy(2000000000))}") == UrlSignature("cloudfront", 2e9)
    standard = base64.b64encode(json.dumps(epoch_policy(2000000000)).encode()).decode()
    assert "=" in standard
    assert signature_of(f"Policy={standard}&Signature=abc&Key-Pair-Id=K") == UrlSignature("cloudfront", 2e9)
    unpadded = cf_policy(epoch_policy(2000000000)).rstrip("_")
    assert signature_of(f"Policy={unpadded}&Signature=abc&Key-Pair-Id=K") == UrlSignature("cloudfront", 2e9)


@pytest.mark.parametrize("query", [
    "", "a=1&b=2", "Signature=abc", "Key-Pair-Id=K&Expires=2000000000", "X-Amz-Date=20130524T000000Z&X-Amz-Expires=1",
    "X-Amz-Signaturex=abc", "X-Goog-Signatures=abc", "&&&", "=", "X-Amz-Signature%zz=abc",
])
def test_no_signature(query: str) -> None:
    assert signature_of(query) is None


@pytest.mark.parametrize("query", [
    # SigV4 / GCS dates and lifetimes
    "X-Amz-Signature=s&X-Amz-Date=2013-05-24T00:00:00Z&X-Amz-Expires=60",
    "X-Amz-Signature=s&X-Amz-Date=20130524T000000&X-Amz-Expires=60",
    "X-Amz-Signature=s&X-Amz-Date=20130230T000000Z&X-Amz-Expires=60",  # 30 February
    "X-Amz-Signature=s&X-Amz-Date=20130524T250000Z&X-Amz-Expires=60",
    "X-Amz-Signature=s&X-Amz-Date=00000524T000000Z&X-Amz-Expires=60",
    "X-Amz-Signature=s&X-Amz-Date=２０１３0524T000000Z&X-Amz-Expires=60",  # non-ASCII digits
    "X-Amz-Signature=s&X-Amz-Date=20130524T000000Z&X-Amz-Expires=-1",
    "X-Amz-Signature=s&X-Amz-Date=20130524T000000Z&X-Amz-Expires=+60",
    "X-Amz-Signature=s&X-Amz-Date=20130524T000000Z&X-Amz-Expires=1e3",
    "X-Amz-Signature=s&X-Amz-Date=20130524T000000Z&X-Amz-Expires=",
    "X-Amz-Signature=s&X-Amz-Date=20130524T000000Z&X-Amz-Expires=604801",  # over the 7-day maximum
    "X-Amz-Signature=s&X-Amz-Date=20130524T000000Z&X-Amz-Expires=" + "9" * 400,
    "X-Amz-Signature=s&X-Amz-Date=20130524T000000Z",  # half an expiry
    "X-Amz-Signature=s&X-Amz-Expires=60",
    "X-Amz-Signature=s&X-Amz-Date=20130524T000000Z&X-Amz-Expires=60&X-Amz-Expires=604800",  # which one?
    "X-Goog-Signature=s&X-Goog-Date=20181026T181309Z&X-Goog-Expires=soon",
    # CloudFront canned
    "Signature=s&Key-Pair-Id=K&Expires=tomorrow",
    "Signature=s&Key-Pair-Id=K&Expires=",
    "Signature=s&Key-Pair-Id=K&Expires=-5",
    "Signature=s&Key-Pair-Id=K&Expires=1357034400.5",
    "Signature=s&Key-Pair-Id=K&Expires=999999999999",  # after the year 9999
    "Signature=s&Key-Pair-Id=K&Expires=1&Expires=2000000000",
    # CloudFront custom
    "Signature=s&Key-Pair-Id=K&Policy=not*base64",
    "Signature=s&Key-Pair-Id=K&Policy=",
    "Signature=s&Key-Pair-Id=K&Policy=" + cf_policy("just a string")[:-2],
    "Signature=s&Key-Pair-Id=K&Policy=" + base64.b64encode(b"\xff\xfe{").decode(),
    "Signature=s&Key-Pair-Id=K&Policy=" + base64.b64encode(b"[" * 100000).decode(),
    cf_custom("a string"),
    cf_custom({"Statement": []}),
    cf_custom({"Statement": {"0": 1}}),
    cf_custom({"Statement": [{"Condition": {"DateGreaterThan": {"AWS:EpochTime": 1}}}]}),
    cf_custom(epoch_policy("1357034400")),
    cf_custom(epoch_policy(True)),
    cf_custom(epoch_policy(1357034400.0)),
    cf_custom(epoch_policy(-1)),
    cf_custom(epoch_policy(10 ** 400)),
    cf_custom(epoch_policy(None)),
])
def test_malformed_expiry_counts_as_expired_never_as_valid_forever(query: str) -> None:
    sig = signature_of(query)
    assert sig is not None and sig.expires_at == 0.0
    assert sig.expired(0.0)


@pytest.mark.parametrize(("piece", "name"), [
    ("a=1", "a"), ("a", "a"), ("=1", ""), ("a=b=c", "a"), ("a+b=1", "a b"), ("%41%42=1", "AB"),
    ("caf%C3%A9=1", "café"), ("%zz=1", "%zz"), ("100%=1", "100%"), ("a%ff=1", "a%ff"), ("a+%zz=1", "a+%zz"),
    ("x-amz-signature=1", "X-Amz-Signature"), ("X-AMZ-SECURITY-TOKEN", "X-Amz-Security-Token"),
    ("x%2Dgoog%2Ddate=1", "X-Goog-Date"), ("X-Amz-Security-To\u212aen=1", "X-Amz-Security-To\u212aen"),
    ("signature=1", "signature"), ("key-pair-id=1", "key-pair-id"),
])
def test_param_name_decodes_and_canonicalizes(piece: str, name: str) -> None:
    assert param_name(piece) == name


def test_without_signature_keeps_everything_else_byte_for_byte_in_order() -> None:
    assert without_signature(S3_STS) == "response-content-disposition=attachment%3B%20filename%3D%22a.mp4%22"
    assert without_signature(CF_CANNED) == "color=red&size=medium"
    assert without_signature(CF_CUSTOM) == ""
    assert without_signature("b=2&" + GCS + "&a=%2F&&a=1") == "b=2&a=%2F&a=1"
    kept = "X-Amz-Meta-Color=red&Signatures=3"
    assert without_signature("x-amz-signature=1&" + kept) == kept
    assert without_signature("") == ""


# Queries built from the characters and names that matter here.
_NAMES = ["X-Amz-Signature", "Expires", "x-goog-date", "Key-Pair-Id"]
_PIECES = st.lists(st.sampled_from(list("aZ=&%+2F-_~ .é") + _NAMES))
_QUERIES = _PIECES.map("".join)


@given(_QUERIES)
def test_without_signature_leaves_no_signature_and_is_idempotent(query: str) -> None:
    cleaned = without_signature(query)
    assert signature_of(cleaned) is None
    assert without_signature(cleaned) == cleaned
    assert all(param_name(p) not in SIGNATURE_PARAMS for p in cleaned.split("&") if p)


@given(st.text())
def test_odd_queries_never_raise(query: str) -> None:
    sig = signature_of(query)
    assert sig is None or sig.scheme in ("sigv4", "cloudfront", "gcs")
    assert len(without_signature(query)) <= len(query)
