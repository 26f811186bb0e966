"""Deterministic demo media for the appserver (and for tests and benchmarks).

    python -m appserver.demo_media --out data/media [--big-size BYTES]

Writes into the output directory:

* ``big.bin``    -- seeded pseudo-random bytes (64 MiB by default); the same
  size always gives the same bytes, so checksums can be compared end to end.
* ``sample.mp4`` -- a ~24 s test-pattern video with a sine tone, made with
  ffmpeg when it is on PATH (skipped with a note otherwise).  The ``moov``
  index is deliberately left at the END of the file (no faststart), so a
  player has to issue a range request near the end before it can play.
* ``sample.pdf`` -- a 20-page PDF written by hand with an exact xref table.
* ``hello.txt``  -- a few lines of text.

Pure standard library.  Idempotent: a file that already exists with the
right size (and, for the small files, the right bytes) is left alone; new
files are written to a temporary name and renamed into place.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

BIG_SEED = 20261123
BIG_SIZE = 64 * 2**20
CHUNK = 2**20

PDF_PAGES = 20
VIDEO_SECONDS = 24

HELLO_TEXT = (
    "Hello from the rangeproxy demo origin!\n"
    "This file is small enough to read whole; try a range of it:\n"
    "    curl -r 0-4 http://127.0.0.1:8081/hello.txt\n"
)

__all__ = [
    "BIG_SEED",
    "BIG_SIZE",
    "PDF_PAGES",
    "big_bin_chunks",
    "generate",
    "make_pdf",
    "mp4_top_level_atoms",
]


# --- helpers ------------------------------------------------------------------


def _log(verbose: bool) -> Callable[[str], None]:
    if verbose:
        return lambda msg: print(f"demo_media: {msg}", file=sys.stderr)
    return lambda msg: None


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _write_atomic(path: Path, chunks: Iterable[bytes]) -> None:
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_if_changed(path: Path, data: bytes, log: Callable[[str], None]) -> None:
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        log(f"{path.name}: up to date ({len(data)} bytes)")
        return
    _write_atomic(path, [data])
    log(f"{path.name}: wrote {len(data)} bytes")


# --- big.bin ------------------------------------------------------------------


def big_bin_chunks(size: int, seed: int = BIG_SEED) -> Iterable[bytes]:
    """The bytes of big.bin, in chunks of at most 1 MiB."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(CHUNK, left)
        yield rng.randbytes(n)
        left -= n


def _make_big(path: Path, size: int, log: Callable[[str], None]) -> None:
    if path.is_file() and path.stat().st_size == size:
        log(f"{path.name}: exists with the right size ({size} bytes), kept")
        return
    _write_atomic(path, big_bin_chunks(size))
    log(f"{path.name}: wrote {size} bytes (seed {BIG_SEED})")


# --- sample.pdf ---------------------------------------------------------------


def _pdf_str(text: str) -> bytes:
    esc = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return b"(" + esc.encode("latin-1") + b")"


def make_pdf(pages: int = PDF_PAGES) -> bytes:
    """A valid PDF 1.4 with ``pages`` A4 pages, each saying "Page N".

    Object layout: 1 catalog, 2 page tree, 3 font, 4 info, then for page i
    (0-based) object 5+2i is the page and 6+2i its content stream.
    """
    if pages < 1:
        raise ValueError("a PDF needs at least one page")
    width, height = 595, 842  # A4 in points
    objects: list[bytes] = []
    page_ids = [5 + 2 * i for i in range(pages)]

    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = b" ".join(b"%d 0 R" % pid for pid in page_ids)
    objects.append(b"<< /Type /Pages /Kids [ " + kids + b" ] /Count %d >>" % pages)
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    objects.append(
        b"<< /Title " + _pdf_str("rangeproxy demo PDF")
        + b" /Producer " + _pdf_str("appserver.demo_media") + b" >>"
    )
    for i in range(pages):
        n = i + 1
        # A pale background whose hue changes from page to page.
        r, g, b = (0.80 + 0.15 * ((n * k) % 7) / 6 for k in (1, 3, 5))
        content = b"\n".join(
            [
                b"q %.3f %.3f %.3f rg 36 36 %d %d re f Q" % (r, g, b, width - 72, height - 72),
                b"BT /F1 96 Tf 0 0 0 rg 100 420 Td " + _pdf_str(f"Page {n}") + b" Tj ET",
                b"BT /F1 14 Tf 0.3 0.3 0.3 rg 72 72 Td "
                + _pdf_str(f"rangeproxy demo PDF - page {n} of {pages}")
                + b" Tj ET",
            ]
        )
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d]" % (width, height)
            + b" /Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (page_ids[i] + 1)
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for num, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % num + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n" % (len(objects) + 1)
    out += b"0000000000 65535 f \n"  # each entry is exactly 20 bytes
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 4 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref_at
    return bytes(out)


# --- sample.mp4 ---------------------------------------------------------------


