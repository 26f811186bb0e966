"""HTTP/2 to clients through the loopback cluster's front: HAProxy terminates TLS and h2 (ALPN
``h2,http/1.1``) while the nodes speak HTTP/1.1 behind it (aiohttp serves only HTTP/1.1). A real h2
client on a socket reads a range and a multi-range byte for byte."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from cluster.loopback import LoopbackCluster
from tests.support.client import content_range, parse_multipart_byteranges
from tests.support.cluster import start_cluster
from tests.support.data import seeded_bytes
from tests.support.h2client import h2_get
from tests.support.servers import DEFAULT_SLICE, start_appserver
from tests.support.tls import client_context, issue_certificate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SIZE = 3 * DEFAULT_SLICE + 77
NAME = "h2/object.bin"


@pytest.fixture
def tls_fleet(tmp_path: Path) -> Iterator[tuple[LoopbackCluster, object, bytes]]:
    data = seeded_bytes(SIZE, 2017)
    media = tmp_path / "media"
    (media / "h2").mkdir(parents=True)
    (media / NAME).write_bytes(data)
    ca, chain, key = issue_certificate(tmp_path)
    origin = start_appserver(media, tmp_path / "appserver")
    try:
        with start_cluster(origin.url, tmp_path / "cluster", 2, slice_size=DEFAULT_SLICE, drain_period=3.0,
                           tls_cert=chain, tls_key=key) as cluster:
            yield cluster, ca, data
    finally:
        origin.stop()


def test_h2_client_reads_ranges_through_the_tls_front(tls_fleet) -> None:
    cluster, ca, data = tls_fleet
    assert cluster.front_url.startswith("https://")
    ctx = client_context(ca, ["h2", "http/1.1"])
    lo, hi = DEFAULT_SLICE - 10, 2 * DEFAULT_SLICE + 9
    one = h2_get(cluster.front_port, f"/{NAME}", ssl_context=ctx, headers=[(b"range", f"bytes={lo}-{hi}".encode())],
                 timeout=60)
    assert one.alpn == "h2"
    assert one.main.ended and one.main.status == 206
    assert content_range(one.main.header(b"content-range").decode()) == (lo, hi, SIZE)  # type: ignore[union-attr]
    assert one.main.body == data[lo:hi + 1]
    node = one.main.header(b"x-cache-node")
    assert node in (b"node1", b"node2"), one.main.headers

    wanted = [(0, 9), (DEFAULT_SLICE - 1, DEFAULT_SLICE + 1), (SIZE - 50, SIZE - 1)]
    spec = "bytes=" + ",".join(f"{a}-{b}" for a, b in wanted)
    multi = h2_get(cluster.front_port, f"/{NAME}?sig=1", ssl_context=ctx, headers=[(b"range", spec.encode())],
                   timeout=60)
    assert multi.alpn == "h2" and multi.main.ended and multi.main.status == 206
    ctype = multi.main.header(b"content-type")
    assert ctype is not None and ctype.startswith(b"multipart/byteranges")
    parts = parse_multipart_byteranges(ctype.decode(), multi.main.body)
    assert [(content_range(h["content-range"]), body) for h, body in parts] == \
        [((a, b, SIZE), data[a:b + 1]) for a, b in wanted]
    assert multi.main.header(b"x-cache-node") == node  # balance uri hashes the path, not the query

    whole = h2_get(cluster.front_port, f"/{NAME}", ssl_context=ctx, timeout=60)
    assert whole.alpn == "h2" and whole.main.status == 200 and whole.main.body == data


def test_an_http11_client_still_gets_http11_over_the_tls_front(tls_fleet) -> None:
    import http.client

    cluster, ca, data = tls_fleet
    ctx = client_context(ca, ["http/1.1"])
    conn = http.client.HTTPSConnection("127.0.0.1", cluster.front_port, context=ctx, timeout=60)
    try:
        conn.request("GET", f"/{NAME}", headers={"Range": "bytes=5-104"})
        r = conn.getresponse()
        body = r.read()
        assert conn.sock is None or conn.sock.selected_alpn_protocol() == "http/1.1"
        assert r.version == 11 and r.status == 206 and body == data[5:105]
        assert r.getheader("X-Cache-Node") in ("node1", "node2")
    finally:
        conn.close()


def test_python_m_cluster_tls_serves_h2_on_the_front(tmp_path: Path) -> None:
    import re
    import signal
    import subprocess
    import sys
    import time

    from tests.support.servers import REPO_ROOT, subprocess_env
    from tests.support.tools import require_tool

    require_tool("haproxy", package="haproxy")
    data = seeded_bytes(SIZE, 2018)
    (tmp_path / "media" / "h2").mkdir(parents=True)
    (tmp_path / "media" / NAME).write_bytes(data)
    ca, chain, key = issue_certificate(tmp_path)
    origin = start_appserver(tmp_path / "media", tmp_path / "appserver")
    out_path = tmp_path / "cluster.out"
    try:
        with open(out_path, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "cluster", "--nodes", "1", "--origin", origin.url,
                                     "--port", "0", "--workdir", str(tmp_path / "w"), "--drain-period", "1",
                                     "--tls", str(chain), str(key)],
                                    stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=subprocess_env())
        try:
            text = ""
            for _ in range(1200):  # 60 s at most
                text = out_path.read_text()
                if "Ctrl-C" in text or proc.poll() is not None:
                    break
                time.sleep(0.05)
            front = re.search(r"front \(HAProxy\): https://127\.0\.0\.1:(\d+)", text)
            assert front, text
            got = h2_get(int(front.group(1)), f"/{NAME}", ssl_context=client_context(ca, ["h2"]),
                         headers=[(b"range", b"bytes=100-199")], timeout=60)
            assert got.alpn == "h2" and got.main.status == 206 and got.main.body == data[100:200]
            assert got.main.header(b"x-cache-node") == b"node1"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, out_path.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    finally:
        origin.stop()
