"""Smoke test of the cache benchmarks: a tiny run of the ``proxy`` and ``figures`` workloads.

``python -m benchmarks --only proxy --only figures`` on 4 MiB objects, one round
of one second, a one-second RSS run: checks that every table is printed, that
the harness verified the bytes (multipart from rangeproxy, cold GETs, ranges,
collapsed and sequential readers) and that the cold full GET cost exactly the
object's size at the origin. A benchmark run, not a timed test: no speed is
asserted. Needs wrk, nginx and taskset (skipped when missing, failed under
CI=true, via ``require_tool``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.tools import run_benchmarks

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]


def _section(text: str, title_start: str) -> list[str]:
    """Table rows of the section whose '### ' title starts with ``title_start``."""
    lines = text.splitlines()
    for i, ln in enumerate(lines):
        if ln.startswith("### " + title_start):
            body = []
            for nxt in lines[i + 1:]:
                if nxt.startswith("### "):
                    break
                body.append(nxt)
            # Table rows, without header rows (those followed by the |---| line).
            return [ln for j, ln in enumerate(body) if ln.startswith("| ")
                    and not (j + 1 < len(body) and body[j + 1].startswith("|---"))]
    raise AssertionError(f"no section '{title_start}'")


def test_cache_benchmarks_tiny_run(tmp_path: Path) -> None:
    out_file = tmp_path / "results.md"
    proc, report = run_benchmarks(
        "--only", "proxy", "--only", "figures", "--runs", "1", "--duration", "1", "--warmup", "0",
        "--max-rounds", "1", "--object-size", "4M", "--huge-size", "4M", "--rss-seconds", "1",
        "--rss-connections", "100", "--reader-pause-ms", "20", "--conns", "100", "--conns-seconds", "1",
        "--out", str(out_file), timeout=110,
    )  # fmt: skip
    assert proc.returncode == 0, report
    out = proc.stdout
    assert "WRONG" not in proc.stderr, report

    # w1..w4: a numeric ratio per target, rangeproxy's multipart verified.
    for title in ("w1:", "w2:", "w3:", "w4:"):
        rows = _section(out, title)
        labels = [r.split("|")[1].strip() for r in rows]
        assert "rangeproxy" in labels and "nginx slice cache" in labels, (title, rows)
        if title != "w4:":  # the aiohttp floor answers single ranges and whole objects
            assert "aiohttp from memory (floor)" in labels, (title, rows)
        for r in rows:
            assert re.search(r"\| \d+\.\d\d \(\d+\.\d\d–\d+\.\d\d\) \|", r), (title, r)
    assert "rangeproxy: yes: 206 multipart/byteranges, 3 parts verified" in out, report
    assert "nginx slice cache: no: 200 with the whole object" in out, report

    # Cold runs, collapsing and read-ahead: every answer's bytes checked.
    for title in ("w5:", "w5b:", "collapsing:", "read-ahead:"):
        rows = _section(out, title)
        assert rows, title
        for r in rows:
            assert r.rstrip().endswith("| yes |"), (title, r)
    w5 = {r.split("|")[1].strip(): r for r in _section(out, "w5:")}
    assert "| 1.0000 (1.0000–1.0000) |" in w5["rangeproxy"], w5

    many = _section(out, "many connections:")
    assert [r.split("|")[1].strip() for r in many] == ["rangeproxy", "nginx slice cache"], many
    assert "Target (every round): no request slower than 1 s" in out, report

    rss = _section(out, "RSS:")
    assert len(rss) == 2 and all(r.rstrip().endswith("| yes |") for r in rss), rss
    targets = _section(out, "targets (issues 6 and 12)")
    assert len(targets) >= 9, targets
    assert "aiohttp floor" in next(r for r in targets if "w1 random 64 KiB" in r), targets
    assert any("connections of warm 64 KiB hits" in r for r in targets), targets

    figures = _section(out, "figures for issue 3")
    assert any("1.0000x the object" in r for r in figures), figures
    assert sum("RSS growth" in r for r in figures) == 5, figures

    written = out_file.read_text()
    assert written.startswith("## ") and "### targets (issues 6 and 12)" in written and "### figures for issue 3" in written


def test_focused_benchmarks_tiny_run(tmp_path: Path) -> None:
    """``--only rss --only collapsing --only cold --only many-connections``: each prints its table,
    bytes verified."""
    proc, report = run_benchmarks(
        "--only", "rss", "--only", "collapsing", "--only", "cold", "--only", "many-connections", "--runs", "1",
        "--max-rounds", "1", "--object-size", "4M", "--rss-seconds", "1", "--rss-connections", "100",
        "--conns", "100", "--conns-seconds", "1", timeout=110,
    )  # fmt: skip
    assert proc.returncode == 0, report
    assert "WRONG" not in proc.stderr, report
    out = proc.stdout
    rss = _section(out, "RSS:")
    assert [r.split("|")[1].strip() for r in rss] == ["rangeproxy", "nginx slice cache"], rss
    assert all(r.rstrip().endswith("| yes |") for r in rss), rss
    for title in ("collapsing:", "w5:", "w5b:"):
        rows = _section(out, title)
        assert len(rows) == 2, (title, rows)
        assert all(r.rstrip().endswith("| yes |") for r in rows), (title, rows)
    many = _section(out, "many connections:")
    assert [r.split("|")[1].strip() for r in many] == ["rangeproxy", "nginx slice cache"], many


def test_catalogue_and_eviction_benchmarks_tiny_run() -> None:
    """``--only catalogue --only eviction`` on tiny stores: each prints its table, with the
    aiohttp floor beside the proxy and the volume within cache_size after eviction."""
    proc, report = run_benchmarks(
        "--only", "catalogue", "--only", "eviction", "--catalogue-sizes", "200,400", "--eviction-objects", "6000",
        "--runs", "1", "--duration", "1", "--warmup", "0", "--max-rounds", "1", timeout=110,
    )  # fmt: skip
    assert proc.returncode == 0, report
    out = proc.stdout
    cat = {r.split("|")[1].strip(): r for r in _section(out, "Hits against the size of the catalogue")}
    assert {"rangeproxy, 200 objects", "rangeproxy, 400 objects", "aiohttp from memory (floor)"} <= cat.keys(), cat
    assert re.search(r"\| \d[\d,]* \|", cat["rangeproxy, 400 objects"]), cat
    ev = {r.split("|")[1].strip(): r for r in _section(out, "Eviction under a full cache")}
    assert {"hits only", "hits + writes forcing eviction"} <= ev.keys(), ev
    assert "(within cache_size)" in out, report
    assert ev["hits + writes forcing eviction"].rstrip().endswith("| 0 |"), ev  # no writer errors
