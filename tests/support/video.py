"""A small H.264/AAC MP4 that Chromium plays, made by ffmpeg for the browser tests.

H.264, not ffmpeg's default MPEG-4 part 2 (which Chromium does not play): an ffmpeg without
libx264 skips the test (a failure under CI=true). No faststart: the ``moov`` index stays after
``mdat``, so a player must ask for a range near the end before it can play.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from appserver.demo_media import mp4_top_level_atoms
from tests.support.tools import require_tool

__all__ = ["make_h264_mp4"]


def make_h264_mp4(path: Path, seconds: int) -> Path:
    """Write a 320x240, 25 fps test pattern with a 440 Hz tone, ``seconds`` long, to ``path``."""
    ffmpeg = require_tool("ffmpeg", package="ffmpeg")
    encoders = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True,
                              check=False, timeout=30).stdout
    if not any(line.split()[1:2] == ["libx264"] for line in encoders.splitlines()):
        pytest.skip("ffmpeg has no libx264: Chromium plays H.264, not MPEG-4 part 2")
    subprocess.run([ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=25:duration={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}",
                    "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", "-g", "25", "-c:a", "aac", "-b:a", "64k", "-shortest",
                    "-f", "mp4", str(path)], check=True, timeout=120)  # no faststart
    atoms = mp4_top_level_atoms(path)
    assert atoms.index("moov") > atoms.index("mdat"), atoms
    return path
