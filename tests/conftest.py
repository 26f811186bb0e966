"""Suite-wide settings: the Hypothesis profiles and how large byte strings compare.

Helpers live in ``tests/support/`` (``require_tool`` in ``tests.support.tools``).
"""

from __future__ import annotations

import os
import traceback
from typing import Any, Generator, Iterator

import pytest
from _pytest.reports import TestReport
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


def _large_bytes(op: str, left: object, right: object) -> bool:
    return (op == "==" and isinstance(left, (bytes, bytearray)) and isinstance(right, (bytes, bytearray))
            and max(len(left), len(right)) > 256)


def pytest_assertrepr_compare(op: str, left: object, right: object) -> list[str] | None:
    """Large byte strings compare as lengths, first difference and digests.

    A diff of two megabytes of random bytes buries the failing test's name and the one fact that
    matters, and takes longer than the test's timeout to compute (see :func:`pytest_configure`).
    """
    if not _large_bytes(op, left, right):
        return None
    assert isinstance(left, (bytes, bytearray)) and isinstance(right, (bytes, bytearray))
    import hashlib

    first = next((i for i, (a, b) in enumerate(zip(left, right)) if a != b), min(len(left), len(right)))
    return [
        f"{len(left)} bytes == {len(right)} bytes: they differ from offset {first}",
        f"left  [{first}:{first + 16}] = {bytes(left[first:first + 16])!r}",
        f"right [{first}:{first + 16}] = {bytes(right[first:first + 16])!r}",
        f"sha256 left {hashlib.sha256(left).hexdigest()[:16]}, right {hashlib.sha256(right).hexdigest()[:16]}",
    ]


def pytest_configure(config: pytest.Config) -> None:
    """pytest's own explanation is skipped for large byte strings: the one above stands for it.

    Every ``pytest_assertrepr_compare`` runs, not just the first to answer, and under CI=true
    pytest's own one neither truncates nor stops early: its difflib diff of two 200 KB bodies ran
    past the 300 s timeout, and the failing assertion never got reported.
    """
    from _pytest.assertion import util

    full = util.assertrepr_compare

    def assertrepr_compare(op: str, left: object, right: object, **kw: Any) -> Iterator[str]:
        if _large_bytes(op, left, right):
            return iter(())
        return full(op, left, right, **kw)

    util.assertrepr_compare = assertrepr_compare  # type: ignore[assignment]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, TestReport, TestReport]:
    """A failure whose traceback pytest cannot render is still reported, with the stdlib's traceback.

    On CPython 3.11 a traceback entry can have no line number (``tb_lineno`` is None, e.g. where
    pytest-timeout's signal lands on an instruction without a location); pytest 9.2 computes
    ``tb_lineno - 1`` for it and the whole run ends in an INTERNALERROR that names no test.
    """
    try:
        return (yield)
    except TypeError:
        if call.excinfo is None:
            raise
        value = call.excinfo.value
        text = "".join(traceback.format_exception_only(value) + ["\n"] + traceback.format_exception(value))
        sections = [(f"Captured {key} {when}", content) for when, key, content in item._report_sections]
        return TestReport(item.nodeid, item.location, dict.fromkeys(item.keywords, 1), "failed", text, call.when,
                          sections, call.duration, call.start, call.stop, item.user_properties)
