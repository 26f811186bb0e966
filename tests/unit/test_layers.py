"""The package's layers: each folder imports only from the layers below it (read with ``ast``, nothing imported).

Every ``import`` and ``from ... import`` of every module under ``proxy/`` and ``appserver/`` counts,
wherever it stands (module level, in a function, under ``if TYPE_CHECKING``).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("proxy", "appserver")


@dataclass(frozen=True)
class Rule:
    """What the modules under ``layer`` may import.

    ``allowed``: the project modules (with everything below them) they may import; ``None`` means
    any. ``stdlib_only``: nothing from outside the project but the standard library. ``forbidden``:
    third-party modules (with everything below them) they must not import. ``exact``: the rule is
    for the module ``layer`` alone, not the modules below it.
    """

    layer: str
    allowed: tuple[str, ...] | None
    says: str
    stdlib_only: bool = False
    forbidden: tuple[str, ...] = ()
    exact: bool = False

    def covers(self, module: str) -> bool:
        return module == self.layer if self.exact else _under(module, self.layer)


# Most specific layer first: a module follows the first rule whose layer contains it.
RULES = (
    Rule("proxy.http", ("proxy.http",), "proxy.http is pure: the standard library and proxy.http only",
         stdlib_only=True),
    Rule("proxy.core", ("proxy.http", "proxy.core"),
         "proxy.core is pure: the standard library, proxy.http and proxy.core only", stdlib_only=True),
    Rule("proxy.cache", ("proxy.http", "proxy.core", "proxy.cache"),
         "proxy.cache may import proxy.http, proxy.core and proxy.cache, and not aiohttp's server "
         "(aiohttp.web*; its client is fine)", forbidden=("aiohttp.web",)),
    Rule("proxy.observe", ("proxy.http", "proxy.core", "proxy.observe"),
         "proxy.observe may import proxy.http, proxy.core and proxy.observe (it sees the engine "
         "through a Protocol)"),
    Rule("proxy.workers", ("proxy.http", "proxy.core", "proxy.observe", "proxy.workers", "proxy.cache"),
         "proxy.workers may import proxy.http, proxy.core, proxy.observe, proxy.workers and proxy.cache"),
    Rule("proxy.web", ("proxy.http", "proxy.core", "proxy.cache", "proxy.observe", "proxy.workers", "proxy.web"),
         "proxy.web may import anything under proxy but the wiring (proxy.app, proxy.__main__)"),
    Rule("proxy.app", None, "proxy.app is the wiring: anything"),
    Rule("proxy.__main__", None, "proxy.__main__ is the wiring: anything"),
    # Importing any proxy.* module runs proxy/__init__.py first: it must stay as pure as proxy.http.
    Rule("proxy", (), "the proxy package itself: the standard library only", stdlib_only=True, exact=True),
    Rule("appserver", ("appserver", "proxy.http", "proxy.web.sendfile"),
         "appserver may import appserver, proxy.http and proxy.web.sendfile only"),
)

# Edges that break a rule today and are being removed: (importer, imported module).
KNOWN_EXCEPTIONS: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module, absolute
    line: int


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name (a package by its own name)."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(module: str, path: Path) -> list[Import]:
    """Each module ``module`` imports, ``from X import Y`` as ``X.Y`` when that is a project module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(Import(module, alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                out.append(Import(module, sub if sub in MODULES else source, node.lineno))
    return out


IMPORTS = [imp for module, path in MODULES.items() for imp in _imports(module, path)]


def rule_for(module: str) -> Rule | None:
    return next((r for r in RULES if r.covers(module)), None)


def _is_project(target: str) -> bool:
    return any(_under(target, p) for p in PACKAGES)


def violation(imp: Import) -> str | None:
    """Why ``imp`` breaks its module's rule, or None when it does not."""
    rule = rule_for(imp.module)
    assert rule is not None, imp.module
    if _is_project(imp.target):
        if imp.target == "proxy" or rule.allowed is None or any(_under(imp.target, a) for a in rule.allowed):
            return None
    elif rule.stdlib_only:
        if imp.target.partition(".")[0] in sys.stdlib_module_names:
            return None
    elif not any(_under(imp.target, f) or imp.target.startswith(f + "_") for f in rule.forbidden):
        return None
    return f"{imp.module} imports {imp.target} (line {imp.line}): {rule.says}"


def test_every_module_has_a_layer() -> None:
    assert {"proxy.http.ranges", "proxy.core.settings", "proxy.web.sendfile", "appserver.app"} <= MODULES.keys()
    assert [m for m in MODULES if rule_for(m) is None] == []
    assert rule_for("proxy.newfolder.mod") is None  # a new folder needs its own rule


def test_imports_follow_the_layers() -> None:
    broken = [msg for imp in IMPORTS if (msg := violation(imp)) and (imp.module, imp.target) not in KNOWN_EXCEPTIONS]
    assert broken == [], "\n" + "\n".join(broken)


def test_known_exceptions_still_exist() -> None:
    """A known exception that is gone (or no longer breaks a rule) is taken off the list."""
    edges = {(imp.module, imp.target) for imp in IMPORTS if violation(imp)}
    assert sorted(KNOWN_EXCEPTIONS - edges) == []


# --- the checker itself -------------------------------------------------------------------------


@pytest.mark.parametrize(("module", "target", "broken"), [
    ("proxy.http.ranges", "proxy.http.dates", False),
    ("proxy.http.ranges", "re", False),
    ("proxy.http.ranges", "proxy.core.slices", True),
    ("proxy.http.ranges", "aiohttp", True),
    ("proxy.core.slices", "proxy.http.ranges", False),
    ("proxy.core.slices", "proxy.cache.store", True),
    ("proxy.core.settings", "diskcache", True),
    ("proxy.cache.store", "diskcache", False),
    ("proxy.cache.upstream", "aiohttp", False),
    ("proxy.cache.upstream", "aiohttp.client_exceptions", False),
    ("proxy.cache.upstream", "aiohttp.web", True),
    ("proxy.cache.upstream", "aiohttp.web_request", True),
    ("proxy.cache.engine", "proxy.workers.claims", True),
    ("proxy.cache.engine", "proxy.observe.metrics", True),
    ("proxy.observe.stats", "proxy.core.counters", False),
    ("proxy.observe.stats", "proxy.cache.engine", True),
    ("proxy.workers.peers", "proxy.cache.store", False),
    ("proxy.workers.peers", "proxy.web.admin", True),
    ("proxy.web.admin", "proxy.workers.peers", False),
    ("proxy.web.admin", "proxy.app", True),
    ("proxy.web.handlers", "proxy.__main__", True),
    ("proxy.app", "proxy.web.handlers", False),
    ("proxy.__main__", "proxy.app", False),
    ("proxy", "proxy.http.ranges", True),
    ("appserver.app", "proxy.http.ranges", False),
    ("appserver.runner_aiohttp", "proxy.web.sendfile", False),
    ("appserver.runner_aiohttp", "proxy.web.handlers", True),
    ("appserver.app", "proxy.core.settings", True),
    ("appserver.runner_aiohttp", "aiohttp.web", False),
])
def test_the_rules(module: str, target: str, broken: bool) -> None:
    msg = violation(Import(module, target, 1))
    assert (msg is not None) is broken
    if msg is not None:  # names the module, the import and the rule
        rule = rule_for(module)
        assert rule is not None and msg.startswith(f"{module} imports {target} (line 1): ") and rule.says in msg


def test_imports_are_read_everywhere(tmp_path: Path) -> None:
    """Function-level and relative imports count; ``from package import module`` names the module."""
    src = tmp_path / "m.py"
    src.write_text(
        "import os.path\n"
        "from proxy.http import ranges, Span\n"
        "def f():\n"
        "    from .config import parse_args\n"
        "    import aiohttp.web\n"
    )
    found = {(i.target, i.line) for i in _imports("appserver.cli", src)}
    assert found == {("os.path", 1), ("proxy.http.ranges", 2), ("proxy.http", 2), ("appserver.config", 4),
                     ("aiohttp.web", 5)}
