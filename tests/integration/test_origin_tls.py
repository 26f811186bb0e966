"""TLS to origins (proxy.cache.tls): a real aiohttp HTTPS origin on loopback with certificates from a
test CA (trustme), fetched through ``TCPConnector(ssl=client_context(...))``."""

from __future__ import annotations

import datetime
import socket
import socketserver
import ssl
import threading
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import AsyncIterator, Iterator

import aiohttp
import pytest
import trustme
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from proxy.cache.tls import client_context, tls_failure
from proxy.core.config_error import ConfigError

pytestmark = pytest.mark.integration

BODY = b"known bytes from the origin \x00\x01\x02" * 7
TIMEOUT = aiohttp.ClientTimeout(total=10)  # every request's bound


class Origin:
    """What the HTTPS origin saw: the SNI names of its handshakes, the client certificates' names."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sni: list[str | None] = []

    def url(self, host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.port}/media"


async def _media(request: web.Request) -> web.Response:
    peer = request.transport.get_extra_info("peercert") if request.transport else None
    names = [v for k, v in (peer or {}).get("subjectAltName", ()) if k == "DNS"]
    return web.Response(body=BODY, headers={"X-Client-Cert": ",".join(names) or "-"})


@asynccontextmanager
async def https_origin(leaf: trustme.LeafCert, *, client_ca: trustme.CA | None = None,
                       max_version: ssl.TLSVersion | None = None) -> AsyncIterator[Origin]:
    """An aiohttp HTTPS server on 127.0.0.1 (a free port) presenting ``leaf``; with ``client_ca`` it
    requires a client certificate issued by that CA."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(server_ctx)
    if client_ca is not None:
        client_ca.configure_trust(server_ctx)
        server_ctx.verify_mode = ssl.CERT_REQUIRED
    if max_version is not None:
        server_ctx.maximum_version = max_version
    app = web.Application()
    app.router.add_get("/media", _media)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    origin = Origin(runner.addresses[0][1])
    server_ctx.sni_callback = lambda _obj, name, _ctx: origin.sni.append(name)
    try:
        yield origin
    finally:
        await runner.cleanup()


async def get(ctx: ssl.SSLContext, url: str) -> tuple[int, bytes, str]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx), timeout=TIMEOUT) as session:
        async with session.get(url) as resp:
            return resp.status, await resp.read(), resp.headers["X-Client-Cert"]


