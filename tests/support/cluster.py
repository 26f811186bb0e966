"""The loopback cluster (``cluster.loopback``, the code behind ``python -m cluster``) for tests:
HAProxy required (``require_tool``: a skip with the reason, a failure under CI=true), and passes of
reads through the front that note, per object, which node answered and whether it was a hit."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import aiohttp

from cluster.loopback import ClusterOptions, LoopbackCluster
from tests.support.client import fetch
from tests.support.tools import require_tool

__all__ = ["Seen", "moved", "origin_counts", "read_pass", "start_cluster"]


def start_cluster(origin: str, workdir: Path, nodes: int = 3, **options: object) -> LoopbackCluster:
    """HAProxy and ``nodes`` proxies on loopback, to start and stop with ``with``.
    ``options`` are :class:`ClusterOptions` fields."""
    require_tool("haproxy", package="haproxy")
    return LoopbackCluster(origin, workdir, nodes, ClusterOptions(**options))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Seen:
    """One object read through the front: the node that answered (``X-Cache-Node``) and ``X-Cache``."""

    node: str
    cache: str


async def read_pass(front_url: str, names: Iterable[str], expect: Mapping[str, bytes]) -> dict[str, Seen]:
    """Read each object whole through the front, one at a time (so HAProxy's bounded load never
    moves one: one request in flight is below any node's bound), on a new session (after a reload,
    no connection of HAProxy's old worker is reused); every body is checked byte for byte."""
    seen: dict[str, Seen] = {}
    async with aiohttp.ClientSession() as session:
        for name in names:
            out = await fetch(session, f"{front_url}/{name}", timeout=60)
            assert out.complete and out.status == 200, (name, out.status, out.error)
            assert out.body == expect[name], f"{name}: {len(out.body)} bytes differ from the origin's {len(expect[name])}"
            seen[name] = Seen(out.headers["X-Cache-Node"], out.headers["X-Cache"])
    return seen


def moved(before: Mapping[str, Seen], after: Mapping[str, Seen]) -> dict[str, tuple[str, str]]:
    """The objects whose node changed: name -> (node before, node after)."""
    return {k: (before[k].node, after[k].node) for k in before if before[k].node != after[k].node}


def origin_counts(node_url: str) -> tuple[int, int]:
    """A node's requests to the origin and the bytes they brought (``/stats.json``)."""
    with urllib.request.urlopen(node_url + "/stats.json", timeout=10) as r:
        stats = json.load(r)
    origin = stats["origins"][0]
    return int(origin["upstream_requests"]), int(origin["upstream_bytes"])
