"""Judging one connection's answers: right bytes, consistent ranges, and what must be explained.

Bytes and Content-Range are checked at once against the object's data. A 5xx, a body cut short
or a request left unanswered cannot be judged yet: each becomes an :class:`Event` to be matched,
at the end of the run, against the faults the origin applied to that object in that time
window (its log lags behind). Known proxy bugs are counted under a name instead of failing the
run when that name is in ``tolerate``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from hardening.inputs import ConnectionInput, RequestInput
from hardening.wire import Exchange, Response, multipart_parts, parse_content_range

__all__ = ["Event", "Failure", "Judge", "KNOWN_BUGS"]

# Known proxy weaknesses, tolerated with --tolerate NAME until fixed (the fuzz's other finds were fixed:
# http09-answered, version-echoed, half-close-drop are failures again).
KNOWN_BUGS = {
    "pooled-reset": "a 5xx (or a cut or dropped answer) to an idempotent request for any object right after the "
                    "origin reset a connection once its answer was whole: reused from the pool, not retried",
}


def _request_version(raw: bytes) -> bytes:
    """The last word of a request's first line (its HTTP-version when well formed)."""
    first = raw.split(b"\n", 1)[0].rstrip(b"\r")
    return first.rsplit(b" ", 1)[-1] if b" " in first else b""


@dataclass
class Failure:
    kind: str
    detail: str
    raw: bytes  # the connection's input (cut to a few KiB)
    half_close: bool = False

    def show(self) -> str:
        raw = self.raw if len(self.raw) <= 1500 else self.raw[:1500] + b"...(%d bytes)" % len(self.raw)
        return f"[{self.kind}] {self.detail}\n    input{' (then SHUT_WR)' if self.half_close else ''}: {raw!r}"


@dataclass
class Event:
    """Something only an injected fault excuses: a 5xx, a cut body, a dropped request."""

    kind: str
    name: str | None
    t0: float
    t1: float
    detail: str
    raw: bytes
    half_close: bool
    method: str = "GET"


# RFC 9110 §9.2.2: what a proxy may send again after a connection failed under it.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


def _resolve(spans: list[tuple[int | None, int | None]], size: int) -> list[tuple[int, int]]:
    """The satisfiable ranges of a well-formed Range, as inclusive (first, last) (RFC 9110 14.1.2)."""
    out = []
    for a, b in spans:
        if a is None:
            if b:
                out.append((max(0, size - b), size - 1))
        elif a < size:
            out.append((a, size - 1 if b is None else min(b, size - 1)))
    return [(x, y) for x, y in out if x <= y]