async def failure(ctx: ssl.SSLContext, url: str) -> BaseException:
    with pytest.raises(aiohttp.ClientError) as info:
        await get(ctx, url)
    return info.value


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_pem(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def write_cert(tmp_path: Path, leaf: trustme.LeafCert, name: str) -> tuple[str, str, str]:
    """(chain, key, chain and key in one file) as PEM files."""
    chain, key, both = tmp_path / f"{name}.crt", tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
    for i, blob in enumerate(leaf.cert_chain_pems):
        blob.write_to_path(str(chain), append=i > 0)
    leaf.private_key_pem.write_to_path(str(key))
    leaf.private_key_and_cert_chain_pem.write_to_path(str(both))
    return str(chain), str(key), str(both)


# --- verification ------------------------------------------------------------------------------


async def test_the_ca_bundle_is_trusted_and_sni_comes_from_the_url(ca: trustme.CA, ca_pem: str) -> None:
    async with https_origin(ca.issue_cert("localhost", "127.0.0.1")) as origin:
        ctx = client_context("videos", ca_bundle=ca_pem)
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2 and ctx.verify_mode == ssl.CERT_REQUIRED
        assert await get(ctx, origin.url("localhost")) == (200, BODY, "-")
        assert await get(ctx, origin.url("127.0.0.1")) == (200, BODY, "-")
    assert origin.sni == ["localhost", None]  # an IP address is sent as no SNI (RFC 6066 §3)


async def test_without_the_ca_bundle_the_system_cas_refuse_the_certificate(ca: trustme.CA) -> None:
    async with https_origin(ca.issue_cert("localhost", "127.0.0.1")) as origin:
        exc = await failure(client_context("videos"), origin.url())
        assert isinstance(exc, aiohttp.ClientConnectorCertificateError)
        msg = tls_failure("videos", origin.url(), exc)
    assert msg is not None and msg.startswith(
        f'origin "videos": TLS certificate of https://127.0.0.1:{origin.port} failed verification: ')
    assert "issuer" in msg and "origin.videos.ca_bundle" in msg and "\n" not in msg, msg


@pytest.mark.parametrize(("host", "says"), [("localhost", "Hostname mismatch"),
                                            ("127.0.0.1", "IP address mismatch")])
async def test_a_certificate_for_another_host_fails_naming_the_mismatch(ca: trustme.CA, ca_pem: str,
                                                                       host: str, says: str) -> None:
    async with https_origin(ca.issue_cert("other.example")) as origin:
        exc = await failure(client_context("videos", ca_bundle=ca_pem), origin.url(host))
        msg = tls_failure("videos", origin.url(host), exc)
    assert msg is not None and msg.startswith(
        f'origin "videos": TLS certificate of https://{host}:{origin.port} failed verification: {says}'), msg
    assert f"'{host}'" in msg and "ca_bundle" not in msg


async def test_an_expired_certificate_fails_saying_so(ca: trustme.CA, ca_pem: str) -> None:
    leaf = ca.issue_cert("127.0.0.1", not_before=datetime.datetime(2000, 1, 1),
                         not_after=datetime.datetime(2001, 1, 1))
    async with https_origin(leaf) as origin:
        exc = await failure(client_context("videos", ca_bundle=ca_pem), origin.url())
        msg = tls_failure("videos", origin.url(), exc)
    assert msg is not None and msg.endswith("failed verification: certificate has expired"), msg


async def test_verify_false_accepts_an_untrusted_mismatched_certificate(ca: trustme.CA) -> None:
    """For testing only: with verification off, anyone on the path could pose as the origin."""
    async with https_origin(ca.issue_cert("other.example")) as origin:
        ctx = client_context("videos", verify=False)
        assert await get(ctx, origin.url("localhost")) == (200, BODY, "-")
        assert isinstance(await failure(client_context("videos"), origin.url("localhost")),
                          aiohttp.ClientConnectorCertificateError)  # the same server, verified: refused


async def test_a_failure_that_is_not_tls_gives_none(ca: trustme.CA, ca_pem: str) -> None:
    async with https_origin(ca.issue_cert("127.0.0.1")) as origin:
        url = origin.url()
    exc = await failure(client_context("videos", ca_bundle=ca_pem), url)  # the server is gone: refused
    assert isinstance(exc, aiohttp.ClientConnectorError) and tls_failure("videos", url, exc) is None
    assert tls_failure("videos", url, TimeoutError()) is None


def test_tls_failure_finds_a_wrapped_ssl_error() -> None:
    inner = ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca (_ssl.c:2580)")
    inner.reason = "TLSV1_ALERT_UNKNOWN_CA"
    try:
        try:
            raise inner
        except ssl.SSLError as exc:
            raise RuntimeError("upstream run failed") from exc
    except RuntimeError as outer:
        msg = tls_failure("videos", "https://cdn.example/a/b?c", outer)
    assert msg == 'origin "videos": TLS handshake with https://cdn.example:443 failed: tlsv1 alert unknown ca'


# --- mutual TLS --------------------------------------------------------------------------------


async def test_an_origin_requiring_a_client_certificate(ca: trustme.CA, ca_pem: str, tmp_path: Path) -> None:
    chain, key, both = write_cert(tmp_path, ca.issue_cert("proxy.client.example"), "client")
    stranger_chain, stranger_key, _ = write_cert(tmp_path, trustme.CA().issue_cert("proxy.client.example"), "x")
    async with https_origin(ca.issue_cert("127.0.0.1"), client_ca=ca) as origin:
        await failure(client_context("videos", ca_bundle=ca_pem), origin.url())  # no certificate: refused
        await failure(client_context("videos", ca_bundle=ca_pem, client_cert=stranger_chain,
                                     client_key=stranger_key), origin.url())  # one the origin does not trust
        ok = client_context("videos", ca_bundle=ca_pem, client_cert=chain, client_key=key)
        assert await get(ok, origin.url()) == (200, BODY, "proxy.client.example")
        in_one_file = client_context("videos", ca_bundle=ca_pem, client_cert=both)
        assert await get(in_one_file, origin.url()) == (200, BODY, "proxy.client.example")


class _RefusingHandler(socketserver.BaseRequestHandler):
    """The handshake, in the connection's thread; when it fails (OpenSSL has sent its alert) the
    connection is closed the lingering way: what the client sent meanwhile is read first, so the
    close is not a reset that could reach the client before the alert."""

    server: _RefusingServer

    def handle(self) -> None:
        tls = self.server.tls.wrap_socket(self.request, server_side=True, do_handshake_on_connect=False)
        try:
            tls.do_handshake()
        except (ssl.SSLError, OSError):
            with socket.socket(fileno=tls.detach()) as raw:
                raw.settimeout(5)
                with suppress(OSError):
                    raw.shutdown(socket.SHUT_WR)
                    while raw.recv(65536):
                        pass
            return
        tls.close()


class _RefusingServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    tls: ssl.SSLContext


@contextmanager
def refusing_origin(leaf: trustme.LeafCert, client_ca: trustme.CA, max_version: ssl.TLSVersion) -> Iterator[str]:
    """A stdlib TLS server in a thread requiring a client certificate. Unlike asyncio's server,
    which drops the connection, it sends the TLS alert a server like nginx sends when the client
    presents none. Yields its URL."""
    server = _RefusingServer(("127.0.0.1", 0), _RefusingHandler)
    server.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(server.tls)
    client_ca.configure_trust(server.tls)
    server.tls.verify_mode = ssl.CERT_REQUIRED
    server.tls.maximum_version = max_version
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/media"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize(("max_version", "says"), [
    (ssl.TLSVersion.TLSv1_3, "tlsv13 alert certificate required (the origin requires a client certificate: "
                             "set origin.videos.client_cert)"),
    (ssl.TLSVersion.TLSv1_2, "sslv3 alert handshake failure"),
])
async def test_a_refused_handshake_is_named_a_tls_failure(ca: trustme.CA, ca_pem: str,
                                                         max_version: ssl.TLSVersion, says: str) -> None:
    with refusing_origin(ca.issue_cert("127.0.0.1"), ca, max_version) as url:
        exc = await failure(client_context("videos", ca_bundle=ca_pem), url)
    assert tls_failure("videos", url, exc) == f'origin "videos": TLS handshake with {url[:-len("/media")]} failed: {says}'


