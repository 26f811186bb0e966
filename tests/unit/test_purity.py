"""The pure layers must stay pure: importing every module of proxy.http and proxy.core loads no I/O framework."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import proxy.core
import proxy.http

PURE_PACKAGES = (proxy.http, proxy.core)
FORBIDDEN = ["aiohttp", "diskcache", "asyncio", "uvloop", "socket"]


def pure_modules() -> list[str]:
    """proxy.http, proxy.core and every module below them, found on disk (none listed by hand)."""
    out: list[str] = []
    for package in PURE_PACKAGES:
        out.append(package.__name__)
        out.extend(m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + "."))
    return sorted(out)


def test_the_pure_modules_are_found() -> None:
    assert {"proxy.http.ranges", "proxy.http.dates", "proxy.core.settings", "proxy.core.counters"} <= set(pure_modules())


def test_pure_modules_load_no_io_framework() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for m in {pure_modules()!r}: importlib.import_module(m)\n"
        f"print(json.dumps([m for m in {FORBIDDEN!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert json.loads(out) == []
