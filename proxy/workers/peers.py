"""Several workers, one set of numbers: the files behind an aggregated ``/metrics`` and ``/stats.json``.

With ``workers`` > 1 every worker process publishes its own state once a second (and once more
when it stops) into ``<run_dir>/workers/``:

* ``<index>.prom``: its registry's text exposition, after a first comment line
  ``# rangeproxy worker index=<i> count=<n> pid=<pid> start=<ticks> written=<unix time>``;
* ``<index>.json``: ``{"index", "count", "pid", "start", "written", "stats": Stats.export()}``.

(``start``: when the process started, in clock ticks since boot, from ``/proc``; with the pid
it tells a live worker from an unrelated process that got a dead worker's pid.)

Both are written to a temporary file and renamed into place, so a reader sees a whole file or
the previous one. The worker answering a scrape uses its live registry and stats for its own
part and these files for the others (``proxy.observe.metrics.merge_expositions``,
``Stats.snapshot(peers=...)``), skipping files of workers that are gone: not updated for
``STALE_AFTER`` seconds, or whose process has exited.

With a single worker nothing is written or read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from proxy.observe.metrics import Metrics, merge_expositions
from proxy.observe.stats import Stats
from proxy.workers.info import WorkerInfo

__all__ = ["Peers", "pid_alive", "process_start", "STALE_AFTER", "WORKERS_SUBDIR", "prom_header",
           "parse_prom_header"]

log = logging.getLogger("rangeproxy.peers")
_T = TypeVar("_T")
WORKERS_SUBDIR = "workers"
STALE_AFTER = 5.0  # seconds without an update after which a worker's files are ignored
HEADER = "# rangeproxy worker "
LOG_EVERY = 60.0  # seconds between log lines while publishing keeps failing
RESERVOIR_DIGITS = 6  # latency samples are published rounded to the microsecond
EXPORT_KEYS = frozenset({  # what Stats.snapshot reads from a peer's export
    "started", "started_mono", "requests", "by_cache_status", "by_status_class", "by_class", "aborted", "purges",
    "slice_lookups", "upstream", "upstream_seconds", "version_changes", "read_ahead_runs", "corrupt_dropped",
    "evictions", "in_flight", "waiting", "now", "ring", "durations", "ttfbs", "latency_by_cache_status", "objects",
})


def process_start(pid: int) -> int:
    """When process ``pid`` started (clock ticks since boot, ``/proc/<pid>/stat``); 0 when unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[19])  # field 22; the name in (...) may hold spaces
    except (OSError, ValueError, IndexError):
        return 0


