"""A private S3 bucket through the proxy: moto's S3 with authentication on (``tests.support.s3``,
presigned URLs checked as S3 checks them), the real proxy with one ``[[origin]]`` whose upstream
is ``<endpoint>/<bucket>`` (path-style). Bytes are compared with the object's, byte for byte;
what reached the bucket is read from moto's request log (``S3Server.requests_for``), the bytes
the proxy fetched from its ``rangeproxy_upstream_bytes_total``.

- SigV4 by the proxy (credentials in the ``aws`` table, or the environment's): GET, ranges,
  multipart/byteranges, HEAD, the ETag, If-None-Match, odd keys, hits that ask the bucket nothing;
  a rotated key, then the new one written into the file and SIGHUP.
- Signed URLs (``cache_key = { preset = "signed-urls" }``): different presigned URLs of one
  object share its slices; no signature, an expired one or a tampered one is the bucket's 403,
  never a cache answer; with proxy credentials too, clients' signatures are checked by the
  bucket unsigned by the proxy, and the cache's fetches are signed by the proxy.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote

import aiohttp
import pytest
from yarl import URL

from proxy.cache.signing import AwsCredentials
from tests.support.client import Outcome, content_range, fetch, parse_multipart_byteranges
from tests.support.data import seeded_bytes
from tests.support.metrics import Samples, settled, total, val
from tests.support.s3 import S3Server, start_s3, write_proxy_config
from tests.support.servers import DEFAULT_SLICE, ProxyProc

pytestmark = pytest.mark.integration

S = DEFAULT_SLICE
KEY = "media/clip.bin"
ODD_KEY = "dir/with space+plus caf\u00e9 \u65e5\u672c.bin"
DATA = seeded_bytes(4 * S + 1234, 31)
ODD_DATA = seeded_bytes(S + 77, 32)
RANGES = [  # (Range, first byte, last byte), inclusive as on the wire
    ("bytes=0-0", 0, 0),
    ("bytes=100-199", 100, 199),
    (f"bytes={S - 6}-{S + 9}", S - 6, S + 9),  # across a slice boundary
    ("bytes=-10", len(DATA) - 10, len(DATA) - 1),
    (f"bytes={3 * S + 5}-", 3 * S + 5, len(DATA) - 1),
]
MULTI = "bytes=0-9,100-199,5000-"
MULTI_PARTS = [(0, 9), (100, 199), (5000, len(DATA) - 1)]
UPSTREAM_BYTES = "rangeproxy_upstream_bytes_total"
UPSTREAM_REQUESTS = "rangeproxy_upstream_requests_total"

# Every variable botocore's credential chain reads first, pointed at nothing but what a test gives.
NO_CHAIN = {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials", "AWS_CONFIG_FILE": "/nonexistent/config",
            "AWS_EC2_METADATA_DISABLED": "true"}


def _start(workdir: Path) -> tuple[S3Server, dict[str, str]]:
    s3 = start_s3(workdir)
    etags = {KEY: s3.put_object(KEY, DATA), ODD_KEY: s3.put_object(ODD_KEY, ODD_DATA)}
    return s3, etags


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[S3Server, dict[str, str]]]:
    """One moto for the tests that keep its user's first key; (server, ETag by key)."""
    s3, etags = _start(tmp_path_factory.mktemp("moto"))
    yield s3, etags
    s3.stop(check=False)


@pytest.fixture
def s3(bucket: tuple[S3Server, dict[str, str]]) -> S3Server:
    return bucket[0]


@pytest.fixture
def etags(bucket: tuple[S3Server, dict[str, str]]) -> dict[str, str]:
    return bucket[1]


@dataclass
class Client:
    """Requests to one proxy, counted (``settled`` waits for exactly that many)."""

    proxy: ProxyProc
    http: aiohttp.ClientSession
    sent: int = 0

    async def get(self, target: str, method: str = "GET", **headers: str) -> Outcome:
        """``target`` (path and query, sent byte for byte) on the proxy."""
        self.sent += 1
        return await fetch(self.http, URL(self.proxy.url + target, encoded=True), method=method, headers=headers)

    async def settled(self) -> Samples:
        """The metrics once every request so far is accounted and every slice is stored."""
        return await settled(self.http, self.proxy.url, self.sent)


def path_of(key: str) -> str:
    """A key's path on the proxy, in S3's canonical spelling (``S3Server.object_url``'s)."""
    return "/" + quote(key, safe="/~")


