"""Smoke test of the benchmark harness: a tiny run of every origin target.

Runs ``python -m benchmarks`` as a subprocess on a 1 MiB file for one round of
one second and checks that it printed the summary table with a numeric ratio
to nginx for each target. Needs wrk, nginx and taskset (skipped when missing,
failed under CI=true, via ``require_tool``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.tools import run_benchmarks

TARGET_LABELS = [
    "appserver aiohttp (pathsend → sendfile)",
    "appserver granian (streaming)",
    "nginx (sendfile)",
]
RATIO = re.compile(r"\|\s*(\d+\.\d\d) \((\d+\.\d\d)–(\d+\.\d\d)\)\s*\|")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_benchmark_harness_quick_run(tmp_path: Path) -> None:
    out_file = tmp_path / "results.md"
    proc, report = run_benchmarks(
        "--runs", "1", "--duration", "1", "--warmup", "0", "--max-rounds", "1", "--file-size", "1M",
        "--range-size", "256K", "--only", "origin", "--out", str(out_file), timeout=75,
    )  # fmt: skip
    assert proc.returncode == 0, report
    assert "| target | req/s | MB/s |" in proc.stdout, report
    for label in TARGET_LABELS:
        rows = [ln for ln in proc.stdout.splitlines() if ln.startswith(f"| {label} |")]
        assert len(rows) == 1, f"no row for {label}\n{report}"
        m = RATIO.search(rows[0])
        assert m, f"no numeric ratio for {label}: {rows[0]}"
        assert float(m.group(1)) > 0
        # One round: counted, or (on a busy machine) reported with a warning.
        assert rows[0].rstrip().endswith("| 1/1 |"), rows[0]
    nginx_row = next(ln for ln in proc.stdout.splitlines() if ln.startswith("| nginx (sendfile) |"))
    assert "1.00 (1.00–1.00)" in nginx_row
    written = out_file.read_text()
    assert written.startswith("## "), written[:200]
    for key in ("uname -srm", "CPU", "nproc", "Python", "aiohttp", "granian", "uvloop", "nginx"):
        assert f"- {key}: " in written, key
