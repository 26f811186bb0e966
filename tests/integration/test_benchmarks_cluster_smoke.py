"""Smoke test of the ``cluster`` benchmark: ``python -m benchmarks --only cluster`` with 1 and 2
nodes behind HAProxy, six 64 KiB objects, one run of one second each. Checks that the table is
printed with a row per fleet size, numeric MB/s and req/s, the ratio to 1 node (1.00 for 1 node)
and the CPU split; no speed is asserted. Needs wrk, nginx, taskset and haproxy (skipped when
missing, failed under CI=true, via ``require_tool``)."""

from __future__ import annotations

import re

import pytest

from tests.support.tools import require_tool, run_benchmarks

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(150)]

ROW = re.compile(r"^\| (\d) \| ([\d,.]+) \([^)]*\) \| ([\d,]+) \([^)]*\) \| (\d+\.\d\d) \| (\d+\.\d\d) \| "
                 r"([\d. /]+) \| (\d+\.\d\d) \| (\d+\.\d\d) \|", re.M)


def test_cluster_benchmark_tiny_run() -> None:
    require_tool("haproxy", package="haproxy")
    proc, report = run_benchmarks(
        "--only", "cluster", "--cluster-nodes", "1", "2", "--cluster-objects", "6", "--cluster-object-size", "64K",
        "--runs", "1", "--duration", "1", "--warmup", "0", timeout=130,
    )  # fmt: skip
    assert proc.returncode == 0, report
    assert "### cluster: hit throughput of 1, 2 node(s) behind HAProxy" in proc.stdout, report
    rows = {int(m.group(1)): m for m in ROW.finditer(proc.stdout)}
    assert sorted(rows) == [1, 2], report
    assert rows[1].group(4) == "1.00", report
    for n, m in rows.items():
        assert float(m.group(2).replace(",", "")) > 0 and int(m.group(3).replace(",", "")) > 0, report
        assert len(m.group(6).split(" / ")) == n, report  # one CPU figure per node
        assert float(m.group(5)) > 0, report  # HAProxy did the fronting
