"""The fault origin: a real HTTP server that misbehaves on purpose, for the proxy's tests.

A real aiohttp server, run on its own event loop in a background thread, so a
test (sync or async) can change objects and faults and read the request log
synchronously while the proxy under test talks to it over TCP::

    with FaultOrigin() as origin:
        origin.set_object("a.bin", data, cache_control="max-age=60")
        origin.set_fault("a.bin", reset_after=1000)
        ...  # point the proxy at origin.url, make requests
        origin.count_slice_fetches("a.bin", 65536)  # Counter{slice index: fetches}

What it serves, for ``GET``/``HEAD /<name>`` (the query string is ignored for the
lookup but recorded): the object's bytes with a strong ``ETag`` of
``"v<version>-<name>"`` (or the explicit one given to :meth:`set_object`),
``Last-Modified``, ``Content-Type``, ``Accept-Ranges: bytes``, ``Cache-Control``
when configured; ``If-Match`` (412), ``If-None-Match`` / ``If-Modified-Since``
(304), ``If-Range`` (strong comparison); a single ``Range`` (``a-b``, ``a-``,
``-n``) gets a 206 with ``Content-Range``, an unsatisfiable one a 416 with
``Content-Range: bytes */len``; several ranges get a plain 200 (allowed by
RFC 9110). Unknown names are 404.

Other methods, so pass-through can be checked end to end (request bodies are
read as a stream and their progress is visible in :attr:`body_progress`):
``PUT`` stores the body as the object's new bytes (201 new / 204 replaced),
``POST``/``PATCH`` answer 200 with a JSON digest of what was received (the
object is unchanged), ``DELETE`` removes the object (204 / 404), ``OPTIONS``
answers 204 with ``Allow``.

Faults (per object, changed at runtime with :meth:`set_fault`; see
:class:`Faults`) apply to ``GET`` (``delay``, ``fail_status`` also to the
other methods).
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import re
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Iterator, Sequence

from aiohttp import web
from multidict import CIMultiDict

__all__ = ["FaultOrigin", "Faults", "Obj", "Record", "parse_single_range"]

_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def parse_single_range(value: str | None, size: int | None = None) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` -> inclusive ``(first, last)``.

    Without ``size`` only the ``a-b`` form can be resolved (``a-`` gives
    ``(a, None)``-like results are not representable, so None is returned).
    With ``size`` the last position is clipped to ``size - 1``; an
    unsatisfiable range returns ``(first, -1)`` (first > last).
    None for anything else (several ranges, garbage).
    """
    if not value:
        return None
    m = _RANGE_RE.match(value)
    if not m:
        return None
    a, b = m.group(1), m.group(2)
    if a == "" and b == "":
        return None
    if a == "":  # suffix
        if size is None:
            return None
        n = int(b)
        if n == 0:
            return (size, -1)
        return (max(0, size - n), size - 1)
    first = int(a)
    if b == "":
        if size is None:
            return None
        return (first, size - 1) if first < size else (first, -1)
    last = int(b)
    if last < first:
        return None
    if size is not None:
        if first >= size:
            return (first, -1)
        last = min(last, size - 1)
    return (first, last)


def _http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def _parse_http_date(value: str) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _client_cert_names(request: web.BaseRequest) -> tuple[str, ...]:
    peer = request.transport.get_extra_info("peercert") if request.transport is not None else None
    return tuple(v for k, v in (peer or {}).get("subjectAltName", ()) if k == "DNS")


def _etag_list(value: str) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()]


@dataclass
class Faults:
    """What to do wrong when answering a ``GET`` for one object."""

    ignore_range: bool = False  # answer 200 with the whole body
    fail_status: int | None = None  # answer with this status and a small body
    fail_body: bytes | None = None  # the body of a fail_status answer (default: a short text)
    reset_after: int | None = None  # headers + N body bytes, then TCP RST
    reset_before_status: bool = False  # TCP RST before any byte of the answer (not even the status line)
    short_body: int | None = None  # right Content-Length, only N bytes, clean close
    shift_content_range: int = 0  # 206 for [a+K, b+K] (clipped) instead of [a, b]
    delay: float = 0.0  # seconds before the response headers
    answer_delay: float = 0.0  # seconds between deciding a GET's answer (304, 200, 206) and sending it
    chunk_delay: float = 0.0  # seconds between body chunks
    chunk_size: int = 64 * 1024
    change_etag_every_request: bool = False  # same bytes, a new ETag on each answer
    authorization: str | None = None  # GET/HEAD without exactly this Authorization: 401 + WWW-Authenticate
    vary: str | None = None  # answers vary on this request field: "Vary: <it>", its value in X-Variant
    # If set, the "breaking" faults (ignore_range, fail_status, reset_after,
    # short_body, shift_content_range, reset_before_status) apply to this many more GETs only and
    # are then cleared; delays and change_etag_every_request stay.
    fault_times: int | None = None

    def breaking(self) -> bool:
        return bool(
            self.ignore_range
            or self.fail_status is not None
            or self.reset_after is not None
            or self.reset_before_status
            or self.short_body is not None
            or self.shift_content_range
        )


