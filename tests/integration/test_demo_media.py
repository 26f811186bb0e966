"""appserver.demo_media: deterministic, idempotent, valid demo files."""

from __future__ import annotations

import hashlib
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appserver import demo_media
from appserver.demo_media import generate, mp4_top_level_atoms
from tests.support.tools import require_tool

SMALL = 3 * 2**20 + 123  # several 1 MiB chunks plus a partial one


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_generate_is_deterministic(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", big_size=SMALL, video=False)
    b = generate(tmp_path / "b", big_size=SMALL, video=False)
    assert [p.name for p in a] == ["big.bin", "sample.pdf", "hello.txt"]
    assert [p.name for p in a] == [p.name for p in b]
    for pa, pb in zip(a, b):
        assert sha256(pa) == sha256(pb), pa.name
    big = tmp_path / "a" / "big.bin"
    assert big.stat().st_size == SMALL
    # The documented recipe: seeded random.Random, 1 MiB chunks.
    rng = random.Random(demo_media.BIG_SEED)
    with big.open("rb") as f:
        assert f.read(2**20) == rng.randbytes(2**20)


def test_generate_is_idempotent(tmp_path: Path) -> None:
    files = generate(tmp_path, big_size=SMALL, video=False)
    before = {p.name: p.stat().st_mtime_ns for p in files}
    again = generate(tmp_path, big_size=SMALL, video=False)
    assert {p.name: p.stat().st_mtime_ns for p in again} == before
    # a different size is regenerated, no temporary files are left behind
    generate(tmp_path, big_size=SMALL + 1, video=False)
    assert (tmp_path / "big.bin").stat().st_size == SMALL + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin", "hello.txt", "sample.pdf"]


def test_pdf_pages_and_xref(tmp_path: Path) -> None:
    generate(tmp_path, big_size=0, video=False)
    pdf = (tmp_path / "sample.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-1.")
    assert pdf.rstrip().endswith(b"%%EOF")

    # /Type /Page but not /Type /Pages
    pages = re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf)
    assert len(pages) == demo_media.PDF_PAGES == 20
    assert re.search(rb"/Type /Pages .*?/Count 20\b", pdf)

    # startxref points at the xref table, whose entries point at "N 0 obj".
    startxref = int(re.search(rb"startxref\s+(\d+)\s+%%EOF", pdf).group(1))
    assert pdf[startxref:].startswith(b"xref\n")
    m = re.match(rb"xref\n0 (\d+)\n", pdf[startxref:])
    count = int(m.group(1))
    table = pdf[startxref + m.end() : startxref + m.end() + 20 * count]
    entries = [table[i : i + 20] for i in range(0, len(table), 20)]
    assert entries[0] == b"0000000000 65535 f \n"
    for num, entry in enumerate(entries[1:], start=1):
        assert re.fullmatch(rb"\d{10} 00000 n \n", entry), entry
        offset = int(entry[:10])
        assert pdf[offset:].startswith(b"%d 0 obj\n" % num), (num, offset)
    trailer = pdf[startxref + m.end() + 20 * count :]
    assert trailer.startswith(b"trailer\n")
    assert b"/Size %d" % count in trailer

    # Stream /Length values are exact.
    for length, body in re.findall(rb"<< /Length (\d+) >>\nstream\n(.*?)\nendstream", pdf, re.S):
        assert int(length) == len(body)

    if shutil.which("pdfinfo"):  # optional extra check (poppler-utils)
        out = subprocess.run(
            ["pdfinfo", str(tmp_path / "sample.pdf")], capture_output=True, text=True, check=True
        ).stdout
        assert re.search(r"^Pages:\s+20$", out, re.M), out


def test_mp4_moov_after_mdat(tmp_path: Path) -> None:
    require_tool("ffmpeg")
    files = generate(tmp_path, big_size=0, video_seconds=3)
    mp4 = tmp_path / "sample.mp4"
    assert mp4 in files
    atoms = mp4_top_level_atoms(mp4)
    assert "ftyp" == atoms[0]
    assert "mdat" in atoms and "moov" in atoms
    assert atoms.index("moov") > atoms.index("mdat"), atoms  # not faststart


def test_mp4_atom_parser_rejects_truncated(tmp_path: Path) -> None:
    f = tmp_path / "bad.mp4"
    # ftyp box of 16 bytes, then an mdat box that claims more than is there
    f.write_bytes(b"\x00\x00\x00\x10ftypisom\x00\x00\x02\x00" + b"\x00\x00\x01\x00mdat" + b"x" * 10)
    with pytest.raises(ValueError):
        mp4_top_level_atoms(f)
    f.write_bytes(b"\x00\x00\x00\x10ftypisom\x00\x00\x02\x00" + b"\x00\x00\x00\x00mdat" + b"x" * 10)
    assert mp4_top_level_atoms(f) == ["ftyp", "mdat"]  # size 0: to end of file


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "media"
    proc = subprocess.run(
        [sys.executable, "-m", "appserver.demo_media", "--out", str(out), "--big-size", "1000", "--no-video", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "big.bin").stat().st_size == 1000
    assert (out / "sample.pdf").is_file() and (out / "hello.txt").is_file()
