"""The public HTTP caching test suite (npm ``http-cache-tests``, the suite behind
cache-tests.fyi) run against the proxy, classified as cache-tests.fyi does.

``python -m conformance.cache_tests [--json] [--set KEY=VALUE ...]`` (``make cache-tests``):

1. installs ``http-cache-tests@0.4.5`` with npm into ``.cache-tests/`` (git-ignored; kept
   between runs, reinstalled when the version differs);
2. starts the suite's origin, ``node server/server.mjs``, on a free loopback port
   (``conformance/loopback.mjs`` is preloaded to bind it to 127.0.0.1, since the server
   itself listens on every interface);
3. starts the proxy, ``python -m proxy``, in front of it (temporary cache directory,
   free loopback port, the proxy's defaults plus any ``--set``);
4. runs the suite's CLI (``cli.mjs``, every test a shared cache is given: ``tests/index.mjs``
   and surrogate-control, as cache-tests.fyi runs reverse proxies) through the proxy;
5. stops both (by PID) and prints the figures.

Each test has a ``kind``: ``required`` (a failure is a conformance problem), ``optimal``
(a failure only means a stored response was not reused) or ``check`` (information:
yes / no). As on cache-tests.fyi (``lib/display.mjs``), a test whose ``depends_on`` tests
did not pass is a dependency failure, a ``Setup`` error is a setup failure (``retry`` when
the origin saw one client request twice), and otherwise it passes or fails. "Passing" is
the required and optimal tests that pass, "failing required" the required tests that fail;
the same count over the suite's bundled results reproduces the published figures.

Exit status: 0 after a run, 2 on bad arguments, 3 when the suite cannot be installed
(npm missing or no registry), 1 when it cannot be run.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

PACKAGE = "http-cache-tests"
VERSION = "0.4.5"
REPO_ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
DEFAULT_DIR = REPO_ROOT / ".cache-tests"

# cache-tests.fyi's published figures for the reverse proxies and CDNs it runs:
# (passing, failing required).  The suite's bundled results/*.json give the same counts.
PUBLISHED: dict[str, tuple[int, int]] = {
    "Apache httpd": (178, 27),
    "Traffic Server": (174, 34),
    "Squid": (171, 22),
    "Varnish": (147, 33),
    "nginx": (144, 45),
    "Fastly": (137, 53),
}
BUNDLED_RESULTS = {
    "Apache httpd": "apache.json", "Traffic Server": "trafficserver.json", "Squid": "squid.json",
    "Varnish": "varnish.json", "nginx": "nginx.json", "Fastly": "fastly.json",
}

INSTALL_TIMEOUT = 300.0
STARTUP_TIMEOUT = 20.0
RUN_TIMEOUT = 300.0
STOP_TIMEOUT = 15.0

PASS_TYPES = ("pass", "yes")


class InstallError(RuntimeError):
    """The suite cannot be installed (npm missing, registry unreachable)."""


class RunError(RuntimeError):
    """A server did not start or the suite's CLI failed."""


# --- classification (cache-tests.fyi, lib/display.mjs determineTestResult) ------------


@dataclass(frozen=True)
class TestDef:
    suite: str
    id: str
    name: str
    kind: str
    depends_on: tuple[str, ...]
    browser_only: bool


def classify(defs: Mapping[str, TestDef], results: Mapping[str, Any], test_id: str) -> str:
    """One of pass, fail, optional_fail, yes, no, setup_fail, retry, dependency_fail, untested."""
    test = defs[test_id]
    result = results.get(test_id)
    if result is None:
        return "untested"
    for dep in test.depends_on:
        if classify(defs, results, dep) not in PASS_TYPES:
            return "dependency_fail"
    if isinstance(result, list) and result and result[0] == "Setup":
        return "retry" if len(result) > 1 and result[1] == "retry" else "setup_fail"
    ok = result is True
    if test.kind == "optimal":
        return "pass" if ok else "optional_fail"
    if test.kind == "check":
        return "yes" if ok else "no"
    return "pass" if ok else "fail"


