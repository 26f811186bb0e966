"""External commands a test needs (curl, ffmpeg, nginx, wrk, ...): ``require_tool``
(``require_package_file`` for a Debian package without a command, e.g. pdf.js);
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
from pathlib import Path

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


def package_file(package: str, suffix: str) -> Path | None:
    """The first file installed by Debian package ``package`` whose path ends with
    ``suffix`` (from ``dpkg -L``), or None (package not installed, no dpkg)."""
    dpkg = shutil.which("dpkg")
    if dpkg is None:
        return None
    out = subprocess.run([dpkg, "-L", package], capture_output=True, text=True, check=False, timeout=30)
    if out.returncode != 0:
        return None
    for line in out.stdout.splitlines():
        if line.endswith(suffix) and Path(line).is_file():
            return Path(line)
    return None


def require_package_file(package: str, suffix: str) -> Path:
    """Like :func:`require_tool`, for a Debian package without a command (e.g. ``libjs-pdf``):
    the path of its installed file ending with ``suffix``; installed first under CI=true
    as root, else the test is skipped (a failure under CI=true)."""
    path = package_file(package, suffix)
    if path is not None:
        return path
    if os.environ.get("CI") == "true" and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
                       env=env, check=False, timeout=600)
        path = package_file(package, suffix)
        if path is not None:
            return path
    reason = f"Debian package {package!r} is not installed (run `make system-deps`)"
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


PROMTOOL = REPO_ROOT / "build" / "tools" / "prometheus" / "usr" / "bin" / "promtool"


def require_promtool() -> str:
    """Prometheus's ``promtool``: on PATH, or the binary ``make system-deps`` takes out of Debian's
    prometheus package into build/tools/ (no server installed). Missing: skip, or fail under CI=true."""
    path = find_tool("promtool") or (str(PROMTOOL) if os.access(PROMTOOL, os.X_OK) else None)
    if path is not None:
        return path
    reason = "promtool is not installed (run `make system-deps`: it fetches it into build/tools/prometheus/)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; under CI=true missing tools are failures", pytrace=False)
    pytest.skip(reason)