_FAULT_NAMES = {f.name for f in fields(Faults)}


@dataclass
class Obj:
    name: str
    data: bytes
    version: int = 1
    explicit_etag: str | None = None
    cache_control: str | None = None
    content_type: str = "application/octet-stream"
    last_modified: float = 0.0
    faults: Faults = field(default_factory=Faults)
    etag_counter: int = 0
    extra_headers: tuple[tuple[str, str], ...] = ()  # sent with every answer (repeats kept)
    validators: bool = True  # False: no ETag and no Last-Modified (nothing tells versions apart)

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def etag(self) -> str:
        """The current ETag (without the per-request variation)."""
        if self.explicit_etag is not None:
            return self.explicit_etag
        return f'"v{self.version}-{self.name}"'


@dataclass
class Record:
    """One request the origin received. Iterates as the 5-tuple
    ``(method, path, range, if_none_match, status)``."""

    method: str
    path: str
    range: str | None
    if_none_match: str | None
    status: int | None = None
    query: str = ""
    raw_path: str = ""  # the request target byte for byte, as it arrived
    name: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    # Every field line as it came, repeats included (``headers`` keeps one value per name).
    header_lines: tuple[tuple[str, str], ...] = ()
    size: int | None = None  # object size when answered
    span: tuple[int, int] | None = None  # inclusive byte span of the body sent
    etag: str | None = None  # ETag sent
    fault: str | None = None  # fault applied, if any
    body_len: int = 0  # request body bytes received
    body_sha256: str | None = None
    client_cert: tuple[str, ...] = ()  # DNS names of the TLS client certificate shown (HTTPS origin)
    completed: bool = False  # the response was written completely (or deliberately cut)
    t_start: float = 0.0
    t_end: float | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.method, self.path, self.range, self.if_none_match, self.status))


