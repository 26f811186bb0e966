"""A page on another origin plays a video and reads a PDF through the proxy, in headless Chromium.

Real parts only: the demo origin (``python -m appserver --cors-origin "*"``), the proxy in
front of it (which replays the origin's stored header fields, CORS ones included), Debian's
``chromium`` driven by playwright, Debian's pdf.js (``libjs-pdf``), an MP4 made by ffmpeg
(``moov`` at the end, so the player must ask for a range near the end first) and a 20-page
PDF (``appserver.demo_media.make_pdf``). The page is served by a small aiohttp server on
its own loopback port: a different origin from the proxy's, so every request the page
makes to the proxy is cross-origin.

The page (``PAGE`` below) has ``<video crossorigin="anonymous">`` on the proxy's MP4: it
waits for ``loadedmetadata`` and ``canplay``, seeks (``currentTime``) and waits for
``seeked``, then draws the frame into a canvas and reads it back (which a tainted,
non-CORS video would forbid). pdf.js loads the PDF with range requests only
(``disableStream``, ``disableAutoFetch``, 1 KiB chunks), counts the pages and reads the
text of the last page. The result is a JSON document in ``#result``; the test waits for
it (``body[data-done]``), bounded, never a fixed sleep.

Asserted: duration and frame size match ffprobe's, the seek landed, the canvas read
back coloured pixels; the page count and last page's text match the PDF; the browser's
requests for both went to the proxy, with ``Range`` and ``206`` answers carrying
``Access-Control-Allow-Origin``, and the proxy's ``/stats.json`` counted them. The
negative control: the same page against a second proxy whose origin sends no CORS
fields: the proxy answers (its stats count the requests) but Chromium refuses the
answers: the video errors and pdf.js fails.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlencode

import aiohttp
import pytest

from appserver.demo_media import PDF_PAGES, make_pdf
from tests.support.browser import CHROMIUM_ARGS, PageServer, require_pdfjs
from tests.support.servers import AppServerProc, ProxyProc, start_appserver, start_proxy
from tests.support.tools import require_tool
from tests.support.video import make_h264_mp4

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SECONDS = 6
SEEK_TO = 4.0
PAGE_TIMEOUT_MS = 20_000

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>cors test</title><link rel="icon" href="data:,">
<script src="/pdfjs/build/pdf.js"></script></head>
<body>
<video id="v" crossorigin="anonymous" preload="auto" muted></video>
<canvas id="c" width="64" height="48"></canvas>
<pre id="result"></pre>
<script>
"use strict";
const q = new URLSearchParams(location.search);
const out = {video: {events: []}, pdf: {}};
let pending = 2;
function finish() {
  if (--pending) return;
  document.getElementById("result").textContent = JSON.stringify(out);
  document.body.dataset.done = "1";
}

// The video: metadata, canplay, a seek, then a frame read back through a canvas.
const v = document.getElementById("v");
let videoDone = false;
function videoFinish() { if (!videoDone) { videoDone = true; finish(); } }
v.addEventListener("loadedmetadata", () => {
  out.video.events.push("loadedmetadata");
  Object.assign(out.video, {duration: v.duration, width: v.videoWidth, height: v.videoHeight});
});
v.addEventListener("canplay", () => {
  if (out.video.events.includes("canplay")) return;
  out.video.events.push("canplay");
  v.currentTime = Number(q.get("seek"));
});
v.addEventListener("seeked", () => {
  out.video.events.push("seeked");
  out.video.currentTime = v.currentTime;
  try {
    const ctx = document.getElementById("c").getContext("2d");
    ctx.drawImage(v, 0, 0, 64, 48);
    const d = ctx.getImageData(0, 0, 64, 48).data;
    let lit = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 60) lit++;
    out.video.litPixels = lit;
  } catch (e) { out.video.canvasError = String(e); }
  videoFinish();
});
v.addEventListener("error", () => {
  out.video.events.push("error");
  out.video.error = {code: v.error && v.error.code, message: v.error && v.error.message};
  videoFinish();
});
v.src = q.get("video");

// The PDF: pdf.js with range requests only.
pdfjsLib.GlobalWorkerOptions.workerSrc = "/pdfjs/build/pdf.worker.js";
(async () => {
  try {
    const doc = await pdfjsLib.getDocument({
      url: q.get("pdf"), rangeChunkSize: 1024, disableStream: true, disableAutoFetch: true,
      standardFontDataUrl: "/pdfjs/web/standard_fonts/",
    }).promise;
    out.pdf.numPages = doc.numPages;
    const page = await doc.getPage(doc.numPages);
    const text = await page.getTextContent();
    out.pdf.lastPageText = text.items.map((i) => i.str).filter((s) => s).join("|");  // (EOL items are empty)
    out.pdf.length = (await doc.getDownloadInfo()).length;
  } catch (e) {
    out.pdf.error = String((e && e.message) || e);
  }
  finish();
})();
</script></body></html>
"""