def mp4_top_level_atoms(path: str | os.PathLike[str]) -> list[str]:
    """Types of the top-level ISO-BMFF boxes ("atoms") of ``path``, in order.

    Raises ValueError when the file is not a well-formed sequence of boxes
    (e.g. truncated).
    """
    atoms: list[str] = []
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        pos = 0
        while pos < file_size:
            f.seek(pos)
            header = f.read(8)
            if len(header) < 8:
                raise ValueError(f"truncated box header at offset {pos}")
            size, kind = struct.unpack(">I4s", header)
            header_len = 8
            if size == 1:  # 64-bit "largesize" follows the type
                ext = f.read(8)
                if len(ext) < 8:
                    raise ValueError(f"truncated largesize at offset {pos}")
                (size,) = struct.unpack(">Q", ext)
                header_len = 16
            elif size == 0:  # box extends to the end of the file
                size = file_size - pos
            if size < header_len or pos + size > file_size:
                raise ValueError(f"bad box size {size} for {kind!r} at offset {pos}")
            atoms.append(kind.decode("latin-1"))
            pos += size
    return atoms


def _mp4_ok(path: Path) -> bool:
    try:
        atoms = mp4_top_level_atoms(path)
    except (OSError, ValueError):
        return False
    return "mdat" in atoms and "moov" in atoms and atoms.index("moov") > atoms.index("mdat")


def _ffmpeg_video_codec(ffmpeg: str) -> list[str]:
    encoders = subprocess.run(
        [ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True, check=False
    ).stdout
    if any(line.split()[1:2] == ["libx264"] for line in encoders.splitlines()):
        return ["-c:v", "libx264", "-preset", "veryfast", "-crf", "28", "-pix_fmt", "yuv420p"]
    return ["-c:v", "mpeg4", "-q:v", "6"]


def _make_mp4(path: Path, seconds: int, log: Callable[[str], None]) -> bool:
    """Make sample.mp4; False (with a note) when ffmpeg is not available."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        log(f"{path.name}: skipped, ffmpeg is not on PATH (install it, e.g. `make system-deps`)")
        return False
    if path.is_file() and _mp4_ok(path):
        log(f"{path.name}: exists ({path.stat().st_size} bytes, moov after mdat), kept")
        return True
    video_codec = _ffmpeg_video_codec(ffmpeg)
    tmp = _tmp_path(path)
    cmd = [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=25:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}",
        "-map", "0:v", "-map", "1:a",
        *video_codec, "-g", "50", "-threads", "1",
        "-c:a", "aac", "-b:a", "64k",
        "-shortest", "-map_metadata", "-1",
        # No "-movflags +faststart": the moov index stays at the end on purpose.
        "-fflags", "+bitexact", "-flags", "+bitexact",
        "-f", "mp4", str(tmp),
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {proc.stderr.strip()}")
        atoms = mp4_top_level_atoms(tmp)
        if not ("mdat" in atoms and "moov" in atoms and atoms.index("moov") > atoms.index("mdat")):
            raise RuntimeError(f"expected moov after mdat in {path.name}, got atoms {atoms}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log(f"{path.name}: wrote {path.stat().st_size} bytes ({video_codec[1]}, {seconds} s, atoms {atoms})")
    return True


# --- entry points -------------------------------------------------------------


def generate(
    out_dir: Path,
    big_size: int = BIG_SIZE,
    *,
    video: bool = True,
    video_seconds: int = VIDEO_SECONDS,
    verbose: bool = False,
) -> list[Path]:
    """Write the demo media into ``out_dir``; return the files that exist.

    ``sample.mp4`` is missing from the result when ffmpeg is not available
    (or ``video`` is false).
    """
    if big_size < 0:
        raise ValueError("big_size must be >= 0")
    log = _log(verbose)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []

    big = out_dir / "big.bin"
    _make_big(big, big_size, log)
    files.append(big)

    if video:
        mp4 = out_dir / "sample.mp4"
        if _make_mp4(mp4, video_seconds, log):
            files.append(mp4)

    pdf = out_dir / "sample.pdf"
    _write_if_changed(pdf, make_pdf(PDF_PAGES), log)
    files.append(pdf)

    hello = out_dir / "hello.txt"
    _write_if_changed(hello, HELLO_TEXT.encode(), log)
    files.append(hello)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m appserver.demo_media", description="Generate the demo media files."
    )
    parser.add_argument("--out", type=Path, default=Path("data/media"), help="output directory (default: data/media)")
    parser.add_argument(
        "--big-size", type=int, default=BIG_SIZE, metavar="BYTES", help=f"size of big.bin (default: {BIG_SIZE})"
    )
    parser.add_argument("--no-video", action="store_true", help="do not make sample.mp4")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    args = parser.parse_args(argv)
    files = generate(args.out, args.big_size, video=not args.no_video, verbose=not args.quiet)
    if not args.quiet:
        for f in files:
            print(f"{f}\t{f.stat().st_size}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
