"""The watch page over HTTP/2 under Hypercorn (server push, 103 Early Hints), and without either elsewhere.

Real parts: ``python -m appserver --server hypercorn`` on loopback, h2c with prior knowledge and TLS
(ALPN ``h2``, a trustme CA), read with the ``h2`` library on a raw socket (tests.support.h2client):
the 103 and its Link fields before the 200, the PUSH_PROMISE frames and the pushed responses,
byte for byte equal to ``appserver/static/``. Under the project's runner and granian, and over
HTTP/1.1 under Hypercorn, the raw bytes of the socket show the page's 200 first: no 1xx, no push
(HTTP/1.1 has none). Through the proxy (HTTP/1.1 to the origin) the page arrives the same way.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from appserver.watch import ASSETS, STATIC_DIR, page_html
from tests.support.h2client import H2Exchange, h2_get
from tests.support.servers import AppServerProc, start_appserver
from tests.support.tls import client_context, issue_certificate

pytestmark = pytest.mark.integration

VIDEO = "clip.mp4"
VIDEO_BYTES = bytes(range(256)) * 40  # served as bytes only: the type comes from the name


@pytest.fixture
def media(tmp_path: Path) -> Path:
    d = tmp_path / "media"
    (d / "sub").mkdir(parents=True)
    (d / VIDEO).write_bytes(VIDEO_BYTES)
    (d / "sub" / "deep clip.webm").write_bytes(b"x" * 100)
    (d / "notes.txt").write_bytes(b"not a video\n")
    return d


@pytest.fixture
def hypercorn(media: Path, tmp_path: Path):
    proc = start_appserver(media, tmp_path / "hc", server="hypercorn")
    yield proc
    proc.stop()  # SIGTERM: exit 0


def _static(name: str) -> bytes:
    return (Path(STATIC_DIR) / name).read_bytes()


def assert_pushed_and_hinted(x: H2Exchange, port: int, scheme: bytes) -> None:
    """One 103 naming both resources, then the page, and one PUSH_PROMISE per resource with its bytes."""
    assert len(x.main.informational) == 1, x.main.informational
    hint = x.main.informational[0]
    assert dict(hint)[b":status"] == b"103"
    assert [v for k, v in hint if k == b"link"] == [
        f"<{ASSETS[0].url_path}>; rel=preload; as=style".encode(),
        f"<{ASSETS[1].url_path}>; rel=preload; as=script".encode(),
    ]
    assert x.main.status == 200
    assert x.main.header(b"content-type") == b"text/html; charset=utf-8"
    assert x.main.header(b"cache-control") == b"no-cache"
    assert x.main.body == page_html(VIDEO)
    assert b'src="../clip.mp4"' in x.main.body
    assert x.push_promise_frames == 2
    assert [p.pseudo(b":path") for p in x.pushed] == [a.url_path.encode() for a in ASSETS]
    for promised, asset in zip(x.pushed, ASSETS):
        assert promised.pseudo(b":method") == b"GET"
        assert promised.pseudo(b":scheme") == scheme
        assert promised.pseudo(b":authority") == f"127.0.0.1:{port}".encode()
        assert promised.ended and promised.reset is None
        assert promised.status == 200
        assert promised.header(b"content-type") == asset.content_type.encode()
        assert promised.header(b"cache-control") == b"public, max-age=31536000, immutable"
        assert promised.body == _static(asset.name)
        assert promised.informational == []


def test_h2c_pushes_the_style_and_script_and_sends_a_103_first(hypercorn: AppServerProc) -> None:
    x = h2_get(hypercorn.port, f"/watch/{VIDEO}")
    assert_pushed_and_hinted(x, hypercorn.port, b"http")


def test_tls_h2_by_alpn_pushes_and_hints_too(media: Path, tmp_path: Path) -> None:
    ca, chain, key = issue_certificate(tmp_path)
    proc = start_appserver(media, tmp_path / "tls", server="hypercorn", certfile=chain, keyfile=key,
                           client_ssl=client_context(ca))
    try:
        x = h2_get(proc.port, f"/watch/{VIDEO}", ssl_context=client_context(ca, ["h2", "http/1.1"]))
        assert x.alpn == "h2"
        assert_pushed_and_hinted(x, proc.port, b"https")
        # The video itself over the same server: ranges, and nothing pushed or hinted for it.
        v = h2_get(proc.port, f"/{VIDEO}", ssl_context=client_context(ca, ["h2"]),
                   headers=[(b"range", b"bytes=100-299")])
        assert v.main.status == 206 and v.main.body == VIDEO_BYTES[100:300]
        assert v.pushed == [] and v.main.informational == []
    finally:
        proc.stop()


def test_a_client_that_disabled_push_gets_the_103_and_no_promise(hypercorn: AppServerProc) -> None:
    """SETTINGS_ENABLE_PUSH = 0 (Chromium since 106): Hypercorn drops the push messages, quietly."""
    x = h2_get(hypercorn.port, f"/watch/{VIDEO}", enable_push=False)
    assert x.main.status == 200 and x.main.body == page_html(VIDEO)
    assert len(x.main.informational) == 1 and x.pushed == [] and x.push_promise_frames == 0
    assert "Traceback" not in hypercorn.stderr_text()


def test_a_page_in_a_subdirectory_links_back_to_the_root(hypercorn: AppServerProc) -> None:
    x = h2_get(hypercorn.port, "/watch/sub/deep%20clip.webm")
    assert x.main.status == 200 and x.push_promise_frames == 2
    assert b'src="../../sub/deep%20clip.webm"' in x.main.body
    assert f'href="../../{ASSETS[0].url_path[1:]}"'.encode() in x.main.body


@pytest.mark.parametrize("path", ["/watch/notes.txt", "/watch/missing.mp4", "/watch/", "/watch/../clip.mp4",
                                  "/_watch/nope.js"])
def test_no_page_no_push_no_hint_for_anything_but_a_video(hypercorn: AppServerProc, path: str) -> None:
    x = h2_get(hypercorn.port, path)
    assert x.main.status == 404
    assert x.pushed == [] and x.main.informational == []


def test_head_and_304_get_neither(hypercorn: AppServerProc) -> None:
    first = h2_get(hypercorn.port, f"/watch/{VIDEO}")
    etag = first.main.header(b"etag")
    assert etag is not None
    again = h2_get(hypercorn.port, f"/watch/{VIDEO}", headers=[(b"if-none-match", etag)])
    assert again.main.status == 304 and again.pushed == [] and again.main.informational == []
    head = h2_get(hypercorn.port, f"/watch/{VIDEO}", method="HEAD")
    assert head.main.status == 200 and head.main.body == b""
    assert head.main.header(b"content-length") == str(len(first.main.body)).encode()
    assert head.pushed == [] and head.main.informational == []


def raw_http11_get(port: int, target: str) -> bytes:
    """Every byte the server sends for one HTTP/1.1 GET with ``Connection: close``."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def assert_plain_page(raw: bytes) -> None:
    """The page's 200 is the first thing on the wire (no 103 or other 1xx before it), whole."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), raw[:200]
    assert b"\r\nHTTP/1.1 1" not in raw and b" 103 " not in head
    assert body == page_html(VIDEO)


@pytest.mark.parametrize("server", ["aiohttp", "granian", "hypercorn"])
def test_http11_gets_the_page_without_a_103(server: str, media: Path, tmp_path: Path) -> None:
    proc = start_appserver(media, tmp_path / server, server=server)
    try:
        assert_plain_page(raw_http11_get(proc.port, f"/watch/{VIDEO}"))
        css = raw_http11_get(proc.port, ASSETS[0].url_path)
        assert css.startswith(b"HTTP/1.1 200 ") and css.endswith(_static(ASSETS[0].name))
    finally:
        proc.stop()


def test_through_the_proxy_the_page_comes_without_a_103(hypercorn: AppServerProc, proxy_factory) -> None:
    """The proxy speaks HTTP/1.1 to the origin, where Hypercorn offers neither extension; and its
    own HTTP/1.1 server sends no 1xx: the page is a plain 200, its resources plain GETs."""
    proxy = proxy_factory(hypercorn.url)
    assert_plain_page(raw_http11_get(proxy.port, f"/watch/{VIDEO}"))
    js = raw_http11_get(proxy.port, ASSETS[1].url_path)
    assert js.startswith(b"HTTP/1.1 200 ") and js.endswith(_static(ASSETS[1].name))


def test_granian_over_h2c_serves_the_page_with_neither(media: Path, tmp_path: Path) -> None:
    """granian speaks HTTP/2 (h2c with prior knowledge) but advertises neither extension: a bare 200."""
    proc = start_appserver(media, tmp_path / "granian", server="granian")
    try:
        x = h2_get(proc.port, f"/watch/{VIDEO}")
        assert x.main.status == 200 and x.main.body == page_html(VIDEO)
        assert x.main.informational == [] and x.pushed == [] and x.push_promise_frames == 0
    finally:
        proc.stop()


def test_the_project_runner_has_no_http2(media: Path, tmp_path: Path) -> None:
    """aiohttp has no HTTP/2 server: the connection preface is answered as a bad HTTP/1 request."""
    proc = start_appserver(media, tmp_path / "aiohttp", server="aiohttp")
    try:
        with socket.create_connection(("127.0.0.1", proc.port), timeout=15) as s:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            raw = b"".join(iter(lambda: s.recv(65536), b""))
        assert raw.startswith(b"HTTP/1.0 400 "), raw[:200]
    finally:
        proc.stop()