@dataclass
class Seen:
    """What the browser asked the proxy for, and what it got."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def for_(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["url"].endswith("/" + name)]


def ffprobe(path: Path) -> dict[str, Any]:
    exe = require_tool("ffprobe", package="ffmpeg")
    out = subprocess.run([exe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
                         capture_output=True, text=True, check=True, timeout=30)
    info = json.loads(out.stdout)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    return {"duration": float(info["format"]["duration"]), "width": int(video["width"]),
            "height": int(video["height"])}


@pytest.fixture
def media(tmp_path: Path) -> Path:
    d = tmp_path / "media"
    d.mkdir()
    make_h264_mp4(d / "clip.mp4", SECONDS)
    (d / "doc.pdf").write_bytes(make_pdf(PDF_PAGES))
    return d


@pytest.fixture
def stacks(media: Path, tmp_path: Path) -> Iterator[dict[str, tuple[AppServerProc, ProxyProc]]]:
    """Two origins on the same media, each behind its own proxy: ``cors`` (``--cors-origin "*"``)
    and ``plain`` (no CORS fields)."""
    procs: list[AppServerProc | ProxyProc] = []
    try:
        out = {}
        for name, cors in (("cors", "*"), ("plain", None)):
            origin = start_appserver(media, tmp_path / f"origin-{name}", cors_origin=cors)
            procs.append(origin)
            proxy = start_proxy(origin.url, tmp_path / f"proxy-{name}", readahead_slices=0)
            procs.append(proxy)
            out[name] = (origin, proxy)
        yield out
    finally:
        for p in reversed(procs):
            p.stop(check=False)


async def run_page(browser: Any, pages: PageServer, proxy: ProxyProc) -> tuple[dict[str, Any], Seen]:
    """Open the page against ``proxy`` and wait (bounded) for its JSON result."""
    seen = Seen()
    context = await browser.new_context()
    try:
        page = await context.new_page()
        # No HTTP cache in the browser: every range it wants is asked of the proxy, and answered
        # by it. (With the cache, Chromium asks again for what it has with If-None-Match and
        # serves its stored 206 on the proxy's 304, which hides the proxy's answer from the test.)
        cdp = await context.new_cdp_session(page)
        await cdp.send("Network.enable")
        await cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
        page.on("console", lambda m: seen.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: seen.page_errors.append(str(e)))
        page.on("requestfailed", lambda r: seen.failed.append(f"{r.url} {r.failure}"))

        responses: list[Any] = []
        page.on("response", lambda r: responses.append(r))  # (one event per response, in order; read below)
        query = urlencode({"video": proxy.url_for("clip.mp4"), "pdf": proxy.url_for("doc.pdf"), "seek": SEEK_TO})
        await page.goto(f"{pages.url}/?{query}")
        await page.wait_for_selector("body[data-done]", state="attached", timeout=PAGE_TIMEOUT_MS)
        result = json.loads(await page.text_content("#result") or "{}")
        for response in responses:
            if not response.url.startswith(proxy.url + "/"):
                continue
            req = response.request
            req_headers = await req.all_headers()
            seen.requests.append({
                "url": response.url, "method": req.method, "resource_type": req.resource_type,
                "range": req_headers.get("range"), "status": response.status, "req_headers": req_headers,
                "headers": await response.all_headers(),
            })
        return result, seen
    finally:
        await context.close()


async def proxy_stats(proxy: ProxyProc, timeout: float = 10.0) -> dict[str, Any]:
    """``/stats.json`` once no slice fetch is in flight (bounded)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(proxy.url + "/stats.json") as r:
                assert r.status == 200
                s: dict[str, Any] = await r.json()
            if s["gauges"]["slice_fetches_in_flight"] == 0 or time.monotonic() > deadline:
                return s
            await asyncio.sleep(0.05)


def conditional(r: dict[str, Any]) -> bool:
    """A request made conditional by Chromium's HTTP cache (there is none here: see run_page)."""
    return "if-none-match" in r["req_headers"] or "if-modified-since" in r["req_headers"]


def objects(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["path"]: o for o in stats["top_objects"]}


