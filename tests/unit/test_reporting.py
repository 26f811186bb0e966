"""The suite's own reporting (tests/conftest.py): a failure pytest cannot render still names its test."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

FAILING = '''
import sys, types

def _no_line_offset(code):
    for start, _end, line in code.co_lines():
        if line is None:
            return start
    raise AssertionError("every instruction has a line")

def test_entry_without_a_line():
    try:
        raise AssertionError("the real failure")
    except AssertionError as e:
        frame = sys._getframe()
        entry = types.TracebackType(None, frame, _no_line_offset(frame.f_code), -1)
        assert entry.tb_lineno is None
        e.__traceback__.tb_next = entry
        raise

def test_after_it():
    pass
'''


def test_a_traceback_entry_without_a_line_number_is_reported_not_an_internal_error(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_it=FAILING)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out, out[-3000:]
    result.assert_outcomes(failed=1, passed=1)
    assert "FAILED test_it.py::test_entry_without_a_line - AssertionError: the real failure" in out, out[-3000:]


LARGE = '''
import os

def test_large_bodies_differ():
    assert b"a" + os.urandom(199_999) == b"b" + os.urandom(199_999)
'''


def test_large_byte_strings_are_explained_briefly_under_ci(pytester: pytest.Pytester,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Under CI=true pytest's own diff of two different 200 KB bodies takes minutes (past the timeout)."""
    monkeypatch.setenv("CI", "true")
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_it=LARGE)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "-o", "timeout=60")
    out = result.stdout.str()
    result.assert_outcomes(failed=1)
    assert "200000 bytes == 200000 bytes: they differ from offset 0" in out, out[-3000:]
    assert "Full diff" not in out and "Timeout" not in out, out[-3000:]
