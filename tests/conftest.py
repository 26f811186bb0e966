"""Shared test helpers.

``require_tool(name)`` -- use from a test (``from conftest import require_tool``)
when the test needs an external command (ffmpeg, nginx, curl, aria2c, ...).
Locally a missing tool skips the test with the reason; under CI=true it
fails it instead, so CI cannot go green by silently skipping.
`make system-deps` installs the tools.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str) -> str:
    """Return the path of command ``name``; skip (or fail under CI=true) if missing."""
    path = shutil.which(name)
    if path is None:
        # nginx is installed in /usr/sbin, which a non-root PATH may lack.
        for d in ("/usr/sbin", "/sbin"):
            if os.access(os.path.join(d, name), os.X_OK):
                return os.path.join(d, name)
        reason = f"{name!r} is not installed (run `make system-deps`)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; under CI=true missing tools are failures", pytrace=False)
        pytest.skip(reason)
    return path