def target_of(s3: S3Server, url: str) -> str:
    """A presigned URL on the bucket as a target on the proxy (its path after the bucket, its query)."""
    return s3.through(url, "")


def tampered(url: str) -> str:
    """``url`` with one hex digit of its X-Amz-Signature changed."""
    m = re.search(r"X-Amz-Signature=([0-9a-f]+)", url)
    assert m is not None, url
    i = m.start(1) + 10
    return url[:i] + ("0" if url[i] != "0" else "1") + url[i + 1:]


def expires_at(url: str) -> float:
    m = re.search(r"X-Amz-Date=(\d{8}T\d{6}Z).*X-Amz-Expires=(\d+)", url)
    assert m is not None, url
    signed = datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    return signed.timestamp() + int(m.group(2))


def a_day_earlier(url: str) -> str:
    """``url`` with its X-Amz-Date, and the date of its credential scope, one day earlier."""
    m = re.search(r"X-Amz-Date=((\d{8})T\d{6}Z)", url)
    assert m is not None, url
    then = datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ") - timedelta(days=1)
    url = url.replace(f"%2F{m.group(2)}%2F", f"%2F{then:%Y%m%d}%2F")
    return url.replace(f"X-Amz-Date={m.group(1)}", f"X-Amz-Date={then:%Y%m%dT%H%M%SZ}")


def refused(out: Outcome, code: str) -> None:
    """The bucket's own 403 with its S3 error code, passed through: never the object's bytes."""
    assert out.status == 403, (out.status, out.body[:300])
    assert f"<Code>{code}</Code>".encode() in out.body, out.body[:300]
    assert out.header("X-Cache") != "HIT"
    assert DATA[:64] not in out.body


def check_ranges(out: Outcome, spec: str, first: int, last: int, data: bytes = DATA) -> None:
    assert out.status == 206, (spec, out.status, out.body[:200])
    assert out.complete, out.error
    assert content_range(out.header("Content-Range")) == (first, last, len(data)), spec
    assert out.body == data[first:last + 1], spec


def check_multipart(out: Outcome) -> None:
    assert out.status == 206 and out.complete, (out.status, out.error)
    parts = parse_multipart_byteranges(out.header("Content-Type") or "", out.body)
    assert [content_range(h["content-range"]) for h, _ in parts] == [(a, b, len(DATA)) for a, b in MULTI_PARTS]
    for (_, body), (a, b) in zip(parts, MULTI_PARTS):
        assert body == DATA[a:b + 1], (a, b)


ProxyFactory = Callable[..., ProxyProc]


def start(proxy_factory: ProxyFactory, http: aiohttp.ClientSession, tmp_path: Path, s3: S3Server,
          env: dict[str, str] | None = None, **config: Any) -> tuple[Client, Path]:
    """A proxy whose only origin is the bucket (``config``: :func:`write_proxy_config`'s); read-ahead
    off, so that what it fetches is what was asked."""
    path = write_proxy_config(tmp_path / f"proxy-{time.monotonic_ns()}.toml", s3, **config)
    proxy = proxy_factory("", config=path, env=env, readahead_slices=0)
    return Client(proxy, http), path


async def holding_the_object(proxy_factory: ProxyFactory, http: aiohttp.ClientSession, tmp_path: Path,
                             s3: S3Server) -> tuple[Client, str]:
    """A signed-urls proxy (no credentials of its own) that has cached KEY through a presigned
    URL; the client, and that URL's target."""
    c, _ = start(proxy_factory, http, tmp_path, s3, sign=False, signed_urls=True)
    signed = target_of(s3, s3.presign(KEY))
    assert (await c.get(signed)).body == DATA
    await c.settled()
    return c, signed


# --- the bucket itself --------------------------------------------------------------------------


async def test_the_bucket_refuses_unsigned_and_badly_presigned_requests(s3: S3Server, http) -> None:
    # The 403s below through the proxy mean something only if the bucket really checks.
    assert (await fetch(http, URL(s3.object_url(KEY), encoded=True))).status == 403
    good = s3.presign(KEY)
    ok = await fetch(http, URL(good, encoded=True))
    assert ok.status == 200 and ok.body == DATA
    refused(await fetch(http, URL(tampered(good), encoded=True)), "SignatureDoesNotMatch")


# --- SigV4 by the proxy -------------------------------------------------------------------------


