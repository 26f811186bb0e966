"""The /stats dashboard in headless Chromium (Debian's ``chromium``, driven by playwright).

Real origin, real proxy, real traffic; then the page must show it: non-zero charts,
a slice map with cached slices, no console errors, no request leaving the proxy,
and a purge button that purges (the next request is a MISS). A screenshot is saved
under the test's temporary directory (``stats.png``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.client import fetch
from tests.support.data import write_seeded_file
from tests.support.servers import start_appserver, start_proxy
from tests.support.tools import require_tool

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MiB = 2**20
TOKEN = "dash-t0ken"
FEED_TOKEN = "dash-f33d"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Counts the pixels of a canvas that are close to a CSS colour variable (the page's own palette).
COUNT_PIXELS = """([sel, varName]) => {
  const c = document.querySelector(sel);
  if (!c) return -1;
  const css = getComputedStyle(document.documentElement).getPropertyValue(varName).trim();
  const probe = document.createElement('canvas').getContext('2d');
  probe.fillStyle = css; probe.fillRect(0, 0, 1, 1);
  const [r, g, b] = probe.getImageData(0, 0, 1, 1).data;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (Math.abs(d[i] - r) + Math.abs(d[i + 1] - g) + Math.abs(d[i + 2] - b) < 60 && d[i + 3] > 100) n++;
  }
  return n;
}"""


async def wait_idle(http: aiohttp.ClientSession, base: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        async with http.get(base + "/stats.json", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200
            s = await r.json()
        if s["gauges"]["slice_fetches_in_flight"] == 0 or time.monotonic() > deadline:
            return s
        await asyncio.sleep(0.05)


@pytest.fixture
def servers(tmp_path: Path):
    media = tmp_path / "media"
    write_seeded_file(media / "big.bin", 8 * MiB, 1)
    write_seeded_file(media / "movie.mp4", 24 * MiB, 2)
    write_seeded_file(media / "small.bin", 2 * MiB + 5, 3)
    origin = start_appserver(media, tmp_path / "appserver", events_token=FEED_TOKEN)
    proxy = None
    try:
        # protect_stats: the page is opened with ?token=, and its script must send the token itself.
        proxy = start_proxy(origin.url, tmp_path / "proxy", slice_size=MiB, readahead_slices=0,
                            admin_token=TOKEN, protect_stats=True, node_name="edge-dash-1",
                            change_feed=f"ws://127.0.0.1:{origin.port}/_events", change_feed_token=FEED_TOKEN)
        yield origin, proxy
    finally:
        if proxy is not None:
            proxy.stop(check=False)
        origin.stop(check=False)


async def traffic(http: aiohttp.ClientSession, base: str) -> None:
    """Cold then warm ranges of three objects, so both chart series and the slice maps have data."""
    plan = [("big.bin", 0, 3 * MiB - 1), ("small.bin", 0, None), ("movie.mp4", 0, 6 * MiB - 1),
            ("big.bin", 0, 3 * MiB - 1), ("movie.mp4", 0, 4 * MiB - 1), ("big.bin", 5 * MiB, 6 * MiB - 1),
            ("movie.mp4", 10 * MiB, 12 * MiB - 1), ("small.bin", 0, None), ("movie.mp4", 0, 6 * MiB - 1)]
    for name, a, b in plan:
        headers = {} if b is None else {"Range": f"bytes={a}-{b}"}
        out = await fetch(http, f"{base}/{name}", headers=headers)
        assert out.status in (200, 206) and out.complete, (name, out.status, out.error)
        await wait_idle(http, base)


async def test_dashboard_shows_traffic_and_purges(servers, tmp_path: Path) -> None:
    chromium = require_tool("chromium")
    from playwright.async_api import async_playwright

    origin, proxy = servers
    async with aiohttp.ClientSession() as http:
        await traffic(http, proxy.url)
        await asyncio.sleep(1.3)  # a per-second sample after the traffic
        before = await wait_idle(http, proxy.url)
        big = next(o for o in before["top_objects"] if o["path"] == "/big.bin")
        assert big["cached_slices"] == 4 and big["slices"] == 8

        problems: list[str] = []
        foreign: list[str] = []
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1440, "height": 1000})
                # (warnings are not collected: the pixel checks below read canvases back, and
                # Chromium warns about exactly that)
                page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                        if m.type == "error" else None)
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))

                async def only_the_proxy(route: Any) -> None:
                    if route.request.url.startswith(proxy.url + "/"):
                        await route.continue_()
                    else:
                        foreign.append(route.request.url)
                        await route.abort()

                await page.route("**/*", only_the_proxy)
                await page.goto(f"{proxy.url}/stats?token={TOKEN}")
                await page.wait_for_selector("body[data-updated]", timeout=10_000)
                await page.wait_for_selector('#live.ok', timeout=10_000)

                # KPIs carry numbers, not placeholders.
                for sel in ("#hit-bytes", "#offload-bytes", "#lat-p50", "#cache-size"):
                    text = (await page.text_content(sel) or "").strip()
                    assert text and text != "–", (sel, text)
                assert (await page.text_content("#origin")) == origin.url
                assert (await page.text_content("#node")) == "edge-dash-1"  # the fleet's name for it

                # Charts: non-zero data, drawn in the cache and origin colours.
                for chart in ("#chart-requests", "#chart-bytes"):
                    assert float(await page.get_attribute(chart, "data-max") or 0) > 0, chart
                    assert await page.evaluate(COUNT_PIXELS, [chart, "--cache"]) > 50, chart
                    assert await page.evaluate(COUNT_PIXELS, [chart, "--origin"]) > 10, chart

                # Top objects, each with a slice map; big.bin: 4 of 8 slices cached.
                paths = await page.eval_on_selector_all("#objects-body tr", "rows => rows.map(r => r.dataset.path)")
                assert set(paths) == {"/big.bin", "/movie.mp4", "/small.bin"}
                row = page.locator('#objects-body tr[data-path="/big.bin"]')
                assert await row.get_attribute("data-cached-fraction") == "0.5"
                assert "4 of 8 slices cached" in (await row.locator(".maptext").text_content() or "")
                sel = '#objects-body tr[data-path="/big.bin"] canvas'
                green = await page.evaluate(COUNT_PIXELS, [sel, "--cache"])
                grey = await page.evaluate(COUNT_PIXELS, [sel, "--missing"])
                assert green > 0 and grey > 0
                assert abs(green - grey) / (green + grey) < 0.1  # half and half
                small = page.locator('#objects-body tr[data-path="/small.bin"]')
                assert await small.get_attribute("data-cached-fraction") == "1"

                await page.screenshot(path=str(tmp_path / "stats.png"), full_page=True)

                # Purge big.bin: the first click arms the button, the second purges.
                button = row.locator("button.purge")
                await button.click()
                assert (await button.text_content()) == "Confirm"
                await button.click()
                await page.wait_for_selector("#toast.show", timeout=5_000)
                assert "Purged /big.bin" in (await page.text_content("#toast") or "")
                await page.wait_for_function(
                    """() => { const r = document.querySelector('#objects-body tr[data-path="/big.bin"]');
                               return r && r.dataset.cachedFraction === "0"; }""", timeout=5_000)
                assert "not in cache" in (await row.locator(".meta").text_content() or "")
                assert await page.evaluate(COUNT_PIXELS, [sel, "--cache"]) == 0
                await page.screenshot(path=str(tmp_path / "stats-after-purge.png"), full_page=True)

                # The origin's change feed: live, and a file replaced on disk is counted as purged.
                feed_line = """() => [...document.querySelectorAll('#origin-facts dt')]
                    .filter(dt => dt.textContent === 'change feed')
                    .map(dt => [dt.nextElementSibling.textContent, dt.nextElementSibling.className])[0] || null"""
                await page.wait_for_function(f"() => {{ const l = ({feed_line})(); return l && l[1] === 'good'; }}",
                                             timeout=10_000)
                (origin.media_dir / "movie.mp4.new").write_bytes(b"changed" * 1000)
                (origin.media_dir / "movie.mp4.new").replace(origin.media_dir / "movie.mp4")
                await page.wait_for_function(
                    f"() => {{ const l = ({feed_line})(); return l && / 1 purged$/.test(l[0]); }}", timeout=10_000)
                text, cls = await page.evaluate(feed_line)
                assert text.startswith("live ") and " events · 1 purged" in text and cls == "good", (text, cls)
            finally:
                await browser.close()

        assert problems == []
        assert foreign == []
        after = await wait_idle(http, proxy.url)
        assert after["totals"]["purges"] == 1
        assert next(o for o in after["top_objects"] if o["path"] == "/big.bin")["in_cache"] is False
        # The next request for big.bin is a miss: the origin is asked again.
        out = await fetch(http, proxy.url + "/big.bin", headers={"Range": f"bytes=0-{MiB - 1}"})
        assert out.status == 206 and out.header("X-Cache") == "MISS"
        out = await fetch(http, proxy.url + "/small.bin", headers={"Range": "bytes=0-9"})
        assert out.header("X-Cache") == "HIT"  # the other objects stay cached
    assert (tmp_path / "stats.png").stat().st_size > 10_000
