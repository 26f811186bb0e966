"""External commands a test needs (curl, ffmpeg, nginx, wrk, ...): ``require_tool``;
and the benchmark harness run as one (``run_benchmarks``).

A missing tool is installed where that is possible (its Debian package named,
CI=true, root, apt-get), else the test is skipped with the reason; under CI=true
that skip is a failure instead, so CI cannot go green by silently skipping.
``make system-deps`` installs the tools.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from benchmarks.harness import REPO_ROOT, BenchError, ensure_tool, find_tool


def require_tool(name: str, package: str | None = None) -> str:
    """Return the path of command ``name`` (also found in /usr/sbin and /sbin, where nginx lives).

    When it is missing and ``package`` names its Debian package, it is installed
    first under CI=true when running as root with apt-get (as the benchmark
    harness does for itself). Still missing: skip the test, or fail it under CI=true.
    """
    path = find_tool(name)
    if path is not None:
        return path
    if package is not None and os.environ.get("CI") == "true" and os.geteuid() == 0 and shutil.which("apt-get"):
        try:
            return ensure_tool(name, package)
        except BenchError:
            pass  # reported below
    reason = f"{name!r} is not installed (run `make system-deps`)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; under CI=true missing tools are failures", pytrace=False)
    pytest.skip(reason)


def require_benchmark_tools() -> None:
    """What ``python -m benchmarks`` needs: wrk (not in every Debian base image, so
    installed under CI), nginx and taskset."""
    require_tool("wrk", package="wrk")
    require_tool("nginx")
    require_tool("taskset")


def run_benchmarks(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], str]:
    """``python -m benchmarks --quick *args`` from the repo root, once its tools are there
    (:func:`require_benchmark_tools`); the finished process and its output as a report
    for assertion messages."""
    require_benchmark_tools()
    cmd = [sys.executable, "-m", "benchmarks", "--quick", *args]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    return proc, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
