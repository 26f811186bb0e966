"""The code stays readable: no class in proxy/ over 400 lines, no function with more than 7 parameters."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROXY = Path(__file__).resolve().parents[2] / "proxy"
MAX_CLASS_LINES = 400
MAX_PARAMS = 7  # besides self / cls: more travel together as one object (a Reply, a ResponseRead)


def _modules() -> list[Path]:
    return sorted(PROXY.rglob("*.py"))


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = fn.args
    names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    return names[1:] if names and names[0] in ("self", "cls") else names


def test_the_scan_sees_the_package() -> None:
    names = {p.relative_to(PROXY).as_posix() for p in _modules()}
    assert {"cache/engine.py", "web/handlers.py", "core/slices.py"} <= names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(PROXY).as_posix())
def test_classes_are_small_and_parameter_lists_short(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_CLASS_LINES:
                problems.append(f"class {node.name} (line {node.lineno}) has {lines} lines > {MAX_CLASS_LINES}")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = len(_params(node))
            if n > MAX_PARAMS:
                problems.append(f"{node.name}() (line {node.lineno}) takes {n} parameters > {MAX_PARAMS}")
    assert not problems, f"{path.relative_to(PROXY)}: " + "; ".join(problems)
