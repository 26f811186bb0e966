"""The collector tuning of a proxy process (``proxy.workers.collector``), in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import gc
import weakref
from proxy.workers.collector import OLDER_THRESHOLD, YOUNG_THRESHOLD, refreeze, tune_collector

class Cycle:
    def __init__(self):
        self.me = self

tune_collector()
assert gc.get_threshold() == (YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD), gc.get_threshold()
frozen = gc.get_freeze_count()
assert frozen > 1000, frozen  # what the imports made
c = Cycle()
gone = weakref.ref(c)
gc.freeze()  # as a start-up object would be
del c
gc.collect()
assert gone() is not None  # frozen: never collected
refreeze()  # the frozen cycle that became garbage is collected now
assert gone() is None and gc.get_freeze_count() > 1000
print("ok")
"""


def test_start_up_objects_are_frozen_and_young_collections_spaced_out() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60,
                         check=False, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
