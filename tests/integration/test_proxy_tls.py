"""HTTPS on the proxy itself: a second listener (tls_port) beside the plain one, with a
certificate from a test CA (trustme); the same cache behind both."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support.client import fetch
from tests.support.data import seeded_bytes
from tests.support.fault_origin import FaultOrigin
from tests.support.servers import DEFAULT_SLICE, REPO_ROOT, free_port
from tests.support.tls import issue_certificate

pytestmark = pytest.mark.integration

S = DEFAULT_SLICE


async def test_https_and_http_listeners_serve_the_same_cache(fault_origin: FaultOrigin, proxy_factory,
                                                             tmp_path: Path) -> None:
    ca, chain, key = issue_certificate(tmp_path)
    data = seeded_bytes(3 * S + 7, 81)
    fault_origin.set_object("s.bin", data, cache_control="max-age=600")
    tls_port = free_port()
    proxy = proxy_factory(fault_origin.url, tls_cert=chain, tls_key=key, tls_port=tls_port)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ctx)) as https:
        url = f"https://127.0.0.1:{tls_port}/s.bin"
        out = await fetch(https, url, headers={"Range": f"bytes={S}-{2 * S + 3}"})
        assert out.status == 206 and out.body == data[S:2 * S + 4]
        out = await fetch(https, url)
        assert out.status == 200 and out.body == data
    (first, *_) = fault_origin.gets_for("s.bin")
    assert first.headers["X-Forwarded-Proto"] == "https"
    async with aiohttp.ClientSession() as http:  # the plain listener, the same cache
        out = await fetch(http, proxy.url_for("s.bin"))
        assert out.status == 200 and out.body == data and out.header("X-Cache") == "HIT"
    # A client that does not trust the certificate is refused by TLS, not answered.
    async with aiohttp.ClientSession() as strict:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await fetch(strict, f"https://127.0.0.1:{tls_port}/s.bin")
    proxy.stop()  # SIGTERM with both listeners: a clean exit 0


@pytest.mark.parametrize(("args", "key", "says"), [
    (["--set", "tls_cert=CHAIN"], "tls_key", "must be set too"),
    (["--set", "tls_cert=MISSING", "--set", "tls_key=KEY"], "tls_cert", "readable PEM file"),
    (["--set", "tls_cert=KEY", "--set", "tls_key=KEY"], "tls_cert", "cannot be loaded"),
])
def test_a_tls_mistake_stops_start_up_naming_the_key(tmp_path: Path, args: list[str], key: str, says: str) -> None:
    _, chain, pem_key = issue_certificate(tmp_path)
    names = {"CHAIN": str(chain), "KEY": str(pem_key), "MISSING": str(tmp_path / "nope.pem")}
    argv = [a.split("=")[0] + "=" + names[a.split("=")[1]] if "=" in a else a for a in args]
    proc = subprocess.run([sys.executable, "-m", "proxy", "--upstream", "http://127.0.0.1:9", "--port", "0",
                           "--cache-dir", str(tmp_path / "cache"), *argv],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"config error: {key}" in proc.stderr and says in proc.stderr, proc.stderr


async def test_https_with_several_workers(fault_origin: FaultOrigin, proxy_factory, tmp_path: Path) -> None:
    ca, chain, key = issue_certificate(tmp_path)
    data = seeded_bytes(2 * S, 82)
    fault_origin.set_object("w.bin", data, cache_control="max-age=600")
    tls_port = free_port()
    proxy = proxy_factory(fault_origin.url, tls_cert=chain, tls_key=key, tls_port=tls_port, workers=2)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ctx, force_close=True)) as https:
        for _ in range(6):  # connections land on either worker
            out = await fetch(https, f"https://127.0.0.1:{tls_port}/w.bin", headers={"Range": "bytes=10-99"})
            assert out.status == 206 and out.body == data[10:100]
    proxy.stop()
