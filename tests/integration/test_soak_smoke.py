"""A short soak (hardening.soak): 20 clients for 5 s over 10 objects, changes every 2 s, faults
injected; it must pass its own criteria (0 wrong bytes, every 5xx matched to a fault, RSS, fds)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.servers import REPO_ROOT, subprocess_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_short_soak_passes() -> None:
    args = [sys.executable, "-m", "hardening.soak", "--clients", "20", "--seconds", "5", "--objects", "10",
            "--change-every", "2", "--seed", "13"]
    done = subprocess.run(args, cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "PASS" in done.stdout, done.stdout + done.stderr[-3000:]
    assert "wrong bytes: 0;" in done.stdout and " 0 object changes" not in done.stdout, done.stdout