async def test_a_private_object_is_read_signed_whole_ranged_multipart_head_and_304(
        s3: S3Server, etags: dict[str, str], proxy_factory: ProxyFactory, http, tmp_path: Path) -> None:
    c, _ = start(proxy_factory, http, tmp_path, s3, credentials=s3.credentials)
    mark = len(s3.requests())
    whole = await c.get(path_of(KEY))
    assert whole.status == 200 and whole.complete and whole.body == DATA
    assert whole.header("X-Cache") == "MISS"
    etag = whole.header("ETag")
    assert etag == etags[KEY]
    m = await c.settled()
    assert val(m, UPSTREAM_BYTES) == len(DATA)  # fetched once
    fetched = s3.requests_for(KEY, mark)
    assert fetched and all(r["auth"] == "header" and r["key"] == s3.credentials.access_key_id for r in fetched)
    asked = total(m, UPSTREAM_REQUESTS)

    for spec, first, last in RANGES:
        out = await c.get(path_of(KEY), Range=spec)
        check_ranges(out, spec, first, last)
        assert out.header("ETag") == etag and out.header("X-Cache") == "HIT"
    multi = await c.get(path_of(KEY), Range=MULTI)  # assembled by the proxy: S3 answers one range only
    check_multipart(multi)
    assert multi.header("ETag") == etag and multi.header("X-Cache") == "HIT"
    head = await c.get(path_of(KEY), method="HEAD")
    assert head.status == 200 and head.body == b""
    assert head.header("Content-Length") == str(len(DATA)) and head.header("ETag") == etag
    not_modified = await c.get(path_of(KEY), **{"If-None-Match": etag})
    assert not_modified.status == 304 and not_modified.body == b"" and not_modified.header("ETag") == etag
    again = await c.get(path_of(KEY))
    assert again.status == 200 and again.body == DATA
    assert again.header("X-Cache") == "HIT" and again.header("ETag") == etag

    m = await c.settled()
    assert val(m, UPSTREAM_BYTES) == len(DATA)
    assert total(m, UPSTREAM_REQUESTS) == asked
    assert s3.requests_for(KEY, mark) == fetched, "a hit asked the bucket"


async def test_a_key_with_a_space_a_plus_and_unicode_is_fetched_in_the_canonical_spelling(
        s3: S3Server, etags: dict[str, str], proxy_factory: ProxyFactory, http, tmp_path: Path) -> None:
    c, _ = start(proxy_factory, http, tmp_path, s3, credentials=s3.credentials)
    mark = len(s3.requests())
    target = path_of(ODD_KEY)
    assert "%20" in target and "%2B" in target and "%C3%A9" in target
    whole = await c.get(target)
    assert whole.status == 200 and whole.body == ODD_DATA and whole.header("ETag") == etags[ODD_KEY]
    await c.settled()
    check_ranges(await c.get(target, Range=f"bytes={S - 3}-{S + 3}"), "boundary", S - 3, S + 3, ODD_DATA)
    again = await c.get(target)
    assert again.body == ODD_DATA and again.header("X-Cache") == "HIT"
    # A '+' spelt as it is, not %2B: the same key, the same bytes (a cache entry of its own).
    raw_plus = target.replace("%2B", "+")
    other = await c.get(raw_plus)
    assert other.status == 200 and other.body == ODD_DATA
    # Every fetch, of either spelling, went out in S3's canonical one (what the signature covers).
    sent = s3.requests_for(ODD_KEY, mark)
    assert sent and {r["target"] for r in sent} == {f"/{s3.bucket}{target}"}


async def test_credentials_from_the_environment_sign_the_fetches(
        s3: S3Server, proxy_factory: ProxyFactory, http, tmp_path: Path) -> None:
    env = {**NO_CHAIN, "AWS_ACCESS_KEY_ID": s3.credentials.access_key_id,
           "AWS_SECRET_ACCESS_KEY": s3.credentials.secret_access_key}
    c, path = start(proxy_factory, http, tmp_path, s3, env=env)
    assert "access_key_id" not in path.read_text()
    mark = len(s3.requests())
    check_ranges(await c.get(path_of(KEY), Range="bytes=100-199"), "env", 100, 199)
    whole = await c.get(path_of(KEY))
    assert whole.status == 200 and whole.body == DATA
    sent = s3.requests_for(KEY, mark)
    assert sent and all(r["auth"] == "header" and r["key"] == s3.credentials.access_key_id for r in sent)


