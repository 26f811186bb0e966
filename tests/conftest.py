"""Suite-wide settings: the Hypothesis profiles and how large byte strings compare.

Helpers live in ``tests/support/`` (``require_tool`` in ``tests.support.tools``).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Property tests check correctness, not speed: on a loaded CI machine a
# 3 KiB example can exceed Hypothesis' 200 ms default deadline and fail
# as "flaky" although every assertion held. print_blob makes any real
# failure reproducible with @reproduce_failure.
settings.register_profile(
    "rangeproxy",
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# HYPOTHESIS_PROFILE=thorough runs many more examples when hunting bugs.
settings.register_profile("thorough", parent=settings.get_profile("rangeproxy"), max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "rangeproxy"))


def pytest_assertrepr_compare(op: str, left: object, right: object) -> list[str] | None:
    """Large byte strings compare as lengths, first difference and digests.

    Under CI=true pytest prints whole diffs, and a diff of two megabytes of
    random bytes buries the failing test's name and the one fact that matters.
    """
    if op != "==" or not isinstance(left, (bytes, bytearray)) or not isinstance(right, (bytes, bytearray)):
        return None
    if max(len(left), len(right)) <= 256:
        return None
    import hashlib

    first = next((i for i, (a, b) in enumerate(zip(left, right)) if a != b), min(len(left), len(right)))
    return [
        f"{len(left)} bytes == {len(right)} bytes: they differ from offset {first}",
        f"left  [{first}:{first + 16}] = {bytes(left[first:first + 16])!r}",
        f"right [{first}:{first + 16}] = {bytes(right[first:first + 16])!r}",
        f"sha256 left {hashlib.sha256(left).hexdigest()[:16]}, right {hashlib.sha256(right).hexdigest()[:16]}",
    ]
