"""The pure core must stay pure: importing it loads no I/O framework."""

from __future__ import annotations

import json
import subprocess
import sys

PURE_MODULES = ["proxy.http.ranges", "proxy.http.dates", "proxy.core.settings", "proxy.core.representation", "proxy.core.slices", "proxy.core.counters"]
FORBIDDEN = ["aiohttp", "diskcache", "asyncio", "uvloop", "socket"]


def test_pure_modules_load_no_io_framework() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for m in {PURE_MODULES!r}: importlib.import_module(m)\n"
        f"print(json.dumps([m for m in {FORBIDDEN!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert json.loads(out) == []
