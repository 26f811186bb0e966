"""``--workers N``: N worker processes on one port (SO_REUSEPORT), one cache directory.

The supervisor opens one SO_REUSEPORT listening socket per worker (the kernel
spreads connections across them), forks the workers, forwards SIGTERM/SIGINT (and
SIGHUP, a reload each worker does itself) to them, restarts one that dies unexpectedly (bounded) on the same socket, and exits
0 when all have stopped after a signal.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from typing import Callable

__all__ = ["run_workers", "open_sockets"]

log = logging.getLogger("rangeproxy.supervisor")
MAX_RESTARTS = 10  # unexpected worker deaths tolerated per RESTART_WINDOW before giving up
RESTART_WINDOW = 60.0  # seconds


def open_sockets(host: str, port: int, count: int, backlog: int = 4096) -> list[socket.socket]:
    """``count`` listening sockets on one port, bound with SO_REUSEPORT, one per worker.

    The port is first bound once *without* SO_REUSEPORT: if another program (or another
    rangeproxy) holds it, start-up fails with "address in use" instead of silently sharing
    its connections. The supervisor keeps the sockets, so a restarted worker takes over its
    socket and the connections queued on it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, port))  # raises OSError (EADDRINUSE) when the port is taken
        port = int(probe.getsockname()[1])
    socks = []
    for _ in range(count):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((host, port))
        s.listen(backlog)
        s.set_inheritable(True)
        socks.append(s)
    return socks


def run_workers(count: int, worker: Callable[[int], int]) -> int:
    """Fork ``count`` workers running ``worker(index)``; supervise until a signal stops them."""
    children: dict[int, int] = {}  # pid -> index
    stopping = False
    deaths: list[float] = []

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: default signal handling, its own event loop
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until its event loop takes it (a reload)
            code = 1
            try:
                code = worker(index)
            except BaseException:  # noqa: BLE001 - report, then leave without running the parent's code
                log.exception("worker %d failed", index)
            finally:
                os._exit(code)
        children[pid] = index
        log.info("worker %d/%d started (pid %d)", index + 1, count, pid)

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def hangup(signum: int, _frame: object) -> None:
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hangup)
    for index in range(count):
        spawn(index)
    status = 0
    while children:
        try:
            pid, wstatus = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in children:
            continue
        index = children.pop(pid)
        code = os.waitstatus_to_exitcode(wstatus)
        if stopping:
            # A worker still starting has no handler yet: SIGTERM's default action is a clean stop too.
            if code not in (0, -signal.SIGTERM):
                log.warning("worker %d exited with %d", index + 1, code)
                status = status or 1
            continue
        now = time.monotonic()
        deaths = [t for t in deaths if now - t < RESTART_WINDOW] + [now]
        if len(deaths) > MAX_RESTARTS:
            log.error("workers keep dying (%d in %.0f s): stopping", len(deaths), RESTART_WINDOW)
            stop(signal.SIGTERM, None)
            status = 1
            continue
        log.warning("worker %d (pid %d) died with %d: restarting it", index + 1, pid, code)
        spawn(index)
    return status
