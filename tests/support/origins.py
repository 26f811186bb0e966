"""Several origins behind one proxy: config files with ``[[origin]]`` tables, a start-up that
must fail on one, test certificates for HTTPS origins, and bounded polls.

``write_config(path, [{"name": "a", "hosts": ["a.test"], "upstream": url}], admin_token="t")``
writes the global keys first, then one ``[[origin]]`` table per dict (lists and dicts become
TOML arrays and inline tables). ``start_proxy("", tmp, config=path)`` (tests.support.servers)
then runs a proxy whose origins come from that file only.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence, TypeVar

import trustme

from tests.support.servers import REPO_ROOT, subprocess_env

__all__ = ["AccessLine", "Pki", "access_lines", "config_error", "poll", "toml_value", "write_config"]

T = TypeVar("T")
_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[0-9.]+" (?P<status>\d{3}) \d+ .* '
                     r'cache=(?P<cache>\S+) origin=(?P<origin>\S+) ')


@dataclass(frozen=True)
class AccessLine:
    method: str
    target: str
    status: int
    cache: str
    origin: str


def access_lines(stdout: str) -> list[AccessLine]:
    """The proxy's access log lines (its stdout, the default format), in order."""
    found = (_ACCESS.search(line) for line in stdout.splitlines())
    return [AccessLine(m["method"], m["target"], int(m["status"]), m["cache"], m["origin"]) for m in found if m]


def toml_value(value: object) -> str:
    """One TOML value: strings (JSON escapes are TOML's), booleans, numbers, arrays, inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def write_config(path: Path, origins: Sequence[Mapping[str, object]], **settings: object) -> Path:
    """A config file: ``settings`` as top-level keys, then each of ``origins`` as an [[origin]] table."""
    lines = [f"{k} = {toml_value(v)}" for k, v in settings.items()]
    for table in origins:
        lines += ["", "[[origin]]"] + [f"{k} = {toml_value(v)}" for k, v in table.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def config_error(config: Path, timeout: float = 60.0) -> str:
    """Start ``python -m proxy --config <config>`` (nothing else), expect exit code 2 before it
    serves; its stderr."""
    proc = subprocess.run([sys.executable, "-m", "proxy", "--config", str(config), "--host", "127.0.0.1",
                           "--port", "0", "--cache-dir", str(config.parent / "cache")],
                          cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc.stderr


def poll(get: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
    """``get()`` until it is truthy or ``timeout`` seconds passed; its last value (for the assert)."""
    deadline = time.monotonic() + timeout
    while True:
        got = get()
        if got or time.monotonic() >= deadline:
            return got
        time.sleep(interval)


@dataclass
class Pki:
    """A test CA (trustme) and what an HTTPS origin and the proxy need from it, as PEM files:
    ``ca_pem`` (to trust), the origin's certificate for 127.0.0.1/localhost, and a client
    certificate (``client_pem`` holds key and chain, for ``client_cert``) from a second CA."""

    ca: trustme.CA
    client_ca: trustme.CA
    ca_pem: Path
    client_pem: Path
    leaf: trustme.LeafCert

    @classmethod
    def create(cls, where: Path) -> Pki:
        where.mkdir(parents=True, exist_ok=True)
        ca, client_ca = trustme.CA(), trustme.CA()
        ca_pem, client_pem = where / "ca.pem", where / "client.pem"
        ca.cert_pem.write_to_path(str(ca_pem))
        client = client_ca.issue_cert("proxy.client.test")
        client.private_key_and_cert_chain_pem.write_to_path(str(client_pem))
        return cls(ca, client_ca, ca_pem, client_pem, ca.issue_cert("127.0.0.1", "localhost"))

    def server_context(self, require_client_cert: bool = False) -> ssl.SSLContext:
        """The origin's side: its certificate; with ``require_client_cert`` one from ``client_ca`` is required."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.leaf.configure_cert(ctx)
        if require_client_cert:
            self.client_ca.configure_trust(ctx)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx
