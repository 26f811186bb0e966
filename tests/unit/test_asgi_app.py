"""appserver.app.MediaApp called directly through a strict fake ASGI server.

The fake server checks the message sequence and, above all, the pathsend
contract: ``offset``/``count`` may only be sent to a server that advertised
``{"ranges": True}`` (granian 2.8 ignores them and sends the wrong bytes).
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from appserver.app import MediaApp, app_from_env, make_etag
from proxy.http import ranges as R

PATHSEND = "http.response.pathsend"
SIZE = 300_000


@dataclass
class Result:
    status: int
    headers: dict[str, str]
    header_list: list[tuple[bytes, bytes]]
    body: bytes
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pathsends(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == PATHSEND]

    @property
    def body_messages(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "http.response.body"]


class StrictServer:
    """Calls an ASGI app like a server would, and fails the test on any misuse."""

    def __init__(self, extensions: dict[str, Any] | None):
        self.extensions = extensions

    @property
    def ranges_advertised(self) -> bool:
        ext = (self.extensions or {}).get(PATHSEND)
        return isinstance(ext, dict) and ext.get("ranges") is True

    async def request(
        self,
        app: Any,
        method: str = "GET",
        path: str = "/",
        headers: list[tuple[str, str]] | None = None,
        query: bytes = b"",
        raw_path: bytes | None = None,
        disconnect_at_once: bool = False,
        send_raises_after: int | None = None,
    ) -> Result:
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": raw_path if raw_path is not None else path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers or []],
            "client": ["127.0.0.1", 50000],
            "server": ["127.0.0.1", 8081],
            "state": {},
        }
        if self.extensions is not None:
            scope["extensions"] = self.extensions
        done = asyncio.Event()
        request_sent = False
        messages: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        body = bytearray()
        complete = False

        async def receive() -> dict[str, Any]:
            nonlocal request_sent
            if not request_sent:
                request_sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if not disconnect_at_once:
                await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal start, complete
            messages.append(dict(message))
            if send_raises_after is not None and len(messages) > send_raises_after:
                raise ConnectionResetError("client went away")
            kind = message["type"]
            assert not complete, f"{kind} after the response was complete"
            if kind == "http.response.start":
                assert start is None, "http.response.start twice"
                start = message
                for name, value in message.get("headers", []):
                    assert isinstance(name, bytes) and isinstance(value, bytes)
                    assert name == name.lower(), f"header name not lower-case: {name!r}"
                return
            assert start is not None, f"{kind} before http.response.start"
            if kind == "http.response.body":
                body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    complete = True
                    done.set()
                return
            if kind == PATHSEND:
                if PATHSEND not in (self.extensions or {}):
                    pytest.fail("pathsend sent to a server that did not advertise it")
                if ("offset" in message or "count" in message) and not self.ranges_advertised:
                    pytest.fail(f"pathsend with offset/count to a server without ranges: {message}")
                assert not body, "pathsend after body bytes"
                assert os.path.isabs(message["path"])
                with open(message["path"], "rb") as fh:
                    fh.seek(message.get("offset", 0))
                    count = message.get("count")
                    body.extend(fh.read() if count is None else fh.read(count))
                complete = True
                done.set()
                return
            pytest.fail(f"unexpected message type {kind!r}")

        await app(scope, receive, send)
        assert start is not None, "app returned without http.response.start"
        hl = list(start.get("headers", []))
        hd = {k.decode("latin-1"): v.decode("latin-1") for k, v in hl}
        assert len(hd) == len(hl), f"duplicate response headers: {hl}"
        result = Result(int(start["status"]), hd, hl, bytes(body), messages)
        if complete and method != "HEAD" and "content-length" in hd:
            assert int(hd["content-length"]) == len(body), "Content-Length does not match the body"
        return result


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    rng = random.Random(1234)
    (root / "big.bin").write_bytes(rng.randbytes(SIZE))
    (root / "clip.mp4").write_bytes(rng.randbytes(5000))
    (root / "doc.pdf").write_bytes(b"%PDF-1.4\n" + rng.randbytes(100))
    (root / "empty.bin").write_bytes(b"")
    (root / "sub").mkdir()
    (root / "sub" / "inner.txt").write_bytes(b"inner\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"top secret\n")
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    (root / "escape_dir").symlink_to(outside)
    (root / "inside_link.bin").symlink_to(root / "big.bin")
    return root


@pytest.fixture
def app(media: Path) -> MediaApp:
    return MediaApp(media, chunk_size=64 * 1024)


@pytest.fixture
def data(media: Path) -> bytes:
    return (media / "big.bin").read_bytes()


GRANIAN_LIKE = {PATHSEND: {}, "websocket.http.response": {}}
RANGES = {PATHSEND: {"ranges": True}}


# ---------------------------------------------------------------- pathsend contract


async def test_single_range_without_ranges_ext_is_streamed_never_offset(app, data) -> None:
    res = await StrictServer(GRANIAN_LIKE).request(app, path="/big.bin", headers=[("Range", "bytes=20-345")])
    assert res.status == 206
    assert res.body == data[20:346]
    assert res.headers["content-range"] == f"bytes 20-345/{SIZE}"
    assert res.pathsends == []  # a plain pathsend would send the whole file


async def test_large_single_range_without_ranges_ext_streams_in_chunks(app, data) -> None:
    res = await StrictServer(GRANIAN_LIKE).request(app, path="/big.bin", headers=[("Range", "bytes=1000-250000")])
    assert res.status == 206 and res.body == data[1000:250001]
    assert res.pathsends == []
    assert len(res.body_messages) >= 4  # 64 KiB chunks
    assert all(len(m["body"]) <= 64 * 1024 for m in res.body_messages)


async def test_single_range_with_ranges_ext_uses_offset_count(app, data, media) -> None:
    res = await StrictServer(RANGES).request(app, path="/big.bin", headers=[("Range", "bytes=20-345")])
    assert res.status == 206
    assert res.pathsends == [
        {"type": PATHSEND, "path": os.path.realpath(media / "big.bin"), "offset": 20, "count": 326}
    ]
    assert res.body == data[20:346]
    assert res.headers["content-length"] == "326"


async def test_query_range_form(app, data) -> None:
    res = await StrictServer(RANGES).request(app, path="/big.bin", query=b"range=20-345")
    assert res.status == 206 and res.body == data[20:346]
    assert res.pathsends[0]["offset"] == 20 and res.pathsends[0]["count"] == 326


async def test_full_200_plain_pathsend_when_advertised(app, data, media) -> None:
    for ext in (GRANIAN_LIKE, RANGES):
        res = await StrictServer(ext).request(app, path="/big.bin")
        assert res.status == 200 and res.body == data
        assert res.pathsends == [{"type": PATHSEND, "path": os.path.realpath(media / "big.bin")}]


async def test_no_extension_streams_everything(app, data) -> None:
    server = StrictServer(None)
    full = await server.request(app, path="/big.bin")
    assert full.status == 200 and full.body == data and full.pathsends == []
    part = await server.request(app, path="/big.bin", headers=[("Range", "bytes=-500")])
    assert part.status == 206 and part.body == data[-500:] and part.pathsends == []


def _parse_multipart(content_type: str, body: bytes) -> list[tuple[str, str, bytes]]:
    raw = b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    assert msg.is_multipart()
    return [(p["Content-Type"], p["Content-Range"], p.get_payload(decode=True)) for p in msg.iter_parts()]


@pytest.mark.parametrize("ext", [None, GRANIAN_LIKE, RANGES], ids=["none", "plain", "ranges"])
async def test_multirange_is_always_streamed(app, data, ext) -> None:
    res = await StrictServer(ext).request(
        app, path="/big.bin", headers=[("Range", "bytes=0-99, 1000-1999, 200000-299999")]
    )
    assert res.status == 206
    assert res.pathsends == []
    assert res.headers["content-type"].startswith("multipart/byteranges; boundary=")
    parts = _parse_multipart(res.headers["content-type"], res.body)
    assert [(cr, payload) for _, cr, payload in parts] == [
        (f"bytes 0-99/{SIZE}", data[0:100]),
        (f"bytes 1000-1999/{SIZE}", data[1000:2000]),
        (f"bytes 200000-299999/{SIZE}", data[200000:300000]),
    ]
    assert all(ct == "application/octet-stream" for ct, _, _ in parts)


# ------------------------------------------------------------------ range outcomes


async def test_suffix_open_and_clipped_ranges(app, data) -> None:
    s = StrictServer(RANGES)
    assert (await s.request(app, path="/big.bin", headers=[("Range", "bytes=-500")])).body == data[-500:]
    assert (await s.request(app, path="/big.bin", headers=[("Range", "bytes=1000-")])).body == data[1000:]
    res = await s.request(app, path="/big.bin", headers=[("Range", f"bytes=299000-{SIZE + 50}")])
    assert res.headers["content-range"] == f"bytes 299000-{SIZE - 1}/{SIZE}"
    assert res.body == data[299000:]


async def test_unsatisfiable_416(app) -> None:
    res = await StrictServer(RANGES).request(app, path="/big.bin", headers=[("Range", f"bytes={SIZE}-")])
    assert res.status == 416
    assert res.headers["content-range"] == f"bytes */{SIZE}"
    assert res.body == b"" and res.pathsends == []


async def test_query_header_conflict_416(app) -> None:
    res = await StrictServer(RANGES).request(
        app, path="/big.bin", headers=[("Range", "bytes=0-9")], query=b"range=10-19"
    )
    assert res.status == 416 and res.headers["content-range"] == f"bytes */{SIZE}"


async def test_malformed_range_ignored_200(app, data) -> None:
    res = await StrictServer(RANGES).request(app, path="/big.bin", headers=[("Range", "bytes=5-4")])
    assert res.status == 200 and res.body == data


async def test_head_has_headers_no_body(app) -> None:
    for ext in (None, GRANIAN_LIKE, RANGES):
        res = await StrictServer(ext).request(app, method="HEAD", path="/big.bin")
        assert res.status == 200 and res.body == b"" and res.pathsends == []
        assert res.headers["content-length"] == str(SIZE)
        assert res.headers["accept-ranges"] == "bytes"
        # RFC 9110 §14.2: Range is only defined for GET; HEAD answers as for GET without it.
        res = await StrictServer(ext).request(app, method="HEAD", path="/big.bin", headers=[("Range", "bytes=0-9")])
        assert res.status == 200 and res.headers["content-length"] == str(SIZE) and res.body == b""


async def test_empty_file(app) -> None:
    res = await StrictServer(RANGES).request(app, path="/empty.bin", headers=[("Range", "bytes=0-")])
    assert res.status == 200 and res.body == b"" and res.headers["content-length"] == "0"


async def test_headers_and_types(app, media) -> None:
    s = StrictServer(RANGES)
    res = await s.request(app, path="/big.bin")
    st = os.stat(media / "big.bin")
    assert res.headers["etag"] == f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"' == make_etag(st)
    assert res.headers["last-modified"].endswith(" GMT")
    assert res.headers["content-type"] == "application/octet-stream"
    assert (await s.request(app, path="/clip.mp4")).headers["content-type"] == "video/mp4"
    assert (await s.request(app, path="/doc.pdf")).headers["content-type"] == "application/pdf"
    assert (await s.request(app, path="/sub/inner.txt")).body == b"inner\n"


# ------------------------------------------------------------------ conditionals


async def test_if_range(app, data) -> None:
    s = StrictServer(RANGES)
    first = await s.request(app, path="/big.bin")
    etag, lm = first.headers["etag"], first.headers["last-modified"]
    rng = ("Range", "bytes=10-19")
    assert (await s.request(app, path="/big.bin", headers=[rng, ("If-Range", etag)])).status == 206
    assert (await s.request(app, path="/big.bin", headers=[rng, ("If-Range", lm)])).status == 206
    other = await s.request(app, path="/big.bin", headers=[rng, ("If-Range", '"other"')])
    assert other.status == 200 and other.body == data
    weak = await s.request(app, path="/big.bin", headers=[rng, ("If-Range", "W/" + etag)])
    assert weak.status == 200


async def test_if_none_match_and_if_modified_since(app) -> None:
    s = StrictServer(RANGES)
    first = await s.request(app, path="/big.bin")
    etag, lm = first.headers["etag"], first.headers["last-modified"]
    for value in (etag, "W/" + etag, "*", f'"nope", {etag}'):
        res = await s.request(app, path="/big.bin", headers=[("If-None-Match", value)])
        assert res.status == 304, value
        assert res.body == b"" and res.headers["etag"] == etag and "content-length" not in res.headers
    assert (await s.request(app, method="HEAD", path="/big.bin", headers=[("If-None-Match", etag)])).status == 304
    assert (await s.request(app, path="/big.bin", headers=[("If-Modified-Since", lm)])).status == 304
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert (await s.request(app, path="/big.bin", headers=[("If-Modified-Since", old)])).status == 200
    # RFC 9110 §13.2.2: If-None-Match wins; If-Modified-Since is then not evaluated.
    res = await s.request(app, path="/big.bin", headers=[("If-None-Match", '"nope"'), ("If-Modified-Since", lm)])
    assert res.status == 200
    res = await s.request(app, path="/big.bin", headers=[("If-Modified-Since", "garbage")])
    assert res.status == 200


async def test_if_match_and_if_unmodified_since(app) -> None:
    s = StrictServer(RANGES)
    etag = (await s.request(app, method="HEAD", path="/big.bin")).headers["etag"]
    assert (await s.request(app, path="/big.bin", headers=[("If-Match", etag)])).status == 200
    assert (await s.request(app, path="/big.bin", headers=[("If-Match", '"x"')])).status == 412
    assert (await s.request(app, path="/big.bin", headers=[("If-Match", "W/" + etag)])).status == 412
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert (await s.request(app, path="/big.bin", headers=[("If-Unmodified-Since", old)])).status == 412


# ------------------------------------------------------------------ safety


@pytest.mark.parametrize(
    "path,raw",
    [
        ("/../etc/passwd", None),
        ("/sub/../../etc/passwd", None),
        ("/../etc/passwd", b"/%2e%2e/etc/passwd"),
        ("/sub/./inner.txt", None),
        ("/big.bin", b"/%2e%2e/media/big.bin"),  # a server that normalised `path`
        ("//etc/passwd", None),
        ("/etc//passwd", None),
        ("/big.bin\x00.txt", None),
        ("/sub\\..\\big.bin", None),
        ("/escape.txt", None),
        ("/escape_dir/secret.txt", None),
        ("/sub", None),
        ("/sub/", None),
        ("/nope.bin", None),
        ("/big.bin", b"/big%ff.bin"),  # undecodable raw path
    ],
)
async def test_traversal_and_non_files_are_404(app, path, raw) -> None:
    res = await StrictServer(RANGES).request(app, path=path, raw_path=raw)
    assert res.status == 404, (path, raw)
    assert b"secret" not in res.body and b"root:" not in res.body


async def test_symlink_inside_root_is_served(app, data) -> None:
    res = await StrictServer(RANGES).request(app, path="/inside_link.bin", headers=[("Range", "bytes=0-9")])
    assert res.status == 206 and res.body == data[:10]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
async def test_other_methods_405(app, method) -> None:
    for path in ("/big.bin", "/", "/healthz"):
        res = await StrictServer(RANGES).request(app, method=method, path=path)
        assert res.status == 405 and res.headers["allow"] == "GET, HEAD"


async def test_catalogue_and_healthz(app, media) -> None:
    s = StrictServer(RANGES)
    res = await s.request(app, path="/")
    assert res.status == 200 and res.headers["content-type"] == "application/json"
    items = json.loads(res.body)
    names = [i["name"] for i in items]
    assert names == sorted(names)
    assert {"big.bin", "clip.mp4", "doc.pdf", "empty.bin", "sub/inner.txt", "inside_link.bin"} == set(names)
    big = next(i for i in items if i["name"] == "big.bin")
    assert big == {
        "name": "big.bin",
        "size": SIZE,
        "type": "application/octet-stream",
        "etag": make_etag(os.stat(media / "big.bin")),
    }
    health = await s.request(app, path="/healthz")
    assert health.status == 200 and health.body == b"ok"


# ------------------------------------------------------------------ robustness


async def test_disconnect_stops_streaming_quietly(app) -> None:
    res = await StrictServer(None).request(app, path="/big.bin", disconnect_at_once=True)
    assert res.status == 200
    assert len(res.body) < SIZE  # stopped early, no exception


async def test_send_oserror_stops_quietly(app) -> None:
    res = await StrictServer(GRANIAN_LIKE).request(
        app, path="/big.bin", headers=[("Range", "bytes=0-200000")], send_raises_after=2
    )
    assert res.status == 206
    assert len(res.messages) == 3  # start, one body chunk, the one that raised


async def test_lifespan(app) -> None:
    queue: asyncio.Queue = asyncio.Queue()
    sent: list[dict] = []
    await queue.put({"type": "lifespan.startup"})
    await queue.put({"type": "lifespan.shutdown"})

    async def send(message: dict) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, queue.get, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_app_from_env(media, monkeypatch) -> None:
    monkeypatch.setenv("RANGEPROXY_MEDIA_DIR", str(media))
    assert app_from_env().root == os.path.realpath(media)
    monkeypatch.delenv("RANGEPROXY_MEDIA_DIR")
    with pytest.raises(RuntimeError):
        app_from_env()


# ------------------------------------------------------------------ CORS (off by default)

CORS_FIELDS = ("access-control-allow-origin", "access-control-expose-headers", "timing-allow-origin")


async def test_no_cors_fields_by_default(app) -> None:
    s = StrictServer(RANGES)
    for res in (await s.request(app, path="/big.bin", headers=[("Range", "bytes=0-9")]),
                await s.request(app, path="/nope.bin")):
        assert not set(CORS_FIELDS) & set(res.headers)
    pre = await s.request(app, method="OPTIONS", path="/big.bin",
                          headers=[("Origin", "http://a.test"), ("Access-Control-Request-Method", "GET")])
    assert pre.status == 405


@pytest.mark.parametrize("origin", ["*", "http://page.test:8000"])
async def test_cors_fields_on_every_answer(media, data, origin) -> None:
    app = MediaApp(media, cors_origin=origin)
    s = StrictServer(RANGES)
    res = await s.request(app, path="/big.bin", headers=[("Range", "bytes=10-19"), ("Origin", "http://x.test")])
    assert res.status == 206 and res.body == data[10:20]
    assert res.headers["access-control-allow-origin"] == origin
    assert res.headers["timing-allow-origin"] == origin
    exposed = {v.strip().lower() for v in res.headers["access-control-expose-headers"].split(",")}
    assert {"accept-ranges", "content-range", "content-length", "etag"} <= exposed
    assert "vary" not in res.headers  # one fixed value, whatever the Origin
    etag = res.headers["etag"]
    for extra in ([], [("If-None-Match", etag)], [("Range", "bytes=999999-")], [("If-Match", '"other"')]):
        r = await s.request(app, path="/big.bin", headers=extra)
        assert r.status in (200, 304, 416, 412)
        assert r.headers["access-control-allow-origin"] == origin, (extra, r.status)
    assert (await s.request(app, path="/nope.bin")).headers["access-control-allow-origin"] == origin
    head = await s.request(app, method="HEAD", path="/big.bin")
    assert head.headers["access-control-allow-origin"] == origin


async def test_cors_preflight(media) -> None:
    app = MediaApp(media, cors_origin="*")
    s = StrictServer(RANGES)
    pre = await s.request(app, method="OPTIONS", path="/big.bin", headers=[
        ("Origin", "http://a.test"), ("Access-Control-Request-Method", "GET"),
        ("Access-Control-Request-Headers", "range")])
    assert pre.status == 204 and pre.body == b"" and "content-length" not in pre.headers
    assert pre.headers["access-control-allow-origin"] == "*"
    assert pre.headers["access-control-allow-methods"] == "GET, HEAD"
    assert "range" in pre.headers["access-control-allow-headers"].lower().split(", ")
    # A plain OPTIONS (no preflight) is still refused; so are other methods.
    assert (await s.request(app, method="OPTIONS", path="/big.bin")).status == 405
    assert (await s.request(app, method="PUT", path="/big.bin")).status == 405


def test_app_from_env_cors(media, monkeypatch) -> None:
    monkeypatch.setenv("RANGEPROXY_MEDIA_DIR", str(media))
    monkeypatch.delenv("RANGEPROXY_CORS_ORIGIN", raising=False)
    assert app_from_env().cors_origin is None
    monkeypatch.setenv("RANGEPROXY_CORS_ORIGIN", "*")
    assert app_from_env().cors_origin == "*"


def test_ranges_api_used_matches() -> None:
    # The app relies on these names from the pure core.
    for name in ("evaluate", "select_range_header", "format_content_range", "format_unsatisfied",
                 "if_range_matches", "etag_matches_weak", "multipart", "Conflict", "Satisfiable"):
        assert hasattr(R, name), name