def pid_alive(pid: int, start: int = 0) -> bool:
    """Whether process ``pid`` exists (and, when both are known, started at ``start``).

    A zombie still exists: the staleness check catches those.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return False
    if start:
        now = process_start(pid)
        return not now or now == start
    return True


def prom_header(index: int, count: int, pid: int, written: float, start: int = 0) -> str:
    return f"{HEADER}index={index} count={count} pid={pid} start={start} written={written!r}\n"


def parse_prom_header(line: str) -> dict[str, float] | None:
    """``{"index", "count", "pid", "start", "written"}`` from the first line of a ``.prom`` file, or None."""
    if not line.startswith(HEADER):
        return None
    out: dict[str, float] = {}
    try:
        for item in line[len(HEADER):].split():
            k, _, v = item.partition("=")
            out[k] = float(v)
    except ValueError:
        return None
    return out if {"index", "count", "pid", "written"} <= out.keys() else None


def _round_reservoirs(stats: dict[str, Any]) -> None:
    r = RESERVOIR_DIGITS
    stats["durations"] = [round(x, r) for x in stats["durations"]]
    stats["ttfbs"] = [round(x, r) for x in stats["ttfbs"]]
    stats["latency_by_cache_status"] = {cs: [[round(x, r) for x in d], [round(x, r) for x in t]]
                                        for cs, (d, t) in stats["latency_by_cache_status"].items()}


class Peers:
    """This worker's side of the exchange: publish its files, read the other workers'."""

    def __init__(self, worker: WorkerInfo, stats: Stats, metrics: Metrics, get_engine: Callable[[], Any],
                 stale_after: float = STALE_AFTER) -> None:
        self.worker = worker
        self.dir = Path(worker.run_dir) / WORKERS_SUBDIR
        self.stats = stats
        self.metrics = metrics
        self._engine = get_engine
        self.stale_after = stale_after
        self._lock = threading.Lock()  # one writer at a time (the loop's publications and the final one)
        self._seq = 0
        self._written = 0
        self._ready = False
        self._failing_since: float | None = None
        self._start: tuple[int, int] = (0, 0)  # (pid, its process_start), taken in the process that publishes
        self._logged: float | None = None

    # --- publishing ---------------------------------------------------------------------

    def _prepare(self) -> tuple[int, str, dict[str, Any]]:
        """Take this worker's state (on the event loop: the counters are the loop's)."""
        w = self.worker
        if self._start[0] != w.pid:
            self._start = (w.pid, process_start(w.pid))
        start = self._start[1]
        written = time.time()
        prom = prom_header(w.index, w.count, w.pid, written, start) + self.metrics.render().decode()
        doc = {"version": 1, "index": w.index, "count": w.count, "pid": w.pid, "start": start,
               "written": written, "stats": self.stats.export()}
        self._seq += 1
        return self._seq, prom, doc

    def _write(self, seq: int, prom: str, doc: dict[str, Any]) -> None:
        """Write both files atomically; a publication older than one already written is dropped."""
        with self._lock:
            if seq <= self._written:
                return
            if not self._ready:
                self.dir.mkdir(parents=True, exist_ok=True)
                self._remove_leftovers()
                self._ready = True
            _round_reservoirs(doc["stats"])
            i, pid = self.worker.index, self.worker.pid
            self._replace(self.dir / f"{i}.prom", self.dir / f".{i}.{pid}.prom.tmp", prom.encode())
            self._replace(self.dir / f"{i}.json", self.dir / f".{i}.{pid}.json.tmp",
                          json.dumps(doc, separators=(",", ":")).encode())
            self._written = seq

    @staticmethod
    def _replace(path: Path, tmp: Path, data: bytes) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def _remove_leftovers(self) -> None:
        """Temporary files of processes that died mid-write (``.<index>.<pid>.<kind>.tmp``)."""
        for tmp in self.dir.glob(".*.tmp"):
            parts = tmp.name.split(".")
            try:
                pid = int(parts[2])
            except (IndexError, ValueError):
                continue
            if not pid_alive(pid):
                with contextlib.suppress(OSError):
                    tmp.unlink()

    async def publish(self) -> None:
        """Publish now (the writing happens off the event loop)."""
        seq, prom, doc = self._prepare()
        await asyncio.to_thread(self._write, seq, prom, doc)

    def publish_now(self) -> None:
        """Publish now, blocking (at shutdown: the last state must be the one that stays)."""
        self._write(*self._prepare())

    async def publish_or_log(self) -> None:
        """:meth:`publish`; a failure (a full disk, ...) is logged, now and then, never raised."""
        try:
            await self.publish()
        except Exception as exc:  # noqa: BLE001 - accounting must never stop the worker
            self._failed(exc)
        else:
            self._ok()

    def publish_or_log_now(self) -> None:
        try:
            self.publish_now()
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if self._logged is None or now - self._logged >= LOG_EVERY:
            self._logged = now
            log.warning("worker %d: publishing its stats to %s failed (the others' /metrics and /stats.json "
                        "miss its numbers): %r", self.worker.index, self.dir, exc)

    def _ok(self) -> None:
        if self._failing_since is not None:
            log.warning("worker %d: publishing its stats works again (after %.0f s)", self.worker.index,
                        time.monotonic() - self._failing_since)
            self._failing_since = None
            self._logged = None

    # --- reading ------------------------------------------------------------------------

    def _fresh(self, path: Path, now: float) -> bool:
        try:
            return now - path.stat().st_mtime <= self.stale_after
        except OSError:
            return False

    def _live(self, meta: dict[str, Any], now: float) -> bool:
        try:
            index, count, pid = int(meta["index"]), int(meta["count"]), int(meta["pid"])
            written, start = float(meta["written"]), int(meta.get("start", 0))
        except (KeyError, TypeError, ValueError):
            return False
        return (index != self.worker.index and 0 <= index < self.worker.count and count == self.worker.count
                and now - written <= self.stale_after and pid_alive(pid, start))

    def _fresh_files(self, pattern: str, read: Callable[[Path], _T], now: float) -> Iterator[_T]:
        """``read(path)`` of each file matching ``pattern`` updated within ``stale_after`` (blocking).

        A file that cannot be read or decoded (gone, truncated, ...) is skipped.
        """
        for path in self.dir.glob(pattern):
            if not self._fresh(path, now):
                continue
            try:
                value = read(path)
            except (OSError, ValueError):
                continue
            yield value

    def read_metrics(self) -> list[str]:
        """The other live workers' expositions (blocking: file I/O)."""
        now = time.time()
        out: list[tuple[int, str]] = []
        for text in self._fresh_files("*.prom", lambda path: path.read_text(encoding="utf-8"), now):
            meta = parse_prom_header(text.partition("\n")[0] + "\n")
            if meta is not None and self._live(meta, now):
                out.append((int(meta["index"]), text))
        return [text for _, text in sorted(out)]

    def read_stats(self) -> list[dict[str, Any]]:
        """The other live workers' ``Stats.export()``, each with ``index``, ``pid`` and ``age`` (blocking)."""
        now = time.time()
        out: list[dict[str, Any]] = []
        for doc in self._fresh_files("*.json", lambda path: json.loads(path.read_bytes()), now):
            if (not isinstance(doc, dict) or not self._live(doc, now) or not isinstance(doc.get("stats"), dict)
                    or not EXPORT_KEYS <= doc["stats"].keys()):
                continue
            exp = doc["stats"]
            exp.update(index=int(doc["index"]), pid=int(doc["pid"]), age=max(0.0, now - float(doc["written"])))
            out.append(exp)
        return sorted(out, key=lambda e: e["index"])

    async def merged_metrics(self, local: bytes) -> bytes:
        """``local`` (this worker's live exposition) added to the other live workers' (off the loop)."""
        return await asyncio.to_thread(lambda: merge_expositions([local.decode(), *self.read_metrics()]))

    async def stats_exports(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.read_stats)