@pytest.mark.timeout(90)
async def test_a_rotated_key_fails_cleanly_until_the_new_one_is_loaded_on_sighup(
        proxy_factory: ProxyFactory, http, tmp_path: Path) -> None:
    s3, _ = _start(tmp_path / "own-moto")  # its own: its key gets deleted
    try:
        others = {f"other-{n}.bin": seeded_bytes(2 * S + n, 40 + n) for n in range(3)}
        for key, data in others.items():
            s3.put_object(key, data)
        old = s3.credentials
        c, path = start(proxy_factory, http, tmp_path, s3, env={**NO_CHAIN, "AWS_ACCESS_KEY_ID": old.access_key_id,
                                                               "AWS_SECRET_ACCESS_KEY": old.secret_access_key})
        cached = await c.get(path_of(KEY))
        assert cached.status == 200 and cached.body == DATA
        await c.settled()

        new = s3.rotate_credentials()
        assert new.access_key_id != old.access_key_id
        # The old key is gone: what the cache does not hold is the bucket's 403, passed through.
        refused(await c.get(path_of("other-0.bin")), "InvalidAccessKeyId")
        refused(await c.get(path_of("other-0.bin"), Range="bytes=10-20"), "InvalidAccessKeyId")
        hit = await c.get(path_of(KEY), Range="bytes=100-199")
        check_ranges(hit, "cached", 100, 199)
        assert hit.header("X-Cache") == "HIT"

        write_proxy_config(path, s3, credentials=new)
        assert c.proxy.reload() == "reloaded", c.proxy.stderr_text()[-2000:]
        before = await c.settled()
        mark = len(s3.requests())
        for key, data in others.items():  # other-0 was refused before the reload; the others never asked
            whole = await c.get(path_of(key))
            assert whole.status == 200 and whole.body == data, (key, whole.status, whole.body[:200])
            check_ranges(await c.get(path_of(key), Range=f"bytes={S - 1}-{S}"), key, S - 1, S, data)
        again = await c.get(path_of(KEY))
        assert again.status == 200 and again.body == DATA
        after = await c.settled()
        # No request failed after the reload: every one the proxy made was answered 200 or 206.
        grown = {labels: after[(name, labels)] - before.get((name, labels), 0.0)
                 for name, labels in after if name == UPSTREAM_REQUESTS}
        failed = {dict(ls)["status"]: n for ls, n in grown.items() if n and dict(ls)["status"] not in ("200", "206")}
        assert not failed and sum(grown.values()) > 0, grown
        sent = [r for r in s3.requests()[mark:] if r["target"].startswith(f"/{s3.bucket}/")]
        assert sent and all(r["auth"] == "header" and r["key"] == new.access_key_id for r in sent)
    finally:
        s3.stop(check=False)


# --- signed URLs ----------------------------------------------------------------------------------


async def test_two_different_presigned_urls_share_the_slices(
        s3: S3Server, proxy_factory: ProxyFactory, http, tmp_path: Path) -> None:
    c, _ = start(proxy_factory, http, tmp_path, s3, sign=False, signed_urls=True)
    one = target_of(s3, s3.presign(KEY, expires=3600))
    two = target_of(s3, s3.presign(KEY, expires=600, credentials=s3.assume_role()))  # another principal
    assert one.split("?")[0] == two.split("?")[0] and one != two
    mark = len(s3.requests())
    first = await c.get(one)
    assert first.status == 200 and first.body == DATA and first.header("X-Cache") == "MISS"
    m = await c.settled()
    assert val(m, UPSTREAM_BYTES) == len(DATA)
    second = await c.get(two)
    assert second.status == 200 and second.body == DATA and second.header("X-Cache") == "HIT"
    check_ranges(await c.get(two, Range="bytes=100-199"), "two", 100, 199)
    check_multipart(await c.get(one, Range=MULTI))
    m = await c.settled()
    assert val(m, UPSTREAM_BYTES) == len(DATA), "the second URL fetched the object again"
    sent = s3.requests_for(KEY, mark)
    assert all(r["auth"] == "query" for r in sent), sent  # no proxy credentials: clients' URLs only
    checks = [r for r in sent if r["range"] == "bytes=0-0"]
    assert {r["target"] for r in checks} == {f"/{s3.bucket}{one}", f"/{s3.bucket}{two}"}


async def test_without_a_signature_the_bucket_answers_even_when_the_object_is_cached(
        s3: S3Server, proxy_factory: ProxyFactory, http, tmp_path: Path) -> None:
    c, _ = await holding_the_object(proxy_factory, http, tmp_path, s3)
    mark = len(s3.requests())
    for out in (await c.get(path_of(KEY)), await c.get(path_of(KEY), Range="bytes=0-99"),
                await c.get(path_of(KEY) + "?versionId=null")):
        assert out.status == 403, (out.status, out.header("X-Cache"), out.body[:200])
        assert out.header("X-Cache") != "HIT" and DATA[:64] not in out.body
    head = await c.get(path_of(KEY), method="HEAD")
    assert head.status == 403 and head.header("X-Cache") != "HIT"
    sent = s3.requests_for(KEY, mark)
    assert len(sent) == 4 and all(r["auth"] == "none" for r in sent), sent  # each passed through, as it came


