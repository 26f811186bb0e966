"""``python -m cluster.fleetcheck``: the loopback cluster's checks, in a small form, against a fleet
running anywhere (``scripts/test-docker.sh cluster`` runs it against ``docker compose --profile
cluster``): objects of its own, written into the origin's media directory first, read through the
front byte for byte; each fetched from the origin by one node only; ranges from one node whatever the
query string; a node stopped moves only its own objects. Standard library only; exits 1 on a failure.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, Callable

__all__ = ["Fleet", "object_bytes", "main"]

OBJECT_PREFIX = "fleet-"


def object_bytes(i: int) -> bytes:
    """Object ``i``'s bytes: 1 to 8 KiB derived from its index, so the check needs no copy of the files."""
    size = 1024 + (i * 7919) % (7 * 1024)
    seed = hashlib.sha256(f"rangeproxy-fleet-{i}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def write_objects(media: Path, count: int, big: int) -> None:
    """``count`` small objects and ``big`` objects of 1 MiB + 1 (for the ranges) into ``media``."""
    media.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (media / f"{OBJECT_PREFIX}{i:04d}.bin").write_bytes(object_bytes(i))
    for j in range(big):
        (media / f"{OBJECT_PREFIX}big-{j}.bin").write_bytes(hashlib.sha256(str(j).encode()).digest() * 32768 + b"!")
    for p in media.iterdir():
        p.chmod(0o644)


class Failed(AssertionError):
    """A check of the fleet failed (the message says which)."""


def check(ok: bool, what: str) -> None:
    print(("  ok    " if ok else "  FAIL  ") + what, flush=True)
    if not ok:
        raise Failed(what)


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def _until(pred: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:.0f} s waiting until {what}")
        time.sleep(0.5)


class Fleet:
    """The front's URL, HAProxy's stats page (``;csv``) and each node's own URL (for ``/stats.json``)."""

    def __init__(self, front: str, stats: str, nodes: dict[str, str]) -> None:
        self.front, self.stats, self.nodes = front.rstrip("/"), stats.rstrip("/"), nodes
        self._conn: http.client.HTTPConnection | None = None

    def states(self) -> dict[str, str]:
        """HAProxy's state of each server of the backend (UP, DOWN, MAINT, ...)."""
        _, _, body = _get(self.stats + "/;csv")
        lines = body.decode().lstrip("# ").splitlines()
        header = lines[0].split(",")
        out = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == "rangeproxy" and row.get("svname") in self.nodes:
                out[row["svname"]] = row["status"].split(" ")[0]
        return out

    def origin_counts(self, node: str) -> tuple[int, int]:
        """The node's requests to the default origin and the bytes they brought."""
        _, _, body = _get(self.nodes[node] + "/stats.json")
        [origin] = [o for o in json.loads(body)["origins"] if o["name"] == "default"]
        return int(origin["upstream_requests"]), int(origin["upstream_bytes"])

    def through_front(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request through the front on the kept-alive connection (opened again after an error).

        One connection, so that a request starts only once HAProxy has ended the one before: with a
        new connection each, HAProxy may still count the last one as in flight on its node, and at
        that load the bound (``hash-balance-factor``) moves the next request of that node elsewhere."""
        url = urllib.parse.urlsplit(self.front)
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=60)
            try:
                self._conn.request("GET", url.path + path, headers=headers or {})
                r = self._conn.getresponse()
                return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
            except (OSError, http.client.HTTPException):
                self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def read_pass(self, names: dict[str, bytes]) -> dict[str, tuple[str, str]]:
        """Each object read whole through the front, one at a time: name -> (node that answered,
        X-Cache); every body checked byte for byte."""
        seen = {}
        for name, want in names.items():
            status, h, body = self.through_front(f"/{name}")
            if status != 200 or body != want:
                check(False, f"GET {name} through the front: {status}, {len(body)} bytes, want 200 and the file's {len(want)}")
            seen[name] = (h.get("x-cache-node", "?"), h.get("x-cache", "?"))
        return seen


def _ranges(fleet: Fleet, name: str, data: bytes) -> None:
    size = len(data)
    nodes = set()
    for spec, start, end in (("0-99", 0, 99), ("524288-524387", 524288, 524387), ("-1000", size - 1000, size - 1),
                             ("1048000-", 1048000, size - 1)):
        for query in ("", "?sig=a1", "?sig=b2&exp=99"):
            status, h, body = fleet.through_front(f"/{name}{query}", {"Range": f"bytes={spec}"})
            check(status == 206 and h.get("content-range") == f"bytes {start}-{end}/{size}" and body == data[start:end + 1],
                  f"{name}{query} Range {spec}: {status} {h.get('content-range')}, {len(body)} bytes match the file")
            nodes.add(h.get("x-cache-node"))
    status, h, body = fleet.through_front(f"/{name}?sig=c3", {"Range": "bytes=0-9,1000-1009,-5"})
    m = re.search(r'boundary="?([^";]+)"?', h.get("content-type", ""))
    check(status == 206 and m is not None, f"{name} multi-range: {status} {h.get('content-type')}, want multipart/byteranges")
    assert m is not None
    parts = body.split(b"--" + m[1].encode())[1:-1]
    got = [p.split(b"\r\n\r\n", 1)[1][:-2] for p in parts]
    check(got == [data[0:10], data[1000:1010], data[-5:]], f"{name} multi-range: {len(got)} parts match the file")
    nodes.add(h.get("x-cache-node"))
    check(len(nodes) == 1, f"every range of {name}, with any query string, answered by one node: {sorted(map(str, nodes))}")


def run(fleet: Fleet, count: int, big: int, stop: tuple[str, list[str]] | None) -> dict[str, Any]:
    """The checks in order; returns the figures."""
    _until(lambda: set(fleet.states().values()) == {"UP"} and len(fleet.states()) == len(fleet.nodes),
           f"HAProxy sees every node UP ({fleet.states()})", 120)
    check(True, f"HAProxy sees {len(fleet.nodes)} nodes UP")
    names = {f"{OBJECT_PREFIX}{i:04d}.bin": object_bytes(i) for i in range(count)}
    before = {n: fleet.origin_counts(n) for n in fleet.nodes}

    first = fleet.read_pass(names)
    shares = Counter(node for node, _ in first.values())
    check(all(cache == "MISS" for _, cache in first.values()), f"{count} objects, each a MISS once, byte for byte")
    check(set(shares) == set(fleet.nodes), f"every node holds some: {dict(sorted(shares.items()))}")
    again = fleet.read_pass(names)
    odd = {k: (first[k], again[k]) for k in names if again[k] != (first[k][0], "HIT")}
    check(not odd, f"read again: each a HIT on the same node (not: {dict(list(odd.items())[:5])}, {len(odd)} in all)")
    for n in fleet.nodes:
        req, got = (a - b for a, b in zip(fleet.origin_counts(n), before[n]))
        held = [k for k in names if first[k][0] == n]
        want = sum(len(names[k]) for k in held)
        check(req == len(held) and got == want,
              f"{n}: {req} origin requests, {got} bytes: one fetch of each of its {len(held)} objects ({want} bytes)")

    for j in range(big):
        name = f"{OBJECT_PREFIX}big-{j}.bin"
        _ranges(fleet, name, hashlib.sha256(str(j).encode()).digest() * 32768 + b"!")

    figures: dict[str, Any] = {"objects": count, "shares": dict(sorted(shares.items()))}
    if stop is None:
        return figures
    gone, command = stop
    print(f"  ..    stopping {gone}: {shlex.join(command)}", flush=True)
    subprocess.run(command, check=True)
    _until(lambda: fleet.states().get(gone) not in ("UP", None), f"HAProxy takes {gone} out ({fleet.states()})", 60)
    after = fleet.read_pass(names)
    moved = {k for k in names if after[k][0] != first[k][0]}
    own = {k for k in names if first[k][0] == gone}
    check(moved == own, f"stopping {gone} moved {len(moved)} objects, exactly its own {len(own)}")
    check(all(after[k] == (first[k][0], "HIT") for k in names if k not in own),
          f"the other {count - len(own)} objects stay HITs on their node")
    check(all(after[k][0] != gone for k in own), f"{gone}'s objects now come from the other nodes")
    figures["stopped"] = {"node": gone, "moved": len(moved), "fraction": round(len(moved) / count, 3)}
    return figures


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cluster.fleetcheck", description=__doc__)
    p.add_argument("--write-media", type=Path, default=None, metavar="DIR",
                   help="only write the check's objects into DIR (the origin's media directory) and exit")
    p.add_argument("--front", help="the balancer's URL")
    p.add_argument("--stats", help="HAProxy's stats page URL (its ;csv is read)")
    p.add_argument("--node", action="append", default=[], metavar="NAME=URL",
                   help="a node, as HAProxy names it, and its own URL (repeatable)")
    p.add_argument("--objects", type=int, default=120, help="small objects read through the front (default 120)")
    p.add_argument("--big", type=int, default=2, help="objects of 1 MiB for the ranges (default 2)")
    p.add_argument("--stop", nargs=2, default=None, metavar=("NODE", "COMMAND"),
                   help="stop NODE by running COMMAND (a shell-quoted line), then check what moved")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.write_media is not None:
        write_objects(args.write_media, args.objects, args.big)
        return 0
    if not (args.front and args.stats and args.node):
        print("fleetcheck: --front, --stats and --node are needed", file=sys.stderr)
        return 2
    fleet = Fleet(args.front, args.stats, dict(n.split("=", 1) for n in args.node))
    stop = (args.stop[0], shlex.split(args.stop[1])) if args.stop else None
    try:
        figures = run(fleet, args.objects, args.big, stop)
    except Failed as e:
        print(f"fleetcheck: FAILED: {e}", file=sys.stderr)
        return 1
    print("fleetcheck: " + json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
