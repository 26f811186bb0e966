"""A short run of the fuzzer (``python -m hardening.fuzz``, issue 13) as part of ``make test``.

The same harness as ``make fuzz`` with a fixed seed (the same inputs every run) and a few
thousand inputs. Its checks hold whatever the timing as long as the proxy is right: bytes and
Content-Range against the data, every 5xx / cut / dropped answer against the faults the origin
logged, no hang within a generous timeout, the proxy alive and healthy. The RSS check is left
to the full run: a few seconds of traffic say nothing about growth, and RSS is noisy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hardening.fuzz import FuzzConfig, run
from hardening.origin import FAULT_KINDS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 20261201
# Known proxy bugs the fuzz found, counted instead of failing until they are fixed (see
# hardening.checks.KNOWN_BUGS and README "Fuzzing"); drop a name here once its fix is merged.
KNOWN = frozenset({"pooled-reset"})


def test_a_short_fuzz_run_finds_no_wrong_byte_unexplained_5xx_hang_or_crash(tmp_path: Path) -> None:
    # Without reset_after: an origin reset after a whole answer can hit the next request on that
    # pooled connection, for any object, whenever the timing lets it (pooled-reset above, and a
    # non-idempotent request is not sent again): the full run counts those, this one stays exact.
    kinds = tuple(k for k in FAULT_KINDS if k != "reset_after")
    cfg = FuzzConfig(inputs=3000, seed=SEED, timeout=30.0, tolerate=KNOWN, rss_check=False, fault_kinds=kinds)
    report = run(cfg, tmp_path)
    assert report.judge is not None
    assert report.failures == 0, "\n".join(report.lines(show=5))
    assert report.inputs >= cfg.inputs
    assert report.judge.bytes_checked > 1_000_000  # answers were compared with the data, not just counted
    assert report.judge.statuses["2xx"] > 100 and report.judge.statuses["4xx"] > 100
    assert report.fault_switches > 0  # the origin was told to misbehave (the schedule follows the seed)
