"""Real clients through the proxy: curl, aria2c (segmented download) and
ffprobe/ffmpeg on an MP4 whose moov index is at the end. Missing tools skip
the test locally and fail it under CI=true (``require_tool``)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from appserver.demo_media import mp4_top_level_atoms
from tests.support.data import sha256_file, write_seeded_file
from tests.support.tools import require_tool

pytestmark = [pytest.mark.integration]


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (
        f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-3000:]}"
    )
    return proc


def test_curl_range(appserver, proxy_factory, tmp_path: Path) -> None:
    curl = require_tool("curl")
    proxy = proxy_factory(appserver.url)
    src = appserver.path("big.bin").read_bytes()
    for attempt in ("cold", "warm"):
        out = tmp_path / f"curl-{attempt}.bin"
        hdr = tmp_path / f"curl-{attempt}.hdr"
        run([curl, "-sS", "-f", "--max-time", "30", "-r", "20-345", "-D", str(hdr), "-o", str(out),
             proxy.url_for("big.bin")])
        assert out.read_bytes() == src[20:346], attempt
        head = hdr.read_text(errors="replace").lower()
        assert head.startswith("http/1.1 206"), head[:200]
        assert "content-range: bytes 20-345/%d" % len(src) in head
    out = tmp_path / "curl-full.bin"
    run([curl, "-sS", "-f", "--max-time", "60", "-o", str(out), proxy.url_for("odd.bin")])
    assert out.read_bytes() == appserver.path("odd.bin").read_bytes()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_aria2c_segmented_download(tmp_path: Path, appserver_factory, proxy_factory) -> None:
    aria2c = require_tool("aria2c")
    media = tmp_path / "aria-media"
    src = write_seeded_file(media / "big64.bin", 64 * 2**20, seed=5)
    want = sha256_file(src)
    origin = appserver_factory(media)
    proxy = proxy_factory(origin.url)
    for attempt in ("cold", "warm"):
        outdir = tmp_path / f"dl-{attempt}"
        outdir.mkdir()
        run([aria2c, "-x8", "-s8", "-k1M", "--dir", str(outdir), "--out", "big64.bin",
             "--allow-overwrite=true", "--auto-file-renaming=false", "--file-allocation=none",
             "--console-log-level=warn", "--summary-interval=0", "--download-result=hide",
             "--max-tries=1", "--timeout=30", "--connect-timeout=10", "--check-certificate=false",
             proxy.url_for("big64.bin")], timeout=150)
        got = outdir / "big64.bin"
        assert got.stat().st_size == src.stat().st_size, attempt
        assert sha256_file(got) == want, attempt


def _video_codec(ffmpeg: str) -> list[str]:
    encoders = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True,
                              check=False, timeout=30).stdout
    if any(line.split()[1:2] == ["libx264"] for line in encoders.splitlines()):
        return ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    return ["-c:v", "mpeg4", "-q:v", "6"]


@pytest.fixture
def mp4_media(tmp_path: Path) -> Path:
    ffmpeg = require_tool("ffmpeg")
    media = tmp_path / "video"
    media.mkdir()
    out = media / "clip.mp4"
    run([ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=20",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=20",
         "-map", "0:v", "-map", "1:a", *_video_codec(ffmpeg), "-g", "25",
         "-c:a", "aac", "-b:a", "64k", "-shortest",
         "-f", "mp4", str(out)], timeout=120)  # no +faststart: moov stays at the end
    atoms = mp4_top_level_atoms(out)
    assert atoms.index("moov") > atoms.index("mdat"), atoms
    return media


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_ffprobe_and_ffmpeg_seek_through_the_proxy(mp4_media: Path, appserver_factory, proxy_factory,
                                                   tmp_path: Path) -> None:
    ffprobe = require_tool("ffprobe")
    ffmpeg = require_tool("ffmpeg")
    local = mp4_media / "clip.mp4"
    origin = appserver_factory(mp4_media)
    proxy = proxy_factory(origin.url, slice_size=64 * 1024)
    url = proxy.url_for("clip.mp4")

    def probe(target: str) -> dict:
        proc = run([ffprobe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", target],
                   timeout=60)
        return json.loads(proc.stdout)

    want, got = probe(str(local)), probe(url)
    assert float(got["format"]["duration"]) == pytest.approx(float(want["format"]["duration"]), abs=0.01)
    assert float(got["format"]["duration"]) == pytest.approx(20, abs=0.5)
    assert int(got["format"]["size"]) == local.stat().st_size
    assert [s["codec_name"] for s in got["streams"]] == [s["codec_name"] for s in want["streams"]]

    def frame_at_10s(target: str, out: Path) -> bytes:
        run([ffmpeg, "-nostdin", "-v", "error", "-y", "-ss", "10", "-i", target, "-frames:v", "1",
             "-f", "rawvideo", "-pix_fmt", "rgb24", str(out)], timeout=60)
        return out.read_bytes()

    want_frame = frame_at_10s(str(local), tmp_path / "local.rgb")
    assert len(want_frame) == 320 * 240 * 3
    for attempt in ("cold-ish", "warm"):
        assert frame_at_10s(url, tmp_path / f"proxy-{attempt}.rgb") == want_frame, attempt