async def test_cross_origin_page_plays_video_and_reads_pdf_through_the_proxy(
        media: Path, stacks: dict[str, tuple[AppServerProc, ProxyProc]]) -> None:
    chromium = require_tool("chromium", package="chromium")
    pdfjs = require_pdfjs()
    from playwright.async_api import async_playwright

    probe = ffprobe(media / "clip.mp4")
    pdf_size = (media / "doc.pdf").stat().st_size
    _, proxy = stacks["cors"]
    _, plain_proxy = stacks["plain"]

    async with PageServer({"/": PAGE}, static={"/pdfjs": pdfjs}) as pages, async_playwright() as pw:
        assert pages.url != proxy.url and pages.url.startswith("http://127.0.0.1:")
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            result, seen = await run_page(browser, pages, proxy)
            bad, bad_seen = await run_page(browser, pages, plain_proxy)
        finally:
            await browser.close()

    context = f"result={result}\nconsole={seen.console}\nerrors={seen.page_errors}\nfailed={seen.failed}"
    # The video: metadata, playable, the seek landed, the frame is readable (CORS-clean).
    video = result["video"]
    assert video["events"][:2] == ["loadedmetadata", "canplay"] and "seeked" in video["events"], context
    assert "error" not in video, context
    assert abs(video["duration"] - probe["duration"]) < 0.1, (video, probe)
    assert (video["width"], video["height"]) == (probe["width"], probe["height"]), (video, probe)
    assert abs(video["currentTime"] - SEEK_TO) < 0.05, video
    assert "canvasError" not in video and video["litPixels"] > 100, video
    # The PDF: all pages, the last page's text, the whole length known from the range answers.
    pdf = result["pdf"]
    assert "error" not in pdf, context
    assert pdf["numPages"] == PDF_PAGES, pdf
    assert pdf["lastPageText"].split("|") == [f"Page {PDF_PAGES}",
                                              f"rangeproxy demo PDF - page {PDF_PAGES} of {PDF_PAGES}"], pdf
    assert pdf["length"] == pdf_size, pdf
    assert seen.page_errors == [], context
    assert not [line for line in seen.console if line.startswith("error")], context

    # The browser's requests went to the proxy: ranges, answered 206 with the origin's CORS fields.
    for name, size in (("clip.mp4", (media / "clip.mp4").stat().st_size), ("doc.pdf", pdf_size)):
        for r in seen.for_(name):
            assert r["method"] == "GET" and r["status"] in (200, 206) and not conditional(r), r
        ranged = [r for r in seen.for_(name) if r["range"] is not None]
        assert ranged, (name, seen.for_(name))
        for r in ranged:
            assert r["status"] == 206, r
            h = r["headers"]
            assert h["content-range"].startswith("bytes ") and h["content-range"].endswith(f"/{size}"), r
            assert h["access-control-allow-origin"] == "*", r
            assert "content-range" in h["access-control-expose-headers"].lower(), r
            assert h["timing-allow-origin"] == "*", r
            assert h.get("x-cache") in ("HIT", "MISS", "PARTIAL"), r
    # pdf.js read the PDF in 1 KiB ranges (its first, whole-file request cancelled), not in one piece.
    pdf_ranges = [r for r in seen.for_("doc.pdf") if r["range"] is not None]
    assert len(pdf_ranges) >= 2, seen.for_("doc.pdf")
    # ... the first of them for the end, where the xref table is.
    assert any(r["range"].endswith(f"-{pdf_size - 1}") and r["range"] != f"bytes=0-{pdf_size - 1}"
               for r in pdf_ranges), pdf_ranges

    stats = await proxy_stats(proxy)
    objs = objects(stats)
    assert objs["/clip.mp4"]["requests"] >= len(seen.for_("clip.mp4")) > 0, objs
    assert objs["/doc.pdf"]["requests"] >= len(pdf_ranges), objs
    assert stats["totals"]["upstream_requests"] > 0, stats["totals"]

    # Negative control: the same page, through a proxy whose origin sends no CORS fields.
    bad_context = f"result={bad}\nconsole={bad_seen.console}\nfailed={bad_seen.failed}"
    assert bad["video"]["events"] == ["error"] and "seeked" not in bad["video"]["events"], bad_context
    assert "duration" not in bad["video"], bad_context
    assert "error" in bad["pdf"] and "numPages" not in bad["pdf"], bad_context
    for name in ("clip.mp4", "doc.pdf"):
        assert any(name in line and "blocked by CORS policy" in line and "Access-Control-Allow-Origin" in line
                   for line in bad_seen.console), bad_context
        assert any(line.startswith(plain_proxy.url_for(name)) for line in bad_seen.failed), bad_context
    assert bad_seen.requests == [], bad_context  # no answer reached the page
    # ... though the proxy did answer them: the browser refused the answers, not the network.
    bad_objs = objects(await proxy_stats(plain_proxy))
    assert bad_objs.get("/clip.mp4", {}).get("requests", 0) >= 1, bad_objs
    assert bad_objs.get("/doc.pdf", {}).get("requests", 0) >= 1, bad_objs