class FaultOrigin:
    """The fault-injecting origin. ``with FaultOrigin() as origin: origin.url``; with
    ``ssl_context`` (a server context) it speaks HTTPS and ``url`` is ``https://``."""

    def __init__(self, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.ssl_context = ssl_context
        self.port: int | None = None
        self._objects: dict[str, Obj] = {}
        self._records: list[Record] = []
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        # name -> request body bytes received so far by the request in progress
        self.body_progress: dict[str, int] = {}
        self._clock_base = 0.0

    # --- lifecycle ---------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self.port is not None, "origin not started"
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def url_for(self, name: str) -> str:
        return f"{self.url}/{name}"

    def start(self) -> "FaultOrigin":
        self._thread = threading.Thread(target=self._run, name="fault-origin", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault origin did not start within 10 s")
        if self._start_error is not None:
            raise RuntimeError("fault origin failed to start") from self._start_error
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._runner is not None and loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop)
            try:
                fut.result(10)
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> "FaultOrigin":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._setup())
        except BaseException as e:  # noqa: BLE001
            self._start_error = e
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _setup(self) -> None:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        site = web.SockSite(runner, sock, ssl_context=self.ssl_context)
        await site.start()
        self._runner = runner

    # --- objects and faults (call from any thread) --------------------------------

    def set_object(
        self,
        name: str,
        data: bytes,
        etag: str | None = None,
        cache_control: str | None = None,
        content_type: str = "application/octet-stream",
        headers: Sequence[tuple[str, str]] = (),
        validators: bool = True,
        **faults: Any,
    ) -> Obj:
        """Create or replace an object. New bytes bump the version (new ETag,
        newer Last-Modified) unless ``etag`` is given explicitly; ``headers`` are
        sent with every answer for it; ``faults`` are :class:`Faults` fields set on
        the object (others are kept)."""
        name = name.lstrip("/")
        data = bytes(data)
        if etag is not None and not (etag.startswith('"') or etag.startswith('W/"')):
            etag = f'"{etag}"'
        with self._lock:
            old = self._objects.get(name)
            now = float(int(time.time()))
            if old is None:
                obj = Obj(name=name, data=data, explicit_etag=etag, cache_control=cache_control,
                          content_type=content_type, last_modified=now - 60)
            else:
                obj = old
                if old.data != data:
                    obj.version += 1
                    # strictly newer, even within the same second
                    obj.last_modified = max(now, old.last_modified + 1)
                    obj.data = data
                obj.explicit_etag = etag
                obj.cache_control = cache_control
                obj.content_type = content_type
            obj.extra_headers = tuple(headers)
            obj.validators = validators
            self._objects[name] = obj
            if faults:
                self.set_fault(name, **faults)
            return obj

    def get_object(self, name: str) -> Obj:
        with self._lock:
            return self._objects[name.lstrip("/")]

    def delete_object(self, name: str) -> None:
        with self._lock:
            self._objects.pop(name.lstrip("/"), None)

    def set_fault(self, name: str, **faults: Any) -> None:
        unknown = set(faults) - _FAULT_NAMES
        if unknown:
            raise TypeError(f"unknown faults: {sorted(unknown)}")
        with self._lock:
            obj = self._objects[name.lstrip("/")]
            obj.faults = replace(obj.faults, **faults)

    def clear_faults(self, name: str) -> None:
        with self._lock:
            self._objects[name.lstrip("/")].faults = Faults()

    # --- request log ---------------------------------------------------------------

    @property
    def requests(self) -> list[Record]:
        with self._lock:
            return list(self._records)

    def requests_for(self, name: str) -> list[Record]:
        name = name.lstrip("/")
        return [r for r in self.requests if r.name == name]

    def range_requests_for(self, name: str) -> list[Record]:
        return [r for r in self.requests_for(name) if r.method == "GET" and r.range is not None]

    def gets_for(self, name: str) -> list[Record]:
        return [r for r in self.requests_for(name) if r.method == "GET"]

    def count_slice_fetches(self, name: str, slice_size: int) -> Counter[int]:
        """For each slice index, how many upstream GET responses covered it.

        A 206 covers the span of the Range header the client (the proxy) sent,
        clipped to the object; a 200 covers the whole object; other statuses
        (304, 4xx, 5xx) cover nothing.
        """
        counts: Counter[int] = Counter()
        for r in self.gets_for(name):
            if r.status not in (200, 206) or not r.size:
                continue
            if r.status == 206:
                span = parse_single_range(r.range, r.size)
                if span is None or span[0] > span[1]:
                    span = r.span
            else:
                span = (0, r.size - 1)
            if span is None or span[0] > span[1]:
                continue
            for i in range(span[0] // slice_size, span[1] // slice_size + 1):
                counts[i] += 1
        return counts

    def take_requests(self) -> list[Record]:
        """The request log so far, cleared in the same step (none is lost between the two): a long
        run (the soak, the fuzzer) harvests its faults without the log growing."""
        with self._lock:
            taken, self._records = self._records, []
            return taken

    def reset_counters(self) -> None:
        with self._lock:
            self._records.clear()

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> bool:
        """Poll ``predicate`` until true or ``timeout``; returns its last value."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return bool(predicate())
            time.sleep(interval)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until every recorded request has been answered completely."""
        return self.wait_until(lambda: all(r.completed for r in self.requests), timeout)

    # --- the server ------------------------------------------------------------------

    def _headers_for(self, obj: Obj, etag: str) -> CIMultiDict[str]:
        h: CIMultiDict[str] = CIMultiDict({
            "ETag": etag,
            "Last-Modified": _http_date(obj.last_modified),
            "Content-Type": obj.content_type,
            "Accept-Ranges": "bytes",
        })
        if obj.cache_control is not None:
            h["Cache-Control"] = obj.cache_control
        if not obj.validators:
            del h["ETag"], h["Last-Modified"]
        h.extend(obj.extra_headers)
        return h

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        name = request.path.lstrip("/")
        rec = Record(
            method=request.method,
            path=request.path,
            range=request.headers.get("Range"),
            if_none_match=request.headers.get("If-None-Match"),
            query=request.query_string,
            raw_path=request.raw_path,
            name=name,
            headers=dict(request.headers),
            header_lines=tuple(request.headers.items()),
            client_cert=_client_cert_names(request),
            t_start=time.monotonic(),
        )
        with self._lock:
            self._records.append(rec)
        try:
            return await self._dispatch(request, rec)
        finally:
            rec.completed = True
            rec.t_end = time.monotonic()

    async def _dispatch(self, request: web.BaseRequest, rec: Record) -> web.StreamResponse:
        name = rec.name
        with self._lock:
            obj = self._objects.get(name)
            faults = replace(obj.faults) if obj is not None else Faults()
        if faults.delay:
            await asyncio.sleep(faults.delay)
        if request.method in ("GET", "HEAD"):
            if name == "healthz":
                rec.status = 200
                return web.Response(text="ok")
            if obj is None:
                rec.status = 404
                return web.Response(status=404, text="not found\n")
            if faults.authorization is not None and request.headers.get("Authorization") != faults.authorization:
                rec.status = 401
                return web.Response(status=401, text="who are you?\n",
                                    headers={"WWW-Authenticate": 'Bearer realm="media"'})
            return await self._get(request, rec, obj, faults)
        if faults.fail_status is not None and obj is not None:
            await self._read_body(request, rec)
            rec.status = faults.fail_status
            rec.fault = f"fail_status={faults.fail_status}"
            return web.Response(status=faults.fail_status, text=f"injected {faults.fail_status}\n")
        if request.method == "PUT":
            body = await self._read_body(request, rec)
            existed = obj is not None
            self.set_object(name, body, content_type=request.headers.get("Content-Type", "application/octet-stream"))
            rec.status = 204 if existed else 201
            return web.Response(status=rec.status)
        if request.method in ("POST", "PATCH"):
            body = await self._read_body(request, rec)
            rec.status = 200
            return web.json_response(
                headers=obj.extra_headers if obj is not None else None,
                data={
                    "method": request.method,
                    "name": name,
                    "query": request.query_string,
                    "length": len(body),
                    "sha256": hashlib.sha256(body).hexdigest(),
                    "content_type": request.headers.get("Content-Type"),
                    "transfer_encoding": request.headers.get("Transfer-Encoding"),
                }
            )
        if request.method == "DELETE":
            await self._read_body(request, rec)
            with self._lock:
                existed = self._objects.pop(name, None) is not None
            rec.status = 204 if existed else 404
            return web.Response(status=rec.status)
        if request.method == "OPTIONS":
            rec.status = 204
            return web.Response(status=204, headers={"Allow": "GET, HEAD, PUT, POST, PATCH, DELETE, OPTIONS"})
        rec.status = 405
        return web.Response(status=405, headers={"Allow": "GET, HEAD, PUT, POST, PATCH, DELETE, OPTIONS"})

    async def _read_body(self, request: web.BaseRequest, rec: Record) -> bytes:
        h = hashlib.sha256()
        parts: list[bytes] = []
        n = 0
        self.body_progress[rec.name] = 0
        async for chunk in request.content.iter_any():
            parts.append(chunk)
            h.update(chunk)
            n += len(chunk)
            self.body_progress[rec.name] = n
        rec.body_len = n
        rec.body_sha256 = h.hexdigest()
        return b"".join(parts)

    def _consume_fault(self, obj: Obj) -> None:
        with self._lock:
            f = obj.faults
            if f.fault_times is None:
                return
            left = f.fault_times - 1
            if left <= 0:
                obj.faults = Faults(
                    delay=f.delay,
                    answer_delay=f.answer_delay,
                    chunk_delay=f.chunk_delay,
                    chunk_size=f.chunk_size,
                    change_etag_every_request=f.change_etag_every_request,
                )
            else:
                obj.faults = replace(f, fault_times=left)

    async def _get(self, request: web.BaseRequest, rec: Record, obj: Obj, faults: Faults) -> web.StreamResponse:
        with self._lock:
            data = obj.data
            if faults.change_etag_every_request:
                obj.etag_counter += 1
                base = obj.etag
                etag = base[:-1] + f'-r{obj.etag_counter}"'
            else:
                etag = obj.etag
            headers = self._headers_for(obj, etag)
            if faults.vary is not None:
                headers["Vary"] = faults.vary
                if faults.vary != "*":
                    headers["X-Variant"] = request.headers.get(faults.vary, "-")
            last_modified = obj.last_modified
        size = len(data)
        rec.size = size
        rec.etag = etag
        is_get = request.method == "GET"
        breaking = is_get and faults.breaking()
        if breaking:
            self._consume_fault(obj)

        if faults.fail_status is not None and (is_get or request.method == "HEAD"):
            rec.status = faults.fail_status
            rec.fault = f"fail_status={faults.fail_status}"
            body = faults.fail_body if faults.fail_body is not None else f"injected {faults.fail_status}\n".encode()
            return web.Response(status=faults.fail_status, body=body, headers=obj.extra_headers)

        if breaking and faults.reset_before_status:
            rec.status = None
            rec.fault = "reset_before_status"
            await self._cut(request, "reset")
            return web.Response(status=500)  # never sent: the connection is gone

        # Preconditions, RFC 9110 section 13.2.2 order.
        if_match = request.headers.get("If-Match")
        if if_match is not None:
            tags = _etag_list(if_match)
            if "*" not in tags and etag not in tags:
                rec.status = 412
                return web.Response(status=412, headers={"ETag": etag})
        inm = request.headers.get("If-None-Match")
        if inm is not None:
            tags = [t[2:] if t.startswith("W/") else t for t in _etag_list(inm)]
            if "*" in tags or etag in tags:
                rec.status = 304
                if faults.answer_delay:  # the answer was decided before: a change meanwhile does not alter it
                    await asyncio.sleep(faults.answer_delay)
                return web.Response(status=304, headers={k: v for k, v in headers.items() if k != "Content-Type"})
        else:
            ims = request.headers.get("If-Modified-Since")
            ims_ts = _parse_http_date(ims) if ims else None
            if ims_ts is not None and int(last_modified) <= ims_ts:
                rec.status = 304
                return web.Response(status=304, headers={k: v for k, v in headers.items() if k != "Content-Type"})

        span: tuple[int, int] | None = None
        range_header = request.headers.get("Range") if is_get else None
        if range_header is not None and not (breaking and faults.ignore_range):
            use_range = True
            if_range = request.headers.get("If-Range")
            if if_range is not None:
                if if_range.startswith('"'):
                    use_range = if_range == etag
                else:
                    d = _parse_http_date(if_range)
                    use_range = d is not None and int(last_modified) == d
            if use_range:
                span = parse_single_range(range_header, size)
                if span is not None and span[0] > span[1]:
                    rec.status = 416
                    return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        if span is not None:
            first, last = span
            if breaking and faults.shift_content_range:
                k = faults.shift_content_range
                first = min(max(0, first + k), size - 1)
                last = min(max(0, last + k), size - 1)
                rec.fault = f"shift_content_range={k}"
            status = 206
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        else:
            first, last = 0, size - 1
            status = 200
            if breaking and faults.ignore_range and range_header is not None:
                rec.fault = "ignore_range"
        length = last - first + 1 if size else 0
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = length
        rec.status = status
        rec.span = (first, last) if length else None
        if faults.answer_delay:
            await asyncio.sleep(faults.answer_delay)
        try:
            await resp.prepare(request)
        except ConnectionError:  # the client gave up first (e.g. its read timeout during a delay)
            rec.fault = (rec.fault or "") + " client-gone"
            return resp
        if not is_get or length == 0:
            return resp

        cut_after: int | None = None
        mode = ""
        if breaking and faults.reset_after is not None:
            cut_after, mode = min(faults.reset_after, length), "reset"
        elif breaking and faults.short_body is not None:
            cut_after, mode = min(faults.short_body, length), "short"
        if mode:
            rec.fault = f"{'reset_after' if mode == 'reset' else 'short_body'}={cut_after}"
        send_len = length if cut_after is None else cut_after

        view = memoryview(data)
        pos = first
        end = first + send_len
        step = max(1, faults.chunk_size)
        try:
            while pos < end:
                n = min(step, end - pos)
                await resp.write(view[pos : pos + n])
                pos += n
                if faults.chunk_delay and pos < end:
                    await asyncio.sleep(faults.chunk_delay)
        except (ConnectionError, RuntimeError):
            rec.fault = (rec.fault or "") + " client-gone"
            return resp
        if mode:
            await self._cut(request, mode)
        return resp

    async def _cut(self, request: web.BaseRequest, mode: str) -> None:
        transport = request.transport
        if transport is None:
            return
        # Let what was written reach the kernel (and the peer) first.
        deadline = time.monotonic() + 2.0
        while transport.get_write_buffer_size() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        if mode == "reset":
            sock = transport.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            transport.abort()
        else:
            transport.close()


if __name__ == "__main__":  # manual poking: python -m tests.support.fault_origin
    import os

    with FaultOrigin() as o:
        o.set_object("a.bin", os.urandom(300_000))
        print(o.url_for("a.bin"), flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
