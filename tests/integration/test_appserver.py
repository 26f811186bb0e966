"""The demo origin as a real subprocess (``python -m appserver``) under BOTH servers.

Real files on disk, real sockets on loopback, real clients (aiohttp, raw sockets
for un-normalised paths and keep-alive framing, curl).
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
import random
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import aiohttp
import pytest

from tests.support.rawhttp import RawConnection, raw_request
from tests.support.servers import AppServerProc, start_appserver
from tests.support.tools import require_tool

pytestmark = pytest.mark.integration

BIG = 3 * 2**20 + 4321  # a few MiB, not a multiple of any chunk size
LARGE = 12 * 2**20


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("appserver")
    root = base / "media"
    root.mkdir()
    rng = random.Random(20240611)
    (root / "big.bin").write_bytes(rng.randbytes(BIG))
    (root / "large.bin").write_bytes(rng.randbytes(LARGE))
    (root / "movie.mp4").write_bytes(rng.randbytes(4096))
    (root / "hello.txt").write_bytes(b"hello\n")
    (root / "sub").mkdir()
    (root / "sub" / "inner.bin").write_bytes(rng.randbytes(1000))
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"TOP SECRET\n")
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    (root / "escape_dir").symlink_to(outside)
    return root


@pytest.fixture(scope="module")
def files(media: Path) -> dict[str, bytes]:
    return {name: (media / name).read_bytes() for name in ("big.bin", "large.bin")}


@pytest.fixture(scope="module", params=["aiohttp", "granian"])
def server(request: pytest.FixtureRequest, media: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServerProc]:
    kind = request.param
    srv = start_appserver(media, tmp_path_factory.mktemp(f"log-{kind}"), server=kind, timeout=30)
    with urllib.request.urlopen(srv.url + "/healthz", timeout=2) as r:
        assert r.status == 200 and r.read() == b"ok"
    yield srv
    srv.stop(timeout=20)  # SIGTERM; fails unless it exits with 0 within 20 s
    text = srv.stderr_text() + srv.stdout_text()
    assert "Traceback" not in text, text


async def get(url: str, headers: dict[str, str] | None = None, method: str = "GET"):
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async with s.request(method, url, headers=headers or {}) as r:
            return r.status, r.headers, await r.read()


# ----------------------------------------------------------------------- basics


async def test_full_get(server: AppServerProc, files) -> None:
    status, h, body = await get(server.url + "/big.bin")
    assert status == 200
    assert body == files["big.bin"]
    assert h["Content-Length"] == str(BIG)
    assert h["Accept-Ranges"] == "bytes"
    assert h["Content-Type"] == "application/octet-stream"
    assert h["ETag"].startswith('"') and h["Last-Modified"].endswith("GMT")
    status, h, _ = await get(server.url + "/movie.mp4")
    assert h["Content-Type"] == "video/mp4"


def test_head_has_no_body_on_the_wire(server: AppServerProc) -> None:
    with RawConnection(server.port) as c:
        head = c.request("HEAD", "/big.bin")
        assert head.status == 200 and head.headers["content-length"] == str(BIG)
        # Had HEAD leaked body bytes, this second response would not parse.
        nxt = c.request("GET", "/healthz")
        assert nxt.status == 200 and nxt.body == b"ok"


async def test_single_range_header_and_query(server: AppServerProc, files) -> None:
    data = files["big.bin"]
    for url, hdrs in ((server.url + "/big.bin", {"Range": "bytes=20-345"}), (server.url + "/big.bin?range=20-345", {})):
        status, h, body = await get(url, hdrs)
        assert status == 206, url
        assert body == data[20:346]
        assert h["Content-Range"] == f"bytes 20-345/{BIG}"
        assert h["Content-Length"] == "326"


async def test_suffix_and_open_ranges(server: AppServerProc, files) -> None:
    data = files["big.bin"]
    status, h, body = await get(server.url + "/big.bin", {"Range": "bytes=-500"})
    assert status == 206 and body == data[-500:] and h["Content-Range"] == f"bytes {BIG - 500}-{BIG - 1}/{BIG}"
    status, h, body = await get(server.url + "/big.bin", {"Range": "bytes=1000-"})
    assert status == 206 and body == data[1000:] and h["Content-Range"] == f"bytes 1000-{BIG - 1}/{BIG}"


async def test_multirange(server: AppServerProc, files) -> None:
    data = files["big.bin"]
    spans = [(0, 99), (5000, 9999), (2_000_000, 2_600_000)]
    status, h, body = await get(server.url + "/big.bin", {"Range": "bytes=" + ",".join(f"{a}-{b}" for a, b in spans)})
    assert status == 206
    ctype = h["Content-Type"]
    assert ctype.startswith("multipart/byteranges; boundary=")
    assert int(h["Content-Length"]) == len(body)
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body
    )
    parts = list(msg.iter_parts())
    assert len(parts) == 3
    for part, (a, b) in zip(parts, spans):
        assert part["Content-Range"] == f"bytes {a}-{b}/{BIG}"
        assert part["Content-Type"] == "application/octet-stream"
        assert part.get_payload(decode=True) == data[a : b + 1]


async def test_unsatisfiable(server: AppServerProc) -> None:
    status, h, body = await get(server.url + "/big.bin", {"Range": f"bytes={BIG + 10}-"})
    assert status == 416
    assert h["Content-Range"] == f"bytes */{BIG}"


async def test_if_range(server: AppServerProc, files) -> None:
    _, h, _ = await get(server.url + "/big.bin", method="HEAD")
    etag = h["ETag"]
    status, h2, body = await get(server.url + "/big.bin", {"Range": "bytes=10-19", "If-Range": etag})
    assert status == 206 and body == files["big.bin"][10:20]
    status, h2, body = await get(server.url + "/big.bin", {"Range": "bytes=10-19", "If-Range": '"stale"'})
    assert status == 200 and body == files["big.bin"]


async def test_conditional_304(server: AppServerProc) -> None:
    _, h, _ = await get(server.url + "/big.bin", method="HEAD")
    status, h2, body = await get(server.url + "/big.bin", {"If-None-Match": h["ETag"]})
    assert status == 304 and body == b"" and h2["ETag"] == h["ETag"]
    status, _, body = await get(server.url + "/big.bin", {"If-Modified-Since": h["Last-Modified"]})
    assert status == 304 and body == b""
    status, _, _ = await get(server.url + "/big.bin", {"If-None-Match": '"x"', "If-Modified-Since": h["Last-Modified"]})
    assert status == 200


@pytest.mark.parametrize(
    "target",
    [
        "/../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/..%2f..%2fetc/passwd",
        "/sub/../../etc/passwd",
        "//etc/passwd",
        "/hello.txt%00.bin",
        "/escape.txt",
        "/escape_dir/secret.txt",
        "/sub",
        "/sub/",
        "/missing.bin",
    ],
)
def test_nothing_outside_the_root(server: AppServerProc, target: str) -> None:
    res = raw_request(server.port, "GET", target)
    assert res.status == 404, target
    assert b"SECRET" not in res.body and b"root:" not in res.body


def test_other_methods_405(server: AppServerProc) -> None:
    for method in ("POST", "PUT", "DELETE"):
        res = raw_request(server.port, method, "/big.bin", {"Content-Length": "0"})
        assert res.status == 405
        assert res.headers["allow"] == "GET, HEAD"


async def test_catalogue(server: AppServerProc, media: Path) -> None:
    status, h, body = await get(server.url + "/")
    assert status == 200 and h["Content-Type"] == "application/json"
    items = {i["name"]: i for i in json.loads(body)}
    assert set(items) == {"big.bin", "large.bin", "movie.mp4", "hello.txt", "sub/inner.bin"}
    assert items["big.bin"]["size"] == BIG and items["movie.mp4"]["type"] == "video/mp4"
    _, hh, _ = await get(server.url + "/big.bin", method="HEAD")
    assert items["big.bin"]["etag"] == hh["ETag"]


# ------------------------------------------------------------ framing / sendfile


def test_keepalive_ranged_requests_on_one_connection(server: AppServerProc, files) -> None:
    data = files["big.bin"]
    with RawConnection(server.port) as c:
        for a, b in ((20, 345), (1_000_000, 2_999_999), (0, 0)):
            r = c.request("GET", "/big.bin", {"Range": f"bytes={a}-{b}"})
            assert r.status == 206 and r.body == data[a : b + 1], (a, b)
            assert r.headers["content-range"] == f"bytes {a}-{b}/{BIG}"
        full = c.request("GET", "/big.bin")
        assert full.status == 200 and full.body == data
        again = c.request("GET", "/big.bin?range=7-8")
        assert again.status == 206 and again.body == data[7:9]


def test_pipelined_requests(server: AppServerProc, files) -> None:
    data = files["big.bin"]
    with RawConnection(server.port) as c:
        c.send("GET", "/big.bin", {"Range": "bytes=100-199"})
        c.send("GET", "/big.bin", {"Range": "bytes=-300000"})
        c.send("HEAD", "/big.bin")
        c.send("GET", "/hello.txt")
        assert c.read().body == data[100:200]
        assert c.read().body == data[-300000:]
        assert c.read("HEAD").headers["content-length"] == str(BIG)
        assert c.read().body == b"hello\n"


async def test_large_range(server: AppServerProc, files) -> None:
    data = files["large.bin"]
    a, b = 1_234_567, 1_234_567 + 8 * 2**20 - 1
    status, h, body = await get(server.url + "/large.bin", {"Range": f"bytes={a}-{b}"})
    assert status == 206 and len(body) == 8 * 2**20 and body == data[a : b + 1]


def test_client_disconnect_mid_body_leaves_server_healthy(server: AppServerProc) -> None:
    for headers in ({"Range": "bytes=0-"}, {}, {"Range": "bytes=0-10,100-11000000"}):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        s.sendall(f"GET /large.bin HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode())
        assert s.recv(12).startswith(b"HTTP/1.1 20")
        s.close()
    time.sleep(0.3)
    assert raw_request(server.port, "GET", "/healthz").body == b"ok"


def test_slow_reader_gets_every_byte(server: AppServerProc, files) -> None:
    """A reader slower than the server forces EAGAIN waits on the sendfile path."""
    data = files["large.bin"]
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    with s, s.makefile("rb") as f:
        s.sendall(b"GET /large.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=3-4000002\r\nConnection: close\r\n\r\n")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += f.read(1)
        assert head.startswith(b"HTTP/1.1 206")
        got = bytearray()
        for i in range(10):
            got += f.read(16 * 1024)
            time.sleep(0.02)
        got += f.read()
    assert bytes(got) == data[3:4000003]


# ------------------------------------------------------------------- real clients


def test_curl_range(server: AppServerProc, files, tmp_path: Path) -> None:
    curl = require_tool("curl")
    out = tmp_path / "part.bin"
    subprocess.run([curl, "-sSf", "-r", "20-345", "-o", str(out), server.url + "/big.bin"], check=True, timeout=60)
    assert out.read_bytes() == files["big.bin"][20:346]
    # Two ranged transfers on one connection: curl reuses it only if framing was exact.
    proc = subprocess.run(
        [curl, "-sSfv", "-r", "1000-1999", "-o", str(tmp_path / "a"), server.url + "/big.bin",
         "--next", "-sSfv", "-r", "0-", "-o", str(tmp_path / "b"), server.url + "/large.bin"],
        check=True, timeout=60, capture_output=True, text=True,
    )  # fmt: skip
    assert "Re-using existing connection" in proc.stderr or "Reusing existing" in proc.stderr, proc.stderr
    assert (tmp_path / "a").read_bytes() == files["big.bin"][1000:2000]
    assert (tmp_path / "b").read_bytes() == files["large.bin"]


def test_curl_multirange(server: AppServerProc, files, tmp_path: Path) -> None:
    curl = require_tool("curl")
    out = tmp_path / "mp"
    proc = subprocess.run(
        [curl, "-sSf", "-D", "-", "-r", "0-9,5000-5009", "-o", str(out), server.url + "/big.bin"],
        check=True, timeout=60, capture_output=True, text=True,
    )  # fmt: skip
    assert "206" in proc.stdout.splitlines()[0]
    body = out.read_bytes()
    data = files["big.bin"]
    assert data[0:10] in body and data[5000:5010] in body and b"Content-Range: bytes 5000-5009/" in body


async def test_concurrent_ranged_requests(server: AppServerProc, files) -> None:
    data = files["large.bin"]
    rng = random.Random(7)
    spans = []
    for _ in range(24):
        a = rng.randrange(0, LARGE - 1)
        spans.append((a, min(LARGE - 1, a + rng.randrange(1, 2 * 2**20))))
    async with aiohttp.ClientSession() as s:

        async def one(a: int, b: int) -> None:
            async with s.get(server.url + "/large.bin", headers={"Range": f"bytes={a}-{b}"}) as r:
                assert r.status == 206
                assert await r.read() == data[a : b + 1]

        await asyncio.gather(*(one(a, b) for a, b in spans))
