"""An HTTPS origin behind the proxy: the fault origin speaking TLS with a certificate from a test CA
(trustme) for 127.0.0.1/localhost, trusted through the origin's ``ca_bundle``; mutual TLS with
``client_cert``; a verification failure is a 502 and a log line naming the origin."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.support.client import fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.origins import Pki, config_error, poll, write_config
from tests.support.servers import DEFAULT_SLICE, ProxyProc

pytestmark = pytest.mark.integration

S = DEFAULT_SLICE
DATA = seeded_bytes(3 * S + 21, 301)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.create(tmp_path / "pki")


def https_origin(pki: Pki, require_client_cert: bool = False) -> Iterator[FaultOrigin]:
    with FaultOrigin(ssl_context=pki.server_context(require_client_cert)) as origin:
        origin.set_object("s.bin", DATA, cache_control="max-age=600")
        yield origin


@pytest.fixture
def origin(pki: Pki) -> Iterator[FaultOrigin]:
    yield from https_origin(pki)


@pytest.fixture
def mtls_origin(pki: Pki) -> Iterator[FaultOrigin]:
    yield from https_origin(pki, require_client_cert=True)


def start(proxy_factory: Callable[..., ProxyProc], tmp_path: Path, url: str, **table: object) -> ProxyProc:
    config = write_config(tmp_path / "tls.toml", [{"name": "secure", "upstream": url, **table}], readahead_slices=0)
    return proxy_factory("", config=config)


async def test_an_https_origin_trusted_through_its_ca_bundle(origin: FaultOrigin, pki: Pki, proxy_factory,
                                                             tmp_path, http) -> None:
    assert origin.url.startswith("https://127.0.0.1:")
    proxy = start(proxy_factory, tmp_path, origin.url, ca_bundle=pki.ca_pem)
    url = proxy.url_for("s.bin")
    for rng, part in ((f"{S - 5}-{2 * S + 4}", slice(S - 5, 2 * S + 5)), (f"-{S // 2}", slice(-(S // 2), None))):
        out = await fetch(http, url, headers={"Range": f"bytes={rng}"})
        assert out.status == 206 and out.body == DATA[part], rng
    out = await fetch(http, url)
    assert out.status == 200 and out.body == DATA
    assert all(r.status in (200, 206) for r in origin.gets_for("s.bin")) and origin.gets_for("s.bin")
    # localhost is on the certificate too (the name checked is the upstream URL's).
    https_localhost = origin.url.replace("127.0.0.1", "localhost")
    proxy = start(proxy_factory, tmp_path / "b", https_localhost, ca_bundle=pki.ca_pem)
    out = await fetch(http, proxy.url_for("s.bin"), headers={"Range": "bytes=10-19"})
    assert out.status == 206 and out.body == DATA[10:20]


async def test_without_the_ca_bundle_verification_fails_with_502_and_a_log_naming_the_origin(
        origin: FaultOrigin, proxy_factory, tmp_path, http) -> None:
    proxy = start(proxy_factory, tmp_path, origin.url)
    for headers in ({"Range": "bytes=0-99"}, {}):
        out = await fetch(http, proxy.url_for("s.bin"), headers=headers)
        assert out.status == 502, (out.status, out.body[:200])
        assert DATA[:100] not in out.body
    line = poll(lambda: next((x for x in proxy.stderr_text().splitlines() if "failed verification" in x), ""))
    assert 'origin "secure": TLS certificate of ' + origin.url in line, proxy.stderr_text()[-2000:]
    assert "origin.secure.ca_bundle" in line  # what to set
    assert not origin.requests  # no request went out over an unverified connection


async def test_tls_verify_false_trusts_any_certificate(origin: FaultOrigin, proxy_factory, tmp_path, http) -> None:
    proxy = start(proxy_factory, tmp_path, origin.url, tls_verify=False)
    out = await fetch(http, proxy.url_for("s.bin"), headers={"Range": "bytes=5-9"})
    assert out.status == 206 and out.body == DATA[5:10]


async def test_a_client_certificate_for_an_origin_that_requires_one(mtls_origin: FaultOrigin, pki: Pki,
                                                                    proxy_factory, tmp_path, http) -> None:
    refused = start(proxy_factory, tmp_path / "none", mtls_origin.url, ca_bundle=pki.ca_pem)
    out = await fetch(http, refused.url_for("s.bin"), headers={"Range": "bytes=0-9"})
    assert out.status == 502 and not mtls_origin.requests  # (asyncio's server drops such a connection
    # without the TLS alert nginx would send, so the log says the server disconnected: test_origin_tls.py)
    assert poll(lambda: f"{mtls_origin.url}/s.bin" in refused.stderr_text()), refused.stderr_text()[-2000:]
    proxy = start(proxy_factory, tmp_path / "cert", mtls_origin.url, ca_bundle=pki.ca_pem,
                  client_cert=pki.client_pem)
    out = await fetch(http, proxy.url_for("s.bin"), headers={"Range": f"bytes={S}-{2 * S}"})
    assert out.status == 206 and out.body == DATA[S:2 * S + 1]
    out = await fetch(http, proxy.url_for("s.bin"))
    assert out.status == 200 and out.body == DATA
    assert {r.client_cert for r in mtls_origin.requests} == {("proxy.client.test",)}


async def test_a_client_key_in_its_own_file(mtls_origin: FaultOrigin, pki: Pki, proxy_factory, tmp_path,
                                            http) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf = pki.client_ca.issue_cert("split.client.test")
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    proxy = start(proxy_factory, tmp_path, mtls_origin.url, ca_bundle=pki.ca_pem, client_cert=cert, client_key=key)
    out = await fetch(http, proxy.url_for("s.bin"), headers={"Range": "bytes=100-199"})
    assert out.status == 206 and out.body == DATA[100:200]
    assert {r.client_cert for r in mtls_origin.requests} == {("split.client.test",)}


@pytest.mark.parametrize(("key", "value"), [
    ("ca_bundle", "missing.pem"),
    ("client_cert", "missing.pem"),
    ("ca_bundle", "not-pem.txt"),
])
def test_a_tls_file_that_cannot_be_loaded_stops_start_up_naming_the_key(tmp_path: Path, key: str,
                                                                        value: str) -> None:
    (tmp_path / "not-pem.txt").write_text("not a certificate\n")
    config = write_config(tmp_path / "bad.toml", [{"name": "secure", "upstream": "https://127.0.0.1:9",
                                                   key: str(tmp_path / value)}])
    stderr = config_error(config)
    assert f"config error: origin.secure.{key}" in stderr, stderr
