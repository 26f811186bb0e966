"""Process management, wrk runner and statistics shared by the workloads.

Everything here is bounded: servers get a start-up deadline, wrk a timeout of
its duration plus a margin, and every process started is put in its own
process group and killed (SIGTERM, then SIGKILL) when the harness leaves,
whatever the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
KIB = 1024
MIB = 1024 * 1024


class BenchError(RuntimeError):
    """A benchmark cannot run (missing tool, server failed to start, ...)."""


# --- tools --------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    """Path of a command, also looking in /usr/sbin and /sbin (nginx lives there)."""
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def _apt_install(package: str) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    print(f"bench: {package} missing; running apt-get install {package}", file=sys.stderr)
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True, timeout=900, check=False)
    if r.returncode != 0:
        # The package lists may never have been fetched on this machine.
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=900, check=False)
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=900, check=False)


def ensure_tool(name: str, package: str, *, install: bool = True) -> str:
    """Return the path of ``name``; install Debian ``package`` if missing and root.

    Raises BenchError with a clear message when it cannot be had.
    """
    path = find_tool(name)
    if path:
        return path
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        try:
            _apt_install(package)
        except (OSError, subprocess.SubprocessError) as exc:  # pragma: no cover
            print(f"bench: apt-get install {package} failed: {exc}", file=sys.stderr)
        path = find_tool(name)
        if path:
            return path
    how = f"sudo apt-get install {package}" if os.geteuid() != 0 else f"apt-get install {package}"
    raise BenchError(
        f"'{name}' not found. The benchmarks need it: install the Debian package "
        f"'{package}' ({how}) and run again."
    )


def tool_version(argv: Sequence[str]) -> str:
    """First line a command prints about its version, or '?'."""
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "?"
    out = (r.stdout + r.stderr).strip().splitlines()
    return out[0].strip() if out else "?"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin_prefix(taskset: str | None, cpu: int | None) -> list[str]:
    if taskset is None or cpu is None:
        return []
    return [taskset, "-c", str(cpu)]


# --- /proc accounting -----------------------------------------------------------


def _proc_ticks(pid: int) -> int:
    """utime+stime+cutime+cstime of one process, in clock ticks (0 if gone).

    cutime/cstime are included so that a child reaped during a run keeps
    counting (its time moves from its own entry to its parent's).
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    rest = text[text.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); utime is field 14 -> rest[11].
    return int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants, via /proc/<pid>/task/*/children."""
    seen: list[int] = []
    stack = [pid]
    while stack and len(seen) < 10_000:
        p = stack.pop()
        if p in seen:
            continue
        seen.append(p)
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                kids = Path(f"/proc/{p}/task/{t}/children").read_text().split()
            except OSError:
                continue
            stack.extend(int(k) for k in kids)
    return seen


def tree_cpu_ticks(pid: int) -> int:
    return sum(_proc_ticks(p) for p in process_tree(pid))


def rss(pid: int) -> int:
    """VmRSS of one process in bytes (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(pid: int) -> int:
    """VmRSS summed over ``pid`` and its descendants (worker processes), in bytes."""
    return sum(rss(p) for p in process_tree(pid))


class RssSampler:
    """Samples the RSS of a server's process tree in a thread (every ``interval`` s);
    ``.max`` is the largest seen. ``server`` is anything with a started ``.proc``
    (a :class:`Server`, or the test suite's server processes)."""

    def __init__(self, server: Server, interval: float = 0.1) -> None:
        assert server.proc is not None
        self.pid = server.proc.pid
        self.interval = interval
        self.max = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.max = max(self.max, tree_rss(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(10)
        self.max = max(self.max, tree_rss(self.pid))


_PF_KTHREAD = 0x00200000


def user_process_ticks() -> dict[int, int]:
    """CPU ticks (self plus reaped children) of every user-space process, by pid.

    Kernel threads are left out: they include the softirq/ksoftirqd work the
    loopback traffic of the benchmark itself causes.
    """
    out: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            text = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        rest = text[text.rindex(")") + 2:].split()
        if int(rest[6]) & _PF_KTHREAD:  # field 9: flags
            continue
        out[int(name)] = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
    return out


def other_cpu_s(before: dict[int, int], after: dict[int, int], ours: Iterable[int]) -> float:
    """CPU seconds used between two user_process_ticks() samples by processes not in ``ours``."""
    skip = set(ours)
    ticks = sum(max(0, t - before.get(p, 0)) for p, t in after.items() if p not in skip)
    return ticks / CLK_TCK


def cpu_times() -> dict[int, tuple[int, int]]:
    """Per CPU (busy, total) clock ticks from /proc/stat (idle and iowait are not busy)."""
    out: dict[int, tuple[int, int]] = {}
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if parts and parts[0].startswith("cpu") and parts[0][3:].isdigit():
            vals = [int(v) for v in parts[1:9]]  # user nice system idle iowait irq softirq steal
            total = sum(vals)
            out[int(parts[0][3:])] = (total - vals[3] - vals[4], total)
    return out


def machine_busy_pct(interval: float = 1.0) -> float:
    """How busy the whole machine is (all CPUs, percent) over ``interval`` seconds."""
    a = cpu_times()
    time.sleep(interval)
    b = cpu_times()
    busy = sum(b[c][0] - a[c][0] for c in b if c in a)
    total = sum(b[c][1] - a[c][1] for c in b if c in a)
    return 100 * busy / total if total > 0 else float("nan")


def cpu_busy_pct(before: dict, after: dict, cpu: int | None) -> float:
    """How busy one CPU was between two cpu_times() samples, in percent (nan if unknown)."""
    if cpu is None or cpu not in before or cpu not in after:
        return float("nan")
    busy = after[cpu][0] - before[cpu][0]
    total = after[cpu][1] - before[cpu][1]
    return 100 * busy / total if total > 0 else float("nan")


# --- servers ------------------------------------------------------------------


@dataclasses.dataclass
class Server:
    """One server process (group) under test."""

    key: str
    label: str
    argv: list[str]
    port: int
    log_path: Path
    cwd: Path = REPO_ROOT
    env: dict[str, str] | None = None
    health_path: str = "/healthz"
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.proc = subprocess.Popen(
            self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def wait_healthy(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.label}: exited with status {self.proc.returncode} while starting\n"
                    f"command: {' '.join(self.argv)}\n--- log ---\n{self.log_tail()}"
                )
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                try:
                    conn.request("GET", self.health_path)
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
                finally:
                    conn.close()
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise BenchError(
            f"{self.label}: not healthy after {timeout:.0f}s ({last})\n"
            f"command: {' '.join(self.argv)}\n--- log ---\n{self.log_tail()}"
        )

    def cpu_ticks(self) -> int:
        assert self.proc is not None
        return tree_cpu_ticks(self.proc.pid)

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the group id is the leader's pid
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                break
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; make sure no straggler of the group survives.
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            break
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()


# --- wrk ------------------------------------------------------------------------

# Every script: one fixed random seed per thread, so each target gets the same requests.
WRK_SEEDED_THREADS = r"""local nthreads = 0

function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
end

function init(args)
  -- Same sequence of requests for every target: one fixed seed per thread.
  math.randomseed(seed + (tid or 0))
end

"""
# Every script's end: the WRK_RESULT line parse_wrk reads (a %-template: %% for %).
WRK_DONE = r"""function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT {\"requests\": %%.0f, \"duration_us\": %%.0f, \"bytes\": %%.0f, " ..
    "\"connect\": %%.0f, \"read\": %%.0f, \"write\": %%.0f, \"status\": %%.0f, " ..
    "\"timeout\": %%.0f, \"lat_p50_us\": %%.0f, \"lat_p99_us\": %%.0f, \"lat_max_us\": %%.0f}\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""
WRK_LUA = r"""-- Generated by benchmarks/harness.py: %(what)s
local path = "%(path)s"
local file_size = %(file_size)d
local range_len = %(range_len)d
local nranges = %(nranges)d
local seed = %(seed)d
local aligned = %(aligned)s
""" + WRK_SEEDED_THREADS + r"""function request()
  if nranges == 0 then
    return wrk.format("GET", path)
  end
  if nranges == 1 then
    local a
    if aligned then
      a = math.random(0, math.floor((file_size - range_len) / range_len)) * range_len
    else
      a = math.random(0, file_size - range_len)
    end
    local hdr = string.format("bytes=%%d-%%d", a, a + range_len - 1)
    return wrk.format("GET", path, { ["Range"] = hdr })
  end
  -- nranges ranges of range_len bytes, one at a random offset in each nranges-th of the object
  local parts = {}
  local span = math.floor(file_size / nranges)
  for k = 0, nranges - 1 do
    local a = k * span + math.random(0, span - range_len)
    parts[#parts + 1] = string.format("%%d-%%d", a, a + range_len - 1)
  end
  return wrk.format("GET", path, { ["Range"] = "bytes=" .. table.concat(parts, ",") })
end

""" + WRK_DONE


def write_wrk_script(path: Path, *, url_path: str, file_size: int = 0, range_len: int = 0,
                     seed: int = 0, aligned: bool = False, nranges: int = 1, what: str = "") -> Path:
    """A wrk script sending GET ``url_path``: with ``nranges`` = 1 (the default) one random
    ``range_len``-byte range per request (offsets on multiples of it if ``aligned``); with
    ``nranges`` > 1 a multi-range request, one random range in each nranges-th of the
    object; with 0 no Range header (a full GET). Random offsets come from ``seed``."""
    if nranges == 1 and range_len > file_size:
        raise BenchError(f"range length {range_len} exceeds file size {file_size}")
    if nranges > 1 and range_len * nranges > file_size:
        raise BenchError(f"{nranges} ranges of {range_len} bytes do not fit in {file_size} bytes")
    if not what:
        what = ("full GET" if nranges == 0 else "random byte ranges from a fixed seed." if nranges == 1
                else f"{nranges} x {range_len} byte multi-range requests from a fixed seed")
    path.write_text(WRK_LUA % {
        "what": what, "path": url_path, "file_size": file_size, "range_len": range_len,
        "nranges": nranges, "seed": seed, "aligned": "true" if aligned else "false",
    })
    return path


@dataclasses.dataclass
class WrkResult:
    requests: int
    duration_s: float
    bytes: int
    non2xx: int
    socket_errors: dict[str, int]
    lat_p50_ms: float
    lat_p99_ms: float
    wrk_cpu_s: float
    raw: str
    lat_max_ms: float = float("nan")  # the slowest answered request (timeouts excluded)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def mbps(self) -> float:
        return self.bytes / self.duration_s / 1e6 if self.duration_s > 0 else 0.0


_UNITS_T = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_UNITS_B = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def parse_wrk(out: str) -> dict:
    """Numbers from wrk's output: the WRK_RESULT line of our done() hook, checked
    against (and, if the hook line is missing, taken from) wrk's own summary."""
    text: dict = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h), ([\d.]+)(B|KB|MB|GB|TB) read", out)
    if m:
        text["requests"] = int(m.group(1))
        text["duration_s"] = float(m.group(2)) * _UNITS_T[m.group(3)]
        text["bytes"] = int(float(m.group(4)) * _UNITS_B[m.group(5)])
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    text["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    text["socket_errors"] = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True)) if m
        else {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    )
    m = re.search(r"^WRK_RESULT (\{.*\})\s*$", out, re.M)
    if m:
        j = json.loads(m.group(1))
        res = {
            "requests": int(j["requests"]),
            "duration_s": j["duration_us"] / 1e6,
            "bytes": int(j["bytes"]),
            "non2xx": int(j["status"]),
            "socket_errors": {k: int(j[k]) for k in ("connect", "read", "write", "timeout")},
            "lat_p50_ms": j["lat_p50_us"] / 1e3,
            "lat_p99_ms": j["lat_p99_us"] / 1e3,
            "lat_max_ms": j["lat_max_us"] / 1e3,
        }
        if "requests" in text and text["requests"] != res["requests"]:
            raise BenchError(f"wrk output inconsistent ({text['requests']} vs {res['requests']})")
        return res
    if "requests" not in text:
        raise BenchError(f"cannot parse wrk output:\n{out}")
    text.update(lat_p50_ms=float("nan"), lat_p99_ms=float("nan"), lat_max_ms=float("nan"))
    return text


def run_wrk(wrk: str, url: str, script: Path, *, duration: int, connections: int,
            threads: int, pin: list[str], timeout: float | None = None) -> WrkResult:
    """One wrk run; ``timeout`` (seconds, wrk's --timeout; its default is 2 s): a request
    answered later than that counts as a timeout, not as a latency."""
    argv = [*pin, wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}s",
            *([f"--timeout={timeout:g}s"] if timeout is not None else []), "-s", str(script), url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60,
                           check=False, start_new_session=True)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish within {duration + 60}s: {' '.join(argv)}") from exc
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise BenchError(f"wrk failed ({r.returncode}): {' '.join(argv)}\n{r.stdout}\n{r.stderr}")
    p = parse_wrk(r.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return WrkResult(
        requests=p["requests"], duration_s=p["duration_s"], bytes=p["bytes"],
        non2xx=p["non2xx"], socket_errors=p["socket_errors"],
        lat_p50_ms=p["lat_p50_ms"], lat_p99_ms=p["lat_p99_ms"], wrk_cpu_s=cpu,
        raw=r.stdout, lat_max_ms=p["lat_max_ms"],
    )


# --- correctness ----------------------------------------------------------------


def verify_ranges(port: int, url_path: str, data: bytes, *, range_len: int, seed: int,
                  count: int = 3, label: str = "") -> None:
    """Fetch ``count`` random ranges and compare them byte for byte with ``data``."""
    rng = random.Random(seed)
    size = len(data)
    for _ in range(count):
        n = min(range_len, size)
        a = rng.randrange(0, size - n + 1)
        b = a + n - 1
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", url_path, headers={"Range": f"bytes={a}-{b}"})
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        where = f"{label}: GET {url_path} Range bytes={a}-{b}"
        if resp.status != 206:
            raise BenchError(f"{where}: HTTP {resp.status}, expected 206")
        cr = resp.getheader("Content-Range", "")
        if cr != f"bytes {a}-{b}/{size}":
            raise BenchError(f"{where}: Content-Range {cr!r}, expected 'bytes {a}-{b}/{size}'")
        if body != data[a:b + 1]:
            raise BenchError(f"{where}: body differs from the file ({len(body)} bytes)")


def make_file(path: Path, size: int, seed: int) -> bytes:
    """``size`` seeded random bytes, written to ``path``. Made 64 MiB at a time
    (``Random.randbytes`` cannot make 256 MiB in one call); the bytes are those of
    one ``randbytes(size)`` call."""
    rng = random.Random(seed)
    step = 64 * MIB
    data = b"".join(rng.randbytes(min(step, size - o)) for o in range(0, size, step))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


# --- runs and statistics --------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    target: str
    round: int
    wrk: WrkResult
    server_cpu_s: float
    server_core_busy: float = float("nan")  # % busy of the server's CPU, all processes
    wrk_core_busy: float = float("nan")  # % busy of wrk's CPU, all processes
    other_cpu_s: float = 0.0  # CPU used meanwhile by processes not under test
    invalid: str = ""  # why the run does not count; empty when it does
    contended: bool = False  # its round had a run with too much other CPU load

    @property
    def valid(self) -> bool:
        return not self.invalid

    @property
    def counted(self) -> bool:
        return self.valid and not self.contended

    @property
    def cpu_us_per_req(self) -> float:
        return self.server_cpu_s / self.wrk.requests * 1e6 if self.wrk.requests else float("nan")

    def _pct(self, secs: float) -> float:
        return 100 * secs / self.wrk.duration_s if self.wrk.duration_s else float("nan")

    @property
    def server_cpu_pct(self) -> float:
        return self._pct(self.server_cpu_s)

    @property
    def wrk_cpu_pct(self) -> float:
        return self._pct(self.wrk.wrk_cpu_s)

    @property
    def other_cpu_pct(self) -> float:
        return self._pct(self.other_cpu_s)

    @property
    def note(self) -> str:
        if self.invalid:
            return self.invalid
        return "contended round, not counted" if self.contended else "ok"


def timed_run(server: Server, wrk: str, url: str, script: Path, *, round_no: int, duration: int,
              connections: int, threads: int, pin: list[str],
              cores: tuple[int | None, int | None] = (None, None), timeout: float | None = None) -> RunResult:
    u0 = user_process_ticks()
    t0 = server.cpu_ticks()
    c0 = cpu_times()
    w = run_wrk(wrk, url, script, duration=duration, connections=connections,
                threads=threads, pin=pin, timeout=timeout)
    c1 = cpu_times()
    t1 = server.cpu_ticks()
    u1 = user_process_ticks()
    ours = [os.getpid()]  # wrk was reaped by us: its time is in our cutime
    if server.proc is not None:
        ours += process_tree(server.proc.pid)
    invalid = []
    if w.requests == 0:
        invalid.append("no requests completed")
    if w.non2xx:
        invalid.append(f"{w.non2xx} non-2xx responses")
    errs = {k: v for k, v in w.socket_errors.items() if v}
    if errs:
        invalid.append("socket errors " + ", ".join(f"{k} {v}" for k, v in errs.items()))
    if server.proc is not None and server.proc.poll() is not None:
        invalid.append(f"server exited ({server.proc.returncode})")
    return RunResult(target=server.key, round=round_no, wrk=w,
                     server_cpu_s=(t1 - t0) / CLK_TCK,
                     server_core_busy=cpu_busy_pct(c0, c1, cores[0]),
                     wrk_core_busy=cpu_busy_pct(c0, c1, cores[1]),
                     other_cpu_s=other_cpu_s(u0, u1, ours),
                     invalid="; ".join(invalid))


def med(xs: Iterable[float]) -> float:
    """Median of the numbers that are not NaN (NaN if none)."""
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


@dataclasses.dataclass
class Summary:
    key: str
    label: str
    runs: int
    counted_runs: int
    rps: float
    mbps: float
    ratio_med: float
    ratio_min: float
    ratio_max: float
    cpu_us_per_req: float
    server_cpu_pct: float
    wrk_cpu_pct: float
    server_core_busy: float
    wrk_core_busy: float
    other_cpu_pct: float
    lat_p99_ms: float


def summarize(results: list[RunResult], targets: list[tuple[str, str]],
              baseline: str) -> list[Summary]:
    """Medians over the counted runs; ratios to ``baseline`` within each round."""
    base = {r.round: r for r in results if r.target == baseline and r.counted}
    out = []
    for key, label in targets:
        mine = [r for r in results if r.target == key]
        ok = [r for r in mine if r.counted]
        ratios = [r.wrk.rps / base[r.round].wrk.rps for r in ok
                  if r.round in base and base[r.round].wrk.rps > 0]
        out.append(Summary(
            key=key, label=label, runs=len(mine), counted_runs=len(ok),
            rps=med(r.wrk.rps for r in ok),
            mbps=med(r.wrk.mbps for r in ok),
            ratio_med=med(ratios),
            ratio_min=min(ratios) if ratios else float("nan"),
            ratio_max=max(ratios) if ratios else float("nan"),
            cpu_us_per_req=med(r.cpu_us_per_req for r in ok),
            server_cpu_pct=med(r.server_cpu_pct for r in ok),
            wrk_cpu_pct=med(r.wrk_cpu_pct for r in ok),
            server_core_busy=med(r.server_core_busy for r in ok),
            wrk_core_busy=med(r.wrk_core_busy for r in ok),
            other_cpu_pct=med(r.other_cpu_pct for r in ok),
            lat_p99_ms=med(r.wrk.lat_p99_ms for r in ok),
        ))
    return out


def fmt(x: float | None, spec: str = ".2f") -> str:
    if x is None or x != x:
        return "n/a"
    return format(x, spec)


def size_txt(n: int) -> str:
    if n >= MIB and n % MIB == 0:
        return f"{n // MIB} MiB"
    if n >= KIB and n % KIB == 0:
        return f"{n // KIB} KiB"
    return f"{n} B"


def _busy(srv: float, wrk: float) -> str:
    if srv != srv and wrk != wrk:
        return "n/a"
    return f"{fmt(srv, '.0f')}/{fmt(wrk, '.0f')}%"


def summary_table(rows: list[Summary]) -> str:
    head = ("| target | req/s | MB/s | vs nginx: median (min–max) | server CPU µs/req "
            "| server CPU | wrk CPU | cores busy srv/wrk | other CPU | p99 ms | runs counted |")
    lines = [head, "|" + "---|" * 11]
    for s in rows:
        ratio = (f"{fmt(s.ratio_med, '.2f')} ({fmt(s.ratio_min, '.2f')}–{fmt(s.ratio_max, '.2f')})"
                 if s.ratio_med == s.ratio_med else "n/a")
        lines.append(
            f"| {s.label} | {fmt(s.rps, ',.0f')} | {fmt(s.mbps, ',.0f')} | {ratio} "
            f"| {fmt(s.cpu_us_per_req, ',.0f')} | {fmt(s.server_cpu_pct, '.0f')}% "
            f"| {fmt(s.wrk_cpu_pct, '.0f')}% "
            f"| {_busy(s.server_core_busy, s.wrk_core_busy)} "
            f"| {fmt(s.other_cpu_pct, '.0f')}% "
            f"| {fmt(s.lat_p99_ms, '.1f')} | {s.counted_runs}/{s.runs} |"
        )
    return "\n".join(lines)


def runs_table(results: list[RunResult], labels: dict[str, str]) -> str:
    lines = ["| round | target | requests | seconds | req/s | MB/s | server CPU s | µs/req "
             "| wrk CPU | cores busy srv/wrk | other CPU | p50 ms | p99 ms | note |",
             "|" + "---|" * 14]
    for r in results:
        lines.append(
            f"| {r.round} | {labels.get(r.target, r.target)} | {r.wrk.requests} "
            f"| {r.wrk.duration_s:.2f} | {r.wrk.rps:,.0f} | {r.wrk.mbps:,.0f} "
            f"| {r.server_cpu_s:.2f} | {fmt(r.cpu_us_per_req, ',.0f')} "
            f"| {fmt(r.wrk_cpu_pct, '.0f')}% "
            f"| {_busy(r.server_core_busy, r.wrk_core_busy)} "
            f"| {fmt(r.other_cpu_pct, '.0f')}% "
            f"| {fmt(r.wrk.lat_p50_ms, '.1f')} "
            f"| {fmt(r.wrk.lat_p99_ms, '.1f')} | {r.note} |"
        )
    return "\n".join(lines)


# --- the alternating driver shared by workloads ---------------------------------


@dataclasses.dataclass
class Tools:
    wrk: str
    taskset: str | None
    nginx: str


@dataclasses.dataclass
class WorkloadReport:
    name: str
    title: str
    params: str
    summaries: list[Summary]
    results: list[RunResult]
    labels: dict[str, str]
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.counted_runs > 0 for s in self.summaries)


def time_rounds(servers: list[Server], *, tools: Tools, opts, url_path: str, script: Path, name: str,
                on_run: Callable[[Server], contextlib.AbstractContextManager[object]] | None = None,
                timeout: float | None = None) -> tuple[list[RunResult], list[str]]:
    """Time ``servers`` (running and healthy) A B C A B C ... for ``opts.runs`` rounds,
    after ``opts.warmup`` seconds of wrk on each; the runs and the notes on contended rounds.

    A round during which other processes used more than ``opts.max_other``
    percent of a core (the machine is shared) is kept in the record but not
    counted, and another round is run instead, up to ``opts.max_rounds`` rounds
    in all. ``on_run(server)``, if given, is a context manager around each timed run;
    ``timeout`` is wrk's --timeout (seconds).
    """
    wrk_pin = pin_prefix(tools.taskset, opts.wrk_cpu)
    max_rounds = max(opts.runs, opts.max_rounds or 2 * opts.runs)
    results: list[RunResult] = []
    notes: list[str] = []
    if opts.warmup > 0:
        for s in servers:
            run_wrk(tools.wrk, f"http://127.0.0.1:{s.port}{url_path}", script,
                    duration=opts.warmup, connections=opts.connections,
                    threads=opts.threads, pin=wrk_pin, timeout=timeout)
    clean = 0
    for rnd in range(1, max_rounds + 1):
        if clean >= opts.runs:
            break
        this_round = []
        for s in servers:
            with on_run(s) if on_run else contextlib.nullcontext():
                r = timed_run(s, tools.wrk, f"http://127.0.0.1:{s.port}{url_path}", script,
                              round_no=rnd, duration=opts.duration,
                              connections=opts.connections, threads=opts.threads, pin=wrk_pin,
                              cores=(opts.server_cpu, opts.wrk_cpu), timeout=timeout)
            this_round.append(r)
            print(f"bench[{name}]: round {rnd} {s.label}: "
                  f"{r.wrk.rps:,.0f} req/s, {r.wrk.mbps:,.0f} MB/s, "
                  f"{r.cpu_us_per_req:,.0f} µs CPU/req, other load {r.other_cpu_pct:.0f}%"
                  + (f"  INVALID: {r.invalid}" if r.invalid else ""), file=sys.stderr)
        results.extend(this_round)
        worst = max(r.other_cpu_pct for r in this_round)
        if worst > opts.max_other:
            for r in this_round:
                r.contended = True
            print(f"bench[{name}]: round {rnd} not counted: other processes used "
                  f"{worst:.0f}% of a core (limit {opts.max_other:g}%)", file=sys.stderr)
        else:
            clean += 1
    n_cont = len({r.round for r in results if r.contended})
    if n_cont:
        notes.append(f"{n_cont} round(s) not counted: other processes used more than "
                     f"{opts.max_other:g}% of a core meanwhile.")
    if results and not any(r.counted for r in results):
        for r in results:
            r.contended = False
        notes.append("WARNING: no round was free of other load; the figures above come from "
                     "contended rounds and are unreliable.")
    elif clean < opts.runs:
        notes.append(f"Only {clean} of {opts.runs} rounds were free of other load "
                     f"within {max_rounds} rounds.")
    return results, notes


def workload_report(servers: list[Server], results: list[RunResult], notes: list[str], *,
                    name: str, title: str, params: str, baseline: str) -> WorkloadReport:
    targets = [(s.key, s.label) for s in servers]
    return WorkloadReport(
        name=name, title=title, params=params,
        summaries=summarize(results, targets, baseline), results=results,
        labels=dict(targets), notes=notes,
    )


def run_alternating(servers: list[Server], *, tools: Tools, url_path: str, script: Path,
                    data: bytes, opts, baseline: str, name: str, title: str,
                    params: str) -> WorkloadReport:
    """Start ``servers``, check them, then time them A B C A B C ... (``time_rounds``).
    All servers are stopped before returning, whatever happens."""
    try:
        for s in servers:
            s.start()
        for s in servers:
            s.wait_healthy(timeout=opts.start_timeout)
            verify_ranges(s.port, url_path, data, range_len=opts.range_size,
                          seed=opts.seed, count=3, label=s.label)
            print(f"bench[{name}]: {s.label} on port {s.port}: 3 random ranges verified",
                  file=sys.stderr)
        results, notes = time_rounds(servers, tools=tools, opts=opts, url_path=url_path,
                                     script=script, name=name)
    finally:
        for s in servers:
            s.stop()
    return workload_report(servers, results, notes, name=name, title=title, params=params,
                           baseline=baseline)