@dataclass
class Judge:
    data: dict[str, bytes]
    tolerate: frozenset[str] = frozenset()
    failures: list[Failure] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    tolerated: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)  # allowed outcomes worth a figure
    bytes_checked: int = 0

    def _fail(self, kind: str, detail: str, conn: ConnectionInput) -> None:
        if kind in self.tolerate:
            self.tolerated[kind] += 1
            return
        self.failures.append(Failure(kind, detail, conn.raw[:8192], conn.half_close))

    def _event(self, kind: str, req: RequestInput, ex: Exchange, t1: float, detail: str,
               conn: ConnectionInput) -> None:
        self.events.append(Event(kind, req.name, ex.t_start, t1, detail, conn.raw[:8192], conn.half_close, req.method))

    def judge(self, conn: ConnectionInput, ex: Exchange) -> None:
        """Check every answer of one connection; queue what a fault may excuse."""
        reqs = conn.requests
        for req, resp in zip(reqs, ex.responses):
            self.statuses[f"{resp.status // 100}xx"] += 1
            self._answer(conn, req, resp, ex)
        has09 = any(r.version09 for r in reqs)
        if ex.malformed is not None:
            idx = len(ex.responses)
            if idx < len(reqs) and reqs[idx].version09:
                self._fail("http09-answered", f"request {idx}: {ex.malformed}", conn)
            elif not has09 or "http09-answered" not in self.tolerate:
                self._fail("malformed-response", f"after {idx} answers: {ex.malformed}", conn)
        if len(ex.responses) >= len(reqs):
            return
        idx = len(ex.responses)
        if ex.timed_out:
            if any(r.upgrade for r in reqs[:idx + 1]):
                # aiohttp stops parsing after an Upgrade it hands on, even when the answer declines it
                self.notes["timeout after an Upgrade/Expect request"] += 1
            elif conn.valid or not any(r.incomplete for r in reqs):
                self._fail("hang", f"no answer to request {idx} within the timeout "
                                   f"({len(ex.responses)} answered; valid input: {conn.valid})", conn)
            else:
                self.notes["timeout on an incomplete input"] += 1
            return
        if not conn.valid:
            self.notes["closed on invalid input"] += 1
            return
        last = ex.responses[-1] if ex.responses else None
        if last is not None and (last.announces_close or last.status >= 500 or not last.complete):
            self.notes["closed after an announced close, a 5xx or a cut"] += 1
            return
        if conn.half_close:
            self._fail("half-close-drop", f"{len(reqs) - idx} of {len(reqs)} requests unanswered after SHUT_WR", conn)
            return
        self._event("dropped", reqs[idx], ex, ex.t_end, f"request {idx} of {len(reqs)} unanswered, "
                    f"connection closed ({ex.send_error or 'no send error'})", conn)

    def _answer(self, conn: ConnectionInput, req: RequestInput, resp: Response, ex: Exchange) -> None:
        if req.version09 and resp.status < 400:
            self._fail("http09-answered", f"{resp.status} to a request line without a version", conn)
        elif resp.version not in ("HTTP/1.1", "HTTP/1.0") and not req.version09:
            self._fail("version-echoed", f"{resp.version} {resp.status} status line", conn)
        if resp.status == 504 and req.only_if_cached:
            self.notes["504 to only-if-cached"] += 1
        elif resp.status == 505 and _request_version(req.raw) not in (b"HTTP/1.0", b"HTTP/1.1"):
            self.notes["505 to a request of another HTTP version"] += 1  # RFC 9110 15.6.6
        elif resp.status >= 500:
            self._event("5xx", req, ex, resp.t_done, f"{resp.status} for {req.name} ({req.method})", conn)
        if not resp.complete and conn.valid:
            self._event("cut", req, ex, resp.t_done, f"{resp.status} body cut at {len(resp.body)} bytes", conn)
        if req.name not in self.data or req.method not in ("GET", "HEAD") or resp.status not in (200, 206, 416):
            return
        data = self.data[req.name or ""]
        size = len(data)
        enc = (resp.header("content-encoding") or "identity").lower()
        if enc != "identity":
            self._fail("encoded", f"Content-Encoding {enc} nobody asked for", conn)
            return
        if resp.status == 416:
            cr = resp.header("content-range")
            if cr is not None and cr.replace(" ", "") != f"bytes*/{size}":
                self._fail("wrong-416", f"416 with Content-Range {cr!r}, size is {size}", conn)
            return
        if resp.status == 200:
            if req.method == "HEAD":
                cl = resp.header("content-length")
                if cl is not None and cl != str(size):
                    self._fail("wrong-length", f"HEAD 200 Content-Length {cl}, size {size}", conn)
                return
            self._bytes(conn, req, resp.body, 0, size - 1, size, resp.complete, "200")
            return
        if not req.has_range:
            self._fail("unasked-206", "206 to a request without Range", conn)
            return
        if req.method == "HEAD":
            span = parse_content_range(resp.header("content-range"))
            if span is not None and (span[2] != size or not span[0] <= span[1] < size):
                self._fail("bad-content-range", f"HEAD 206 Content-Range {resp.header('content-range')!r}, "
                                                f"size {size}", conn)
            return
        parts = multipart_parts(resp)
        if parts is None:
            if "multipart" in (resp.header("content-type") or "").lower():
                if resp.complete:
                    self._fail("bad-multipart", "a multipart 206 that does not parse", conn)
                return
            parts = [(resp.header("content-range"), resp.body)]
        elif not parts and resp.complete:
            self._fail("bad-multipart", "a multipart 206 without parts", conn)
        hull = None
        if req.spans is not None:
            ok = _resolve(req.spans, size)
            hull = (min(a for a, _ in ok), max(b for _, b in ok)) if ok else None
        for crange, body in parts:
            span = parse_content_range(crange)
            if span is None or span[2] != size or not (0 <= span[0] <= span[1] < size):
                self._fail("bad-content-range", f"206 part Content-Range {crange!r}, size {size}", conn)
                continue
            a, b, _ = span
            if req.spans is not None and (hull is None or a < hull[0] or b > hull[1]):
                self._fail("unasked-range", f"206 part {a}-{b} outside the ranges asked {req.spans[:6]}"
                                            f"{'...' if len(req.spans) > 6 else ''} (size {size})", conn)
            if req.method == "GET":
                self._bytes(conn, req, body, a, b, size, resp.complete, f"206 part {a}-{b}")

    def _bytes(self, conn: ConnectionInput, req: RequestInput, body: bytes, a: int, b: int, size: int,
               complete: bool, what: str) -> None:
        want = self.data[req.name or ""][a:b + 1]
        self.bytes_checked += len(body)
        if complete and len(body) != len(want):
            self._fail("wrong-bytes", f"{req.name} {what}: {len(body)} bytes, {len(want)} expected (size {size})", conn)
        elif body != want[:len(body)]:
            at = next(i for i, (x, y) in enumerate(zip(body, want)) if x != y) if len(body) <= len(want) else len(want)
            self._fail("wrong-bytes", f"{req.name} {what}: differs from byte {a + at} on", conn)

    def settle(self, explains: Callable[[str | None, float, float], bool],
               reset_nearby: Callable[[float, float], bool]) -> None:
        """Turn each queued event into a failure unless an injected fault explains it: one on
        its object, or an origin's reset of a kept-alive connection (which the proxy may have
        pooled again: a known weakness, counted apart, see README "Fuzzing")."""
        for ev in self.events:
            if explains(ev.name, ev.t0, ev.t1):
                self.notes[f"{ev.kind} explained by an injected fault"] += 1
                continue
            if reset_nearby(ev.t0, ev.t1):
                if ev.method not in IDEMPOTENT:  # not to be sent twice: the 502 is the cautious answer
                    self.notes[f"{ev.kind} to a non-idempotent request next to an origin connection reset"] += 1
                elif "pooled-reset" in self.tolerate:
                    self.tolerated["pooled-reset"] += 1
                else:
                    self.failures.append(Failure("pooled-reset", f"{ev.detail}, next to an origin reset of a "
                                                 "connection after a whole answer", ev.raw, ev.half_close))
                continue
            self.failures.append(Failure(f"unexplained-{ev.kind}", ev.detail, ev.raw, ev.half_close))
        self.events = []

