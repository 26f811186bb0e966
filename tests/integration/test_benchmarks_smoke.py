"""Smoke test of the benchmark harness: a tiny run of every origin target.

Runs ``python -m benchmarks`` as a subprocess on a 1 MiB file for one round of
one second and checks that it printed the summary table with a numeric ratio
to nginx for each target. Needs wrk, nginx and taskset (skipped when missing,
failed under CI=true, via ``require_tool``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import REPO_ROOT
from tests.support.tools import require_benchmark_tools

TARGET_LABELS = [
    "appserver aiohttp (pathsend → sendfile)",
    "appserver granian (streaming)",
    "nginx (sendfile)",
]
RATIO = re.compile(r"\|\s*(\d+\.\d\d) \((\d+\.\d\d)–(\d+\.\d\d)\)\s*\|")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_benchmark_harness_quick_run(tmp_path: Path) -> None:
    require_benchmark_tools()
    out_file = tmp_path / "results.md"
    cmd = [
        sys.executable, "-m", "benchmarks", "--quick", "--runs", "1", "--duration", "1",
        "--warmup", "0", "--max-rounds", "1", "--file-size", "1M", "--range-size", "256K",
        "--out", str(out_file),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=75, check=False)
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
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
