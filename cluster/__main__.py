"""``python -m cluster --nodes 3 --origin URL``: HAProxy on a local port in front of N proxies, until
Ctrl-C or SIGTERM (README, "Loopback cluster")."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from cluster.loopback import ClusterError, ClusterOptions, LoopbackCluster


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cluster", description=__doc__)
    p.add_argument("--origin", required=True, help="the origin every node proxies (e.g. http://127.0.0.1:8081)")
    p.add_argument("--nodes", type=int, default=3, help="how many proxy nodes (default 3)")
    p.add_argument("--port", type=int, default=8080, help="HAProxy's front port on 127.0.0.1 (default 8080; 0: free)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="caches, logs, haproxy.cfg and its admin socket (default: a new temporary directory)")
    p.add_argument("--slice-size", type=int, default=None, help="the nodes' slice size in bytes")
    p.add_argument("--drain-period", type=float, default=5.0, help="the nodes' drain_period in seconds (default 5)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="another proxy setting for every node (repeatable)")
    p.add_argument("--tls", nargs=2, type=Path, default=None, metavar=("CERT", "KEY"),
                   help="PEM chain and key: HAProxy terminates TLS and HTTP/2 (ALPN h2,http/1.1) on the front")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    settings = dict(s.split("=", 1) for s in args.settings)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rangeproxy-cluster-"))
    options = ClusterOptions(slice_size=args.slice_size, drain_period=args.drain_period, settings=settings,
                             front_port=args.port, tls_cert=args.tls[0] if args.tls else None,
                             tls_key=args.tls[1] if args.tls else None)
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    cluster = LoopbackCluster(args.origin, workdir, args.nodes, options)
    try:
        cluster.start()
    except ClusterError as e:
        print(f"cluster: {e}", file=sys.stderr)
        return 1
    print(f"front (HAProxy): {cluster.front_url}   config: {cluster.config_path}")
    print(f"HAProxy's stats page: {cluster.stats_url}   (each node's state; ;csv for scripts)")
    for node in cluster.nodes.values():
        print(f"  {node.name}: {node.url}  stats {node.url}/stats  log {node.log_path}  cache {node.cache_dir}")
    print(f"admin socket: {cluster.socket_path}   work dir: {workdir}")
    print("Ctrl-C or SIGTERM stops everything", flush=True)
    rc = 0
    try:
        while not stopping:
            assert cluster.haproxy is not None
            dead = [p.name for p in (cluster.haproxy, *cluster.nodes.values()) if not p.alive()]
            if dead:
                print(f"cluster: {', '.join(dead)} exited; stopping", file=sys.stderr)
                rc = 1
                break
            time.sleep(0.2)
    finally:
        cluster.close()
    print("cluster: stopped")
    return rc


if __name__ == "__main__":
    sys.exit(main())
