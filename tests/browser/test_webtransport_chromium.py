"""Headless Chromium fetches byte ranges over WebTransport from the h3 appserver (``/_ranges``).

Real parts only: ``python -m appserver --server h3`` on loopback UDP with a self-signed ECDSA P-256
certificate valid 10 days, made by the test (:mod:`tests.support.certs`); Debian's ``chromium``,
started by playwright *without* ``--disable-quic``. The page is served over plain HTTP from
``http://127.0.0.1:<port>`` (loopback is a potentially trustworthy origin, so the page is a secure
context and may use ``WebTransport``); it opens ``new WebTransport("https://127.0.0.1:<port>/_ranges",
{serverCertificateHashes: [{algorithm: "sha-256", value}]})`` -- no CA, the certificate's hash is
the trust -- fetches 8 ranges concurrently on 8 bidirectional streams, and returns each answer's
status line, length and SHA-256, checked here against the file. Then a 404 on a ninth stream, and
a ranged fetch after it: errors close the stream, not the session. The control: the same page with
another hash gets no session.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support.browser import CHROMIUM_ARGS_QUIC, PageServer
from tests.support.certs import SelfSignedCert, make_self_signed_cert
from tests.support.data import write_seeded_file
from tests.support.servers import AppServerProc, start_appserver
from tests.support.tools import require_tool

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SIZE = 16 * 2**20 + 77
RANGES = 8
PAGE = "<!doctype html><html><head><meta charset='utf-8'><title>wt</title><link rel='icon' href='data:,'></head>" \
       "<body>webtransport ranges</body></html>"

# Runs in the page: one session, the requests concurrently, one stream each; the body of each answer
# hashed in the page (crypto.subtle: a secure context) so only digests cross back to Python.
SCRIPT = """async ({url, hash, requests}) => {
  const out = {secure: window.isSecureContext, results: []};
  let wt;
  try {
    wt = new WebTransport(url, {serverCertificateHashes: [{algorithm: "sha-256", value: new Uint8Array(hash)}]});
    await wt.ready;
  } catch (e) {
    out.error = "session: " + String(e) + (e && e.source ? " source=" + e.source : "");
    return out;
  }
  const hex = (buf) => Array.from(new Uint8Array(buf)).map(b => b.toString(16).padStart(2, "0")).join("");
  const one = async (request) => {
    const stream = await wt.createBidirectionalStream();
    const writer = stream.writable.getWriter();
    await writer.write(new TextEncoder().encode(request));
    await writer.close();
    const reader = stream.readable.getReader();
    const chunks = [];
    let n = 0;
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      chunks.push(value);
      n += value.length;
    }
    const all = new Uint8Array(n);
    let at = 0;
    for (const c of chunks) { all.set(c, at); at += c.length; }
    const nl = all.indexOf(10);
    const body = all.subarray(nl + 1);
    return {line: new TextDecoder().decode(all.subarray(0, nl)), length: body.length,
            sha256: hex(await crypto.subtle.digest("SHA-256", body))};
  };
  try {
    out.results = await Promise.all(requests.map(one));
    out.after = [await one("GET /missing.bin bytes=0-9\\n"),
                 await one("GET /big.bin bytes=0-9\\n")];
  } catch (e) {
    out.error = "streams: " + String(e);
  }
  wt.close();
  return out;
}"""


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> SelfSignedCert:
    return make_self_signed_cert(tmp_path_factory.mktemp("wtcert"))


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wtmedia") / "media"
    write_seeded_file(root / "big.bin", SIZE, 8)
    return root


@pytest.fixture(scope="module")
def h3server(media: Path, cert: SelfSignedCert, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServerProc]:
    p = start_appserver(media, tmp_path_factory.mktemp("wtserver"), server="h3",
                        certfile=cert.certfile, keyfile=cert.keyfile)
    yield p
    p.stop(check=False)


def spans() -> list[tuple[int, int]]:
    step = SIZE // RANGES
    return [(i * step + 3 * i, min(SIZE, (i + 1) * step + 5 * i)) for i in range(RANGES)]


async def test_chromium_fetches_8_ranges_over_webtransport(h3server: AppServerProc, cert: SelfSignedCert,
                                                           media: Path) -> None:
    chromium = require_tool("chromium", package="chromium")
    from playwright.async_api import async_playwright

    data = (media / "big.bin").read_bytes()
    wanted = spans()
    requests = [f"GET /big.bin bytes={s}-{e - 1}\n" for s, e in wanted]
    console: list[str] = []
    async with PageServer({"/": PAGE}) as pages, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS_QUIC)
        try:
            page = await browser.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            await page.goto(pages.url + "/")
            url = f"https://127.0.0.1:{h3server.port}/_ranges"
            result: dict[str, Any] = await page.evaluate(SCRIPT, {"url": url, "hash": list(cert.sha256),
                                                                  "requests": requests})
            # The control: another hash, so the certificate is not trusted and no session opens.
            wrong = hashlib.sha256(b"not the certificate").digest()
            refused: dict[str, Any] = await page.evaluate(SCRIPT, {"url": url, "hash": list(wrong),
                                                                   "requests": requests[:1]})
        finally:
            await browser.close()
    context = f"result={result}\nconsole={console}\nserver stderr={h3server.stderr_text()[-3000:]}"
    assert result["secure"] is True, context
    assert "error" not in result, context
    assert len(result["results"]) == RANGES, context
    for (s, e), got in zip(wanted, result["results"]):
        assert got["line"] == f"206 {e - s} {s}-{e - 1}/{SIZE}", context
        assert got["length"] == e - s, context
        assert got["sha256"] == hashlib.sha256(data[s:e]).hexdigest(), (s, e)
    assert refused.get("error", "").startswith("session: "), refused
    missing, after = result["after"]
    assert (missing["line"], missing["length"]) == ("404 not found", 0), context
    assert after["line"] == f"206 10 0-9/{SIZE}" and after["sha256"] == hashlib.sha256(data[:10]).hexdigest()