# --- configuration mistakes --------------------------------------------------------------------


def _encrypted_key(tmp_path: Path, leaf: trustme.LeafCert) -> str:
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    path = tmp_path / "encrypted.key"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"secret")))
    return str(path)


@pytest.mark.parametrize(("settings", "key", "says"), [
    (dict(ca_bundle="{missing}"), "ca_bundle", "cannot read {missing}: No such file or directory"),
    (dict(ca_bundle="{dir}"), "ca_bundle", "cannot read {dir}: Is a directory"),
    (dict(ca_bundle="{garbage}"), "ca_bundle", "{garbage} holds no usable PEM CA certificate"),
    (dict(ca_bundle="{key}"), "ca_bundle", "{key} holds no usable PEM CA certificate"),
    (dict(client_cert="{missing}"), "client_cert", "cannot read {missing}"),
    (dict(client_cert="{garbage}", client_key="{key}"), "client_cert", "{garbage} holds no PEM certificate"),
    (dict(client_cert="{chain}"), "client_cert", "{chain} holds no PEM private key (set client_key"),
    (dict(client_cert="{chain}", client_key="{missing}"), "client_key", "cannot read {missing}"),
    (dict(client_cert="{chain}", client_key="{garbage}"), "client_key", "{garbage} holds no PEM private key"),
    (dict(client_cert="{chain}", client_key="{other_key}"), "client_key", "{other_key} does not match the certificate in {chain}"),
    (dict(client_cert="{chain}", client_key="{encrypted}"), "client_key", "{encrypted} holds an encrypted private key"),
    (dict(client_key="{key}"), "client_key", "is set without client_cert"),
])
def test_a_file_that_cannot_be_loaded_is_a_config_error_naming_the_key(
        ca: trustme.CA, ca_pem: str, tmp_path: Path, settings: dict[str, str], key: str, says: str) -> None:
    chain, pem_key, _ = write_cert(tmp_path, ca.issue_cert("client.example"), "client")
    _, other_key, _ = write_cert(tmp_path, ca.issue_cert("other.example"), "other")
    (tmp_path / "garbage.pem").write_text("not a PEM file\n")
    (tmp_path / "dir").mkdir()
    files = {"missing": str(tmp_path / "missing.pem"), "dir": str(tmp_path / "dir"),
             "garbage": str(tmp_path / "garbage.pem"), "key": pem_key, "chain": chain, "other_key": other_key,
             "encrypted": _encrypted_key(tmp_path, ca.issue_cert("client.example"))}
    with pytest.raises(ConfigError) as info:
        client_context("videos", **{k: v.format(**files) for k, v in settings.items()})  # type: ignore[arg-type]
    assert info.value.key == f"origin.videos.{key}"
    assert info.value.message.startswith(says.format(**files)), info.value.message
