"""The HTTP/3 server prototype (``python -m appserver --server h3``, :mod:`appserver.h3`) as a real
subprocess on loopback UDP, driven by aioquic's own client (:mod:`tests.support.h3client`), with a
self-signed ECDSA P-256 certificate made by the test (:mod:`tests.support.certs`).

Plain HTTP/3: GET/HEAD, single and multipart ranges, 416, conditionals, 404/405 -- the same app and
answers as over HTTP/1.1, checked byte for byte.

WebTransport (``/_ranges``, :mod:`appserver.wt_ranges`): one session, 16 ranges of a 64 MiB file on
16 concurrent bidirectional streams, byte for byte; errors answered on their stream while the
session goes on; a stream reset by the client mid-range; datagrams echoed; a session on another
path refused. The 16-stream fetch is timed against the same 16 ranges over HTTP/1.1 from the same
app (``--server aiohttp``, 16 concurrent aiohttp requests) and both figures printed (``pytest -s``);
nothing is asserted about the times.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.support.certs import SelfSignedCert, make_self_signed_cert
from tests.support.data import write_seeded_file
from tests.support.h3client import H3Client, h3_client
from tests.support.servers import AppServerProc, start_appserver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

BIG = 5 * 2**20 + 321  # not a multiple of any chunk size
HUGE = 64 * 2**20
HUGE_SEED = 16
STREAMS = 16


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> SelfSignedCert:
    return make_self_signed_cert(tmp_path_factory.mktemp("h3cert"))


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("h3media") / "media"
    root.mkdir()
    write_seeded_file(root / "big.bin", BIG, 20261201)
    (root / "hello.txt").write_bytes(b"hello\n")
    (root / "empty.bin").write_bytes(b"")
    write_seeded_file(root / "huge.bin", HUGE, HUGE_SEED)
    return root


@pytest.fixture(scope="module")
def big(media: Path) -> bytes:
    return (media / "big.bin").read_bytes()


@pytest.fixture(scope="module")
def h3server(media: Path, cert: SelfSignedCert, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServerProc]:
    p = start_appserver(media, tmp_path_factory.mktemp("h3server"), server="h3",
                        certfile=cert.certfile, keyfile=cert.keyfile)
    yield p
    assert p.stop() == 0, p.stderr_text()[-4000:]


@pytest.fixture
async def client(h3server: AppServerProc, cert: SelfSignedCert) -> AsyncIterator[H3Client]:
    async with h3_client(h3server.port, cert.certfile) as c:
        yield c


def authority(p: AppServerProc) -> str:
    return f"127.0.0.1:{p.port}"


# ------------------------------------------------------------------------------------ plain HTTP/3


async def test_get_whole_file(client: H3Client, h3server: AppServerProc, big: bytes) -> None:
    r = await client.request("GET", authority(h3server), "/big.bin")
    assert r.status == 200
    assert r.header("content-length") == str(BIG)
    assert r.header("accept-ranges") == "bytes"
    assert r.body == big


async def test_head(client: H3Client, h3server: AppServerProc) -> None:
    r = await client.request("HEAD", authority(h3server), "/big.bin")
    assert r.status == 200
    assert r.header("content-length") == str(BIG)
    assert r.body == b""


@pytest.mark.parametrize("spec,start,end", [
    ("bytes=0-0", 0, 1), ("bytes=100-2000099", 100, 2000100), ("bytes=-4096", BIG - 4096, BIG),
    ("bytes=5000000-", 5000000, BIG), ("bytes=0-99999999", 0, BIG),
])
async def test_single_range(client: H3Client, h3server: AppServerProc, big: bytes, spec: str, start: int,
                            end: int) -> None:
    r = await client.request("GET", authority(h3server), "/big.bin", [(b"range", spec.encode())])
    assert r.status == 206
    assert r.header("content-range") == f"bytes {start}-{end - 1}/{BIG}"
    assert r.header("content-length") == str(end - start)
    assert r.body == big[start:end]


async def test_range_query_form(client: H3Client, h3server: AppServerProc, big: bytes) -> None:
    r = await client.request("GET", authority(h3server), "/big.bin?range=10-19")
    assert (r.status, r.body) == (206, big[10:20])


async def test_multipart_ranges(client: H3Client, h3server: AppServerProc, big: bytes) -> None:
    r = await client.request("GET", authority(h3server), "/big.bin", [(b"range", b"bytes=0-9,1000000-1000009")])
    assert r.status == 206
    ctype = r.header("content-type") or ""
    assert ctype.startswith("multipart/byteranges; boundary=")
    assert r.header("content-length") == str(len(r.body))
    boundary = ctype.split("boundary=", 1)[1].encode()
    parts = r.body.split(b"--" + boundary)
    assert parts[1].endswith(b"\r\n\r\n" + big[0:10] + b"\r\n")
    assert b"Content-Range: bytes 1000000-1000009/" + str(BIG).encode() in parts[2]
    assert parts[2].endswith(b"\r\n\r\n" + big[1000000:1000010] + b"\r\n")
    assert parts[3] == b"--\r\n"


async def test_unsatisfiable_range(client: H3Client, h3server: AppServerProc) -> None:
    r = await client.request("GET", authority(h3server), "/big.bin", [(b"range", f"bytes={BIG}-".encode())])
    assert r.status == 416
    assert r.header("content-range") == f"bytes */{BIG}"
    assert r.body == b""


async def test_head_ignores_range(client: H3Client, h3server: AppServerProc) -> None:
    r = await client.request("HEAD", authority(h3server), "/big.bin", [(b"range", b"bytes=0-9")])
    assert (r.status, r.header("content-length"), r.body) == (200, str(BIG), b"")


async def test_conditionals(client: H3Client, h3server: AppServerProc, big: bytes) -> None:
    a = authority(h3server)
    etag = (await client.request("HEAD", a, "/big.bin")).header("etag")
    assert etag is not None
    r = await client.request("GET", a, "/big.bin", [(b"if-none-match", etag.encode())])
    assert (r.status, r.body) == (304, b"")
    r = await client.request("GET", a, "/big.bin", [(b"range", b"bytes=0-9"), (b"if-range", etag.encode())])
    assert (r.status, r.body) == (206, big[:10])
    r = await client.request("GET", a, "/big.bin", [(b"range", b"bytes=0-9"), (b"if-range", b'"other"')])
    assert (r.status, len(r.body)) == (200, BIG)


async def test_errors_and_catalogue(client: H3Client, h3server: AppServerProc) -> None:
    a = authority(h3server)
    assert (await client.request("GET", a, "/nope.bin")).status == 404
    assert (await client.request("GET", a, "/%2e%2e/etc/passwd")).status == 404
    r = await client.request("POST", a, "/big.bin")
    assert (r.status, r.header("allow")) == (405, "GET, HEAD")
    r = await client.request("GET", a, "/")
    assert r.status == 200 and b'"name":"big.bin"' in r.body
    assert (await client.request("GET", a, "/hello.txt")).body == b"hello\n"


async def test_concurrent_ranges_one_connection(client: H3Client, h3server: AppServerProc, big: bytes) -> None:
    """Several large ranges at once on one connection: each paced on its own stream, all complete."""
    a = authority(h3server)
    spans = [(i * 600_000, i * 600_000 + 1_000_000) for i in range(8)]
    results = await asyncio.gather(*(client.request("GET", a, "/big.bin", [(b"range", f"bytes={s}-{e - 1}".encode())])
                                     for s, e in spans))
    for (s, e), r in zip(spans, results):
        assert (r.status, r.body) == (206, big[s:e])


async def test_second_connection_works(h3server: AppServerProc, cert: SelfSignedCert) -> None:
    async with h3_client(h3server.port, cert.certfile) as c:
        assert (await c.request("GET", authority(h3server), "/healthz")).body == b"ok"


# ----------------------------------------------------------------------------------- WebTransport


async def session(client: H3Client, p: AppServerProc) -> int:
    session_id, status = await client.open_session(authority(p), "/_ranges")
    assert status == 200
    return session_id


async def fetch(client: H3Client, session_id: int, request: bytes) -> tuple[bytes, bytes]:
    """One request on a new bidirectional stream: (status line, body)."""
    stream = client.open_stream(session_id, request, end_stream=True)
    answer = await client.read_until_end(stream)
    line, sep, body = answer.partition(b"\n")
    assert sep, answer[:200]
    return line, body


def sixteen_spans() -> list[tuple[int, int]]:
    """16 ranges of 4 MiB covering the 64 MiB file, each shifted so none is chunk-aligned."""
    size = HUGE // STREAMS
    return [(i * size + (7 * i if i else 0), min(HUGE, (i + 1) * size + 7 * i + 1)) for i in range(STREAMS)]


async def test_sixteen_ranges_on_sixteen_streams(h3server: AppServerProc, cert: SelfSignedCert, media: Path,
                                                 tmp_path: Path) -> None:
    huge = (media / "huge.bin").read_bytes()
    spans = sixteen_spans()
    async with h3_client(h3server.port, cert.certfile) as client:
        sid = await session(client, h3server)
        t0 = time.perf_counter()
        results = await asyncio.gather(*(fetch(client, sid, f"GET /huge.bin bytes={s}-{e - 1}\n".encode())
                                         for s, e in spans))
        wt_seconds = time.perf_counter() - t0
    total = sum(e - s for s, e in spans)
    for (s, e), (line, body) in zip(spans, results):
        assert line == f"206 {e - s} {s}-{e - 1}/{HUGE}".encode()
        assert len(body) == e - s
        assert body == huge[s:e]

    # The same ranges over HTTP/1.1, from the same app under the project's aiohttp runner.
    h1 = start_appserver(media, tmp_path / "h1", server="aiohttp")
    try:
        async with aiohttp.ClientSession() as http:
            async def get(s: int, e: int) -> bytes:
                async with http.get(h1.url_for("huge.bin"), headers={"Range": f"bytes={s}-{e - 1}"}) as r:
                    assert r.status == 206
                    return await r.read()

            t0 = time.perf_counter()
            bodies = await asyncio.gather(*(get(s, e) for s, e in spans))
            h1_seconds = time.perf_counter() - t0
    finally:
        h1.stop(check=False)
    assert [b == huge[s:e] for (s, e), b in zip(spans, bodies)] == [True] * STREAMS
    mb = total / 1e6
    print(f"\n16 ranges, {mb:.1f} MB: WebTransport (h3, 1 session, 16 streams) {wt_seconds:.2f} s = "
          f"{mb / wt_seconds:.1f} MB/s; HTTP/1.1 (aiohttp runner, 16 connections) {h1_seconds:.2f} s = "
          f"{mb / h1_seconds:.1f} MB/s")


async def test_errors_answer_on_the_stream_and_the_session_goes_on(client: H3Client, h3server: AppServerProc,
                                                                   big: bytes) -> None:
    sid = await session(client, h3server)
    assert await fetch(client, sid, b"GET /nope.bin bytes=0-9\n") == (b"404 not found", b"")
    assert await fetch(client, sid, b"GET /%2e%2e/etc/passwd bytes=0-9\n") == (b"404 not found", b"")
    assert await fetch(client, sid, f"GET /big.bin bytes={BIG}-\n".encode()) == (f"416 */{BIG}".encode(), b"")
    assert await fetch(client, sid, b"GET /empty.bin bytes=0-\n") == (b"416 */0", b"")
    line, body = await fetch(client, sid, b"GET /big.bin bytes=0-1,5-6\n")
    assert (line, body) == (b"400 one range per stream", b"")
    assert (await fetch(client, sid, b"PUT /big.bin bytes=0-1\n"))[0].startswith(b"400 ")
    assert (await fetch(client, sid, b"GET /big.bin\n"))[0].startswith(b"400 ")
    assert (await fetch(client, sid, b"GET /big.bin bytes=0-1"))[0].startswith(b"400 ")  # FIN before the newline
    assert (await fetch(client, sid, b"x" * 5000))[0].startswith(b"400 ")  # no newline within 4096 bytes
    assert await fetch(client, sid, b"GET /big.bin bytes=-5\r\n") == (f"206 5 {BIG - 5}-{BIG - 1}/{BIG}".encode(),
                                                                        big[-5:])
    assert await fetch(client, sid, b"GET /hello.txt bytes=0-\n") == (b"206 6 0-5/6", b"hello\n")


async def test_request_split_across_frames(client: H3Client, h3server: AppServerProc, big: bytes) -> None:
    sid = await session(client, h3server)
    stream = client.open_stream(sid, b"GET /big.b")
    await asyncio.sleep(0)  # the pieces go out in separate packets
    client._quic.send_stream_data(stream, b"in bytes=3-12\n", end_stream=True)
    client.transmit()
    line, _, body = (await client.read_until_end(stream)).partition(b"\n")
    assert (line, body) == (f"206 10 3-12/{BIG}".encode(), big[3:13])


async def test_client_reset_mid_range_leaves_the_session(client: H3Client, h3server: AppServerProc,
                                                         big: bytes) -> None:
    sid = await session(client, h3server)
    stream = client.open_stream(sid, f"GET /big.bin bytes=0-{BIG - 1}\n".encode(), end_stream=True)
    got = await client.read_at_least(stream, 100_000)
    assert got.startswith(f"206 {BIG} 0-{BIG - 1}/{BIG}\n".encode())
    client.reset_stream(stream, 7)  # RESET_STREAM + STOP_SENDING: the server abandons the range
    assert await fetch(client, sid, b"GET /big.bin bytes=100-199\n") == (f"206 100 100-199/{BIG}".encode(),
                                                                         big[100:200])
    assert (await client.request("GET", authority(h3server), "/healthz")).body == b"ok"


async def test_datagrams_are_echoed(client: H3Client, h3server: AppServerProc) -> None:
    sid = await session(client, h3server)
    client.send_datagram(sid, b"ping 1")
    assert await asyncio.wait_for(client.datagrams.get(), 10) == b"ping 1"


async def test_session_on_another_path_is_refused(client: H3Client, h3server: AppServerProc) -> None:
    _, status = await client.open_session(authority(h3server), "/elsewhere")
    assert status == 403
    sid = await session(client, h3server)  # the connection is fine
    assert (await fetch(client, sid, b"GET /hello.txt bytes=0-0\n"))[1] == b"h"


async def test_unidirectional_streams_are_ignored(client: H3Client, h3server: AppServerProc) -> None:
    sid = await session(client, h3server)
    client.open_stream(sid, b"GET /hello.txt bytes=0-\n", end_stream=True, unidirectional=True)
    assert await fetch(client, sid, b"GET /hello.txt bytes=1-2\n") == (b"206 2 1-2/6", b"el")


async def test_client_ending_the_session_is_answered_with_its_end(client: H3Client, h3server: AppServerProc) -> None:
    """FIN on the CONNECT stream: the app gets webtransport.disconnect and returns; the server ends its side."""
    sid = await session(client, h3server)
    assert (await fetch(client, sid, b"GET /hello.txt bytes=0-0\n"))[1] == b"h"
    client.end_session(sid)
    await asyncio.wait_for(client.streams[sid].ended.wait(), 30)
    sid2 = await session(client, h3server)  # the connection goes on
    assert (await fetch(client, sid2, b"GET /hello.txt bytes=5-5\n"))[1] == b"\n"