@dataclass
class Summary:
    counts: dict[str, int]
    classes: dict[str, str]
    passing: int
    failing_required: int

    def ids(self, *kinds: str) -> list[str]:
        return sorted(i for i, c in self.classes.items() if c in kinds)


def summarize(defs: Mapping[str, TestDef], results: Mapping[str, Any]) -> Summary:
    classes = {tid: classify(defs, results, tid) for tid in defs}
    counts = dict(collections.Counter(classes.values()))
    return Summary(counts=counts, classes=classes, passing=counts.get("pass", 0),
                   failing_required=counts.get("fail", 0))


def reason(result: Any) -> str:
    if result is True:
        return ""
    if isinstance(result, list):
        return ": ".join(str(x) for x in result)
    return str(result)


# --- the suite --------------------------------------------------------------------


def package_dir(base: Path) -> Path:
    return base / "node_modules" / PACKAGE


def install(base: Path, timeout: float = INSTALL_TIMEOUT) -> Path:
    """``npm install http-cache-tests@VERSION`` into ``base`` unless that version is there."""
    pkg = package_dir(base)
    with contextlib.suppress(OSError, ValueError):
        if json.loads((pkg / "package.json").read_text())["version"] == VERSION:
            return pkg
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise InstallError("node and npm are needed (Debian packages nodejs and npm; `make system-deps`)")
    base.mkdir(parents=True, exist_ok=True)
    manifest = base / "package.json"
    if not manifest.exists():  # keeps npm from looking for a project further up
        manifest.write_text(json.dumps({"name": "rangeproxy-cache-tests", "private": True}) + "\n")
    cmd = [npm, "install", "--no-audit", "--no-fund", "--no-save", "--loglevel=error", f"{PACKAGE}@{VERSION}"]
    try:
        proc = subprocess.run(cmd, cwd=base, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise InstallError(f"npm install timed out after {timeout:.0f} s") from exc
    if proc.returncode != 0 or not (pkg / "package.json").exists():
        raise InstallError(f"npm install {PACKAGE}@{VERSION} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return pkg


def load_definitions(pkg: Path, timeout: float = 60.0) -> dict[str, TestDef]:
    proc = subprocess.run(["node", str(HERE / "definitions.mjs"), str(pkg)], capture_output=True,
                          text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RunError(f"cannot read the test definitions: {proc.stderr[-2000:]}")
    defs = {}
    for d in json.loads(proc.stdout):
        defs[d["id"]] = TestDef(suite=d["suite"], id=d["id"], name=d["name"], kind=d["kind"],
                                depends_on=tuple(d["depends_on"]), browser_only=d["browser_only"])
    return defs


def bundled_anchors(pkg: Path, defs: Mapping[str, TestDef]) -> dict[str, tuple[int, int]]:
    """(passing, failing required) of the suite's own results/*.json, counted like ours."""
    out = {}
    for name, file in BUNDLED_RESULTS.items():
        with contextlib.suppress(OSError, ValueError):
            results = json.loads((pkg / "results" / file).read_text())
            known = {k: v for k, v in results.items() if k in defs}
            s = summarize(defs, known)
            out[name] = (s.passing, s.failing_required)
    return out


# --- servers ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    url: str
    _log_file: Any = field(default=None, repr=False)

    def tail(self, n: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        return ""

    def stop(self) -> None:
        """SIGTERM to its PID, SIGKILL after STOP_TIMEOUT."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT)
        if self._log_file is not None:
            self._log_file.close()


def _spawn(name: str, argv: Sequence[str], cwd: Path, env: Mapping[str, str], log: Path, url: str) -> Server:
    f = open(log, "wb")  # noqa: SIM115 - closed in Server.stop()
    proc = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=f,
                            stderr=subprocess.STDOUT)
    return Server(name=name, proc=proc, log=log, url=url, _log_file=f)


def _wait_http(server: Server, path: str, timeout: float = STARTUP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RunError(f"{server.name} exited ({server.proc.returncode}):\n{server.tail()}")
        try:
            with urllib.request.urlopen(server.url + path, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RunError(f"{server.name} did not answer within {timeout:.0f} s:\n{server.tail()}")


def start_origin(pkg: Path, workdir: Path) -> Server:
    """The suite's server/server.mjs on a free loopback port (the node process itself, so its PID stops it)."""
    port = free_port()
    env = dict(os.environ, npm_config_protocol="http", npm_config_port=str(port),
               npm_config_pidfile=str(workdir / "origin.pid"), CACHE_TESTS_HOST="127.0.0.1")
    argv = ["node", "--import", (HERE / "loopback.mjs").as_uri(), "server/server.mjs"]
    server = _spawn("cache-tests origin", argv, pkg, env, workdir / "origin.log", f"http://127.0.0.1:{port}")
    _wait_http(server, "/")
    return server


def start_proxy(upstream: str, workdir: Path, overrides: Sequence[str]) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANGEPROXY_")}
    pp = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + pp if pp else "")
    argv = [sys.executable, "-m", "proxy", "--upstream", upstream, "--host", "127.0.0.1",
            "--port", str(port), "--cache-dir", str(workdir / "cache")]
    for item in overrides:
        argv += ["--set", item]
    server = _spawn("proxy", argv, REPO_ROOT, env, workdir / "proxy.log", f"http://127.0.0.1:{port}")
    _wait_http(server, "/healthz")
    return server


@contextlib.contextmanager
def servers(pkg: Path, workdir: Path, overrides: Sequence[str]) -> Iterator[tuple[Server, Server]]:
    started: list[Server] = []
    try:
        origin = start_origin(pkg, workdir)
        started.append(origin)
        proxy = start_proxy(origin.url, workdir, overrides)
        started.append(proxy)
        yield origin, proxy
    finally:
        for s in reversed(started):
            s.stop()


def run_cli(pkg: Path, base_url: str, test_id: str = "", timeout: float = RUN_TIMEOUT) -> str:
    """The suite's cli.mjs against ``base_url`` (its settings come from npm's config variables)."""
    env = dict(os.environ, npm_package_config_base=base_url, npm_package_config_id=test_id)
    env.pop("npm_config_base", None)
    env.pop("npm_config_id", None)
    try:
        proc = subprocess.run(["node", "--no-warnings", "cli.mjs"], cwd=pkg, env=env, capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RunError(f"the suite's CLI took more than {timeout:.0f} s") from exc
    if proc.returncode != 0 or proc.stderr.strip():
        raise RunError(f"the suite's CLI failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


@contextlib.contextmanager
def workdir(keep: Path | None) -> Iterator[Path]:
    """``keep`` (created, left behind: the servers' logs), else a temporary directory."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="cache-tests-") as tmp:
        yield Path(tmp)


def run_suite(pkg: Path, overrides: Sequence[str], timeout: float = RUN_TIMEOUT,
              keep: Path | None = None) -> dict[str, Any]:
    with workdir(keep) as wd, servers(pkg, wd, overrides) as (_origin, proxy):
        out = run_cli(pkg, proxy.url, timeout=timeout)
        try:
            results: dict[str, Any] = json.loads(out[out.index("{"):])
        except ValueError as exc:
            raise RunError(f"the suite's CLI printed no JSON results:\n{out[-2000:]}") from exc
        if proxy.proc.poll() is not None:
            raise RunError(f"the proxy exited during the run:\n{proxy.tail()}")
        return results


# --- report -----------------------------------------------------------------------


def report(defs: Mapping[str, TestDef], results: Mapping[str, Any], anchors: Mapping[str, tuple[int, int]],
           seconds: float, overrides: Sequence[str]) -> dict[str, Any]:
    s = summarize(defs, results)

    def rows(*kinds: str) -> list[dict[str, str]]:
        return [{"id": i, "kind": defs[i].kind, "result": s.classes[i], "reason": reason(results.get(i))}
                for i in s.ids(*kinds)]

    partial = [{"id": i, "kind": defs[i].kind, "result": s.classes[i], "reason": reason(results.get(i))}
               for i in sorted(defs) if i.startswith("partial-")]
    return {
        "suite": f"{PACKAGE}@{VERSION}",
        "proxy_settings": list(overrides),
        "seconds": round(seconds, 1),
        "tests": len(defs),
        "passing": s.passing,
        "failing_required": s.failing_required,
        "counts": dict(sorted(s.counts.items())),
        "partial": partial,
        "checks_yes": s.ids("yes"),
        "failing": rows("fail"),
        "optional_failing": rows("optional_fail"),
        "not_run": rows("setup_fail", "retry", "dependency_fail"),
        "published": {k: {"passing": p, "failing_required": f} for k, (p, f) in PUBLISHED.items()},
        "bundled": {k: {"passing": p, "failing_required": f} for k, (p, f) in anchors.items()},
    }


def print_table(r: Mapping[str, Any]) -> None:
    out = sys.stdout.write
    settings = " ".join(r["proxy_settings"]) or "defaults"
    out(f"{r['suite']} through rangeproxy ({settings}), {r['tests']} tests, {r['seconds']} s\n\n")
    out(f"{'':16} {'passing':>8} {'failing required':>17}\n")
    out(f"{'rangeproxy':16} {r['passing']:>8} {r['failing_required']:>17}\n")
    for name, fig in r["published"].items():
        note = ""
        b = r["bundled"].get(name)
        if b is not None and (b["passing"], b["failing_required"]) != (fig["passing"], fig["failing_required"]):
            note = f"   (bundled results: {b['passing']}/{b['failing_required']})"
        out(f"{name:16} {fig['passing']:>8} {fig['failing_required']:>17}{note}\n")
    out("\nresults: " + ", ".join(f"{k} {v}" for k, v in r["counts"].items()) + "\n")
    out("  (passing = required + optimal passed; failing required = 'fail'; "
        "setup_fail / retry / dependency_fail are not counted either way)\n")

    def section(title: str, items: Sequence[Mapping[str, str]]) -> None:
        out(f"\n{title} ({len(items)}):\n")
        for it in items:
            out(f"  {it['result']:<15} {it['id']:<50} {it['reason']}\n")

    section("partial content (partial-*)", r["partial"])
    section("failing required", r["failing"])
    section("failing optimal", r["optional_failing"])
    section("not counted (setup / retry / dependency)", r["not_run"])
    out(f"\nchecks answering yes ({len(r['checks_yes'])}):\n")
    for tid in r["checks_yes"]:
        out(f"  {tid}\n")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m conformance.cache_tests",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where npm installs the suite (.cache-tests/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a proxy setting for the run (repeatable), e.g. --set default_ttl=0s")
    p.add_argument("--results", type=Path, metavar="FILE",
                   help="classify a saved results JSON of the suite's CLI instead of running it")
    p.add_argument("--save", type=Path, metavar="FILE", help="also write the suite's raw results JSON here")
    p.add_argument("--id", default="", metavar="TEST_ID",
                   help="run one test with the suite's request/response dump instead of the whole suite")
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="keep the servers' logs (and the proxy's cache) in DIR instead of a temporary directory")
    p.add_argument("--timeout", type=float, default=RUN_TIMEOUT, help="seconds the suite's CLI may take")
    args = p.parse_args(argv)

    try:
        pkg = install(args.dir.resolve())
    except InstallError as exc:
        print(f"cache-tests: cannot install {PACKAGE}@{VERSION}: {exc}", file=sys.stderr)
        return 3
    started = time.monotonic()
    try:
        if args.id:
            with workdir(args.keep) as wd, servers(pkg, wd, args.overrides) as (_origin, proxy):
                sys.stdout.write(run_cli(pkg, proxy.url, test_id=args.id, timeout=args.timeout))
            return 0
        defs = load_definitions(pkg)
        if args.results is not None:
            results = json.loads(args.results.read_text())
        else:
            results = run_suite(pkg, args.overrides, timeout=args.timeout, keep=args.keep)
        if args.save is not None:
            args.save.write_text(json.dumps(results, indent=2) + "\n")
        r = report(defs, results, bundled_anchors(pkg, defs), time.monotonic() - started, args.overrides)
    except (RunError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
        print(f"cache-tests: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print_table(r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