async def test_an_expired_presigned_url_is_refused_even_when_the_object_is_cached(
        s3: S3Server, proxy_factory: ProxyFactory, http, tmp_path: Path) -> None:
    c, _ = await holding_the_object(proxy_factory, http, tmp_path, s3)
    short_url = s3.presign(KEY, expires=4)
    short = target_of(s3, short_url)
    hit = await c.get(short, Range="bytes=0-99")  # accepted by the bucket while valid
    check_ranges(hit, "short", 0, 99)
    assert hit.header("X-Cache") == "HIT"
    wait = expires_at(short_url) - time.time() + 0.2
    assert 0 < wait < 5
    await asyncio.sleep(wait)
    refused(await c.get(short, Range="bytes=0-99"), "AccessDenied")
    refused(await c.get(short), "AccessDenied")
    # Signed a day ago, by what it says (the signature no longer matches either: the bucket says expired).
    stale = a_day_earlier(target_of(s3, s3.presign(KEY)))
    refused(await c.get(stale), "AccessDenied")


async def test_a_tampered_signature_is_refused_even_when_the_object_is_cached(
        s3: S3Server, proxy_factory: ProxyFactory, http, tmp_path: Path) -> None:
    c, good = await holding_the_object(proxy_factory, http, tmp_path, s3)
    bad = tampered(good)
    refused(await c.get(bad), "SignatureDoesNotMatch")
    refused(await c.get(bad, Range="bytes=0-99"), "SignatureDoesNotMatch")
    ok = await c.get(good, Range="bytes=0-99")
    check_ranges(ok, "good", 0, 99)
    assert ok.header("X-Cache") == "HIT"


async def test_signed_urls_with_proxy_credentials_check_clients_unsigned_and_fetch_signed(
        s3: S3Server, proxy_factory: ProxyFactory, http, tmp_path: Path) -> None:
    client_key: AwsCredentials = s3.add_access_key()  # another key of the user: told apart in the log
    c, _ = start(proxy_factory, http, tmp_path, s3, credentials=s3.credentials, signed_urls=True)
    url = target_of(s3, s3.presign(KEY, credentials=client_key))
    mark = len(s3.requests())
    whole = await c.get(url)
    assert whole.status == 200 and whole.body == DATA
    check_ranges(await c.get(url, Range="bytes=100-199"), "client", 100, 199)
    m = await c.settled()
    assert val(m, UPSTREAM_BYTES) == len(DATA)
    other = target_of(s3, s3.presign(KEY, expires=900, credentials=client_key))
    hit = await c.get(other)
    assert hit.body == DATA and hit.header("X-Cache") == "HIT"
    # The proxy's credentials are never lent to a client without a (valid) signature of its own.
    for unsigned in (await c.get(path_of(KEY)), await c.get(path_of(ODD_KEY))):  # cached, and not
        assert unsigned.status == 403 and DATA[:64] not in unsigned.body and ODD_DATA[:64] not in unsigned.body
    refused(await c.get(tampered(url)), "SignatureDoesNotMatch")

    sent = s3.requests_for(KEY, mark)
    checks = [r for r in sent if r["auth"] == "query"]
    fetches = [r for r in sent if r["auth"] == "header"]
    assert {r["key"] for r in checks} == {client_key.access_key_id}
    # One one-byte check per client URL; the refused one is then passed through as it came.
    assert sorted((r["target"], r["range"]) for r in checks) == sorted(
        [(f"/{s3.bucket}{u}", "bytes=0-0") for u in (url, other, tampered(url))] + [(f"/{s3.bucket}{tampered(url)}", "")])
    # The cache's fetches: the proxy's key, and none of the client's signature beside it.
    assert fetches and {r["key"] for r in fetches} == {s3.credentials.access_key_id}
    assert all("X-Amz-" not in r["target"] for r in fetches), fetches
    assert [r["auth"] for r in sent if r["auth"] == "none"] == ["none"]  # the unsigned one, as it came
    odd = s3.requests_for(ODD_KEY, mark)
    assert [r["auth"] for r in odd] == ["none"], odd
