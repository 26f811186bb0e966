"""appserver.watch through MediaApp, called directly: which messages go out, in which order, by what
the scope advertises (push and early hints on, off, or one of them), and what has no page."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from appserver.app import MediaApp
from appserver.watch import ASSETS, EARLY_HINT, PUSH, STATIC_DIR, page_html

BOTH = {PUSH: {}, EARLY_HINT: {}}


@pytest.fixture
def app(tmp_path: Path) -> MediaApp:
    root = tmp_path / "media"
    (root / "d").mkdir(parents=True)
    (root / "v.mp4").write_bytes(b"\x00" * 64)
    (root / "d" / "w x.webm").write_bytes(b"\x00" * 8)
    (root / "a.txt").write_bytes(b"text")
    (root / "fifo.mp4").mkdir()  # not a regular file
    (tmp_path / "outside.mp4").write_bytes(b"\x00")
    os.symlink(tmp_path / "outside.mp4", root / "link.mp4")
    return MediaApp(root)


async def call(app: MediaApp, path: str, extensions: dict[str, Any] | None = None, method: str = "GET",
               headers: list[tuple[bytes, bytes]] | None = None, query: bytes = b"") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": query,
             "headers": headers or [], "extensions": extensions or {}}
    await app(scope, receive, send)
    return sent


def kinds(sent: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in sent]


def status(sent: list[dict[str, Any]]) -> int:
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


async def test_both_offered_hint_before_start_pushes_between_start_and_body(app: MediaApp) -> None:
    sent = await call(app, "/watch/v.mp4", BOTH)
    assert kinds(sent) == [EARLY_HINT, "http.response.start", PUSH, PUSH, "http.response.body"]
    assert sent[0]["links"] == [a.link for a in ASSETS]
    assert [m["path"] for m in sent[2:4]] == [a.url_path for a in ASSETS]
    assert all(isinstance(m["path"], str) for m in sent[2:4])  # Hypercorn requires a str
    assert sent[-1]["body"] == page_html("v.mp4")


@pytest.mark.parametrize(("extensions", "expected"), [
    ({}, ["http.response.start", "http.response.body"]),
    ({PUSH: {}}, ["http.response.start", PUSH, PUSH, "http.response.body"]),
    ({EARLY_HINT: {}}, [EARLY_HINT, "http.response.start", "http.response.body"]),
    ({"http.response.pathsend": {"ranges": True}}, ["http.response.start", "http.response.body"]),
])
async def test_only_what_is_advertised_is_tried(app: MediaApp, extensions: dict[str, Any],
                                                expected: list[str]) -> None:
    sent = await call(app, "/watch/v.mp4", extensions)
    assert kinds(sent) == expected and status(sent) == 200


async def test_head_and_304_send_neither(app: MediaApp) -> None:
    head = await call(app, "/watch/v.mp4", BOTH, method="HEAD")
    assert kinds(head) == ["http.response.start", "http.response.body"] and head[-1]["body"] == b""
    etag = dict(head[0]["headers"])[b"etag"]
    again = await call(app, "/watch/v.mp4", BOTH, headers=[(b"if-none-match", etag)])
    assert kinds(again) == ["http.response.start", "http.response.body"] and status(again) == 304


@pytest.mark.parametrize("path", ["/watch/a.txt", "/watch/missing.mp4", "/watch/fifo.mp4", "/watch/link.mp4",
                                  "/watch/", "/watch/d/../v.mp4", "/_watch/other.js", "/_watch/"])
async def test_no_page_for_anything_but_a_video_file_inside_the_root(app: MediaApp, path: str) -> None:
    sent = await call(app, path, BOTH)
    assert kinds(sent) == ["http.response.start", "http.response.body"] and status(sent) == 404


async def test_a_page_in_a_subdirectory_uses_relative_urls(app: MediaApp) -> None:
    body = page_html("d/w x.webm")
    assert b'src="../../d/w%20x.webm"' in body
    assert f'href="../../{ASSETS[0].url_path[1:]}"'.encode() in body
    assert f'src="../../{ASSETS[1].url_path[1:]}"'.encode() in body
    sent = await call(app, "/watch/d/w x.webm")
    assert status(sent) == 200 and sent[-1]["body"] == body


async def test_names_are_escaped_in_the_page() -> None:
    body = page_html('<b>&"x.mp4')
    assert b"<b>" not in body and b"&lt;b&gt;&amp;&quot;x.mp4" in body


async def test_assets_immutable_only_at_their_current_version(app: MediaApp) -> None:
    for asset in ASSETS:
        current = await call(app, f"/_watch/{asset.name}", query=f"v={asset.version}".encode())
        headers = dict(current[0]["headers"])
        assert headers[b"cache-control"] == b"public, max-age=31536000, immutable"
        assert headers[b"content-type"] == asset.content_type.encode()
        assert current[-1]["body"] == (Path(STATIC_DIR) / asset.name).read_bytes()
        stale = await call(app, f"/_watch/{asset.name}", query=b"v=old")
        assert dict(stale[0]["headers"])[b"cache-control"] == b"no-cache"
        assert stale[-1]["body"] == current[-1]["body"]
