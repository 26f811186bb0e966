"""A client's GET or HEAD -> 200 / 206 / multipart 206 / 304 / 416 from slices, or a pass-through.

Decisions come from the pure modules (``proxy.http.ranges``, ``proxy.core``);
bytes come from ``Engine.stream`` (or the held files of a hit) and are sent by
``proxy.web.sending``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import AsyncGenerator, Callable

from aiohttp import web
from multidict import CIMultiDict

from proxy.cache.engine import Engine
from proxy.cache.metadata import META_MEMORY
from proxy.cache.pieces import FilePiece, MetaLease, RequestTally, part_size
from proxy.core.conditions import preconditions, request_directives
from proxy.core.fields import Fields, cache_status, not_modified_fields, replay, via
from proxy.core.forwarding import Forwarded, authorized, origin_fields
from proxy.core.origins import OriginConfig
from proxy.core.representation import ObjectMeta, Sharing
from proxy.core.signatures import signature_of
from proxy.core.slices import Unit, first_units
from proxy.core.variants import ANY, target_url
from proxy.http.errors import ProxyError, RangeNotSatisfiable, UpstreamStatus, VersionChanged
from proxy.http.ranges import (
    Conflict,
    Ignore,
    RangeOutcome,
    Satisfiable,
    Span,
    Unsatisfiable,
    evaluate,
    format_content_range,
    if_range_matches,
    multipart,
    select_range_header,
)
from proxy.http.target import split_target
from proxy.web import answers
from proxy.web.passthrough import asker, passthrough
from proxy.web.sending import Reply, ResponseInfo, StreamedResponse, send_files, send_stream
from proxy.web.sendfile import socket_of

__all__ = ["ProxyHandler", "ResponseInfo", "INFO_KEY"]
INFO_KEY = "rangeproxy"  # request[INFO_KEY] -> ResponseInfo, for the access log and metrics
FORWARDED_KEY = "rangeproxy.forwarded"  # request[FORWARDED_KEY] -> its Forwarded, once built

log = logging.getLogger("rangeproxy.handlers")
# A hit up to this size is read from its files and sent with its headers in one write:
# cheaper than a header write, a dup, a sendfile and a close per piece (w4: +29%). Above
# it the extra copy costs more than those calls (64 KiB ranges: -15%).
SMALL_HIT = 32 * 1024
# How long a signed URL the origin accepted is answered from the cache when it does not say
# when it expires, and at most.
ACCEPTED_FOR = 300.0
ACCEPTED_MAX = 7 * 86400.0


class _Restart(Exception):
    """Start the response over: the object changed before its first byte was sent."""


Observer = Callable[[web.Request, web.StreamResponse | None, ResponseInfo], None]


def stored_answer_fields(meta: ObjectMeta) -> list[tuple[str, str]]:
    """What every answer from the cache carries of an object: the origin's stored fields
    (RFC 9111 §4) and the proxy's hop in Via; Content-Type is set by the framing, Age per answer."""
    out: CIMultiDict[str] = CIMultiDict(replay(meta.headers, drop=("content-type",)))
    out["Accept-Ranges"] = "bytes"
    out["Via"] = via(meta.headers)
    return list(out.items())


class AnswerFields:
    """:func:`stored_answer_fields` of the objects answered lately, worked out once per version
    (as many as the engine keeps metadata of in memory: a catalogue answered at random misses
    no more here than there)."""

    LIMIT = META_MEMORY

    def __init__(self) -> None:
        self._made: dict[tuple[str, str, float], list[tuple[str, str]]] = {}

    def base(self, meta: ObjectMeta, age: int) -> CIMultiDict[str]:
        """The fields of an answer about to be framed (its own dict: the caller adds to it)."""
        key = (meta.url, meta.validator, meta.stored_at)  # a revalidation (new fields) moves stored_at
        items = self._made.get(key)
        if items is None:
            if len(self._made) >= self.LIMIT:
                self._made.clear()
            items = self._made[key] = stored_answer_fields(meta)
        out: CIMultiDict[str] = CIMultiDict(items)
        out["Age"] = str(age)  # RFC 9111 §5.1
        return out


def frame(lease: MetaLease, outcome: Ignore | Satisfiable, base: CIMultiDict[str]) -> Reply:
    """Status, headers and body framing for a satisfiable (or ignored) Range (``base`` becomes its headers)."""
    meta = lease.meta
    ctype = meta.content_type or "application/octet-stream"
    headers = base
    if isinstance(outcome, Ignore):
        whole: tuple[Span, ...] = (Span(0, meta.length),) if meta.length else ()
        headers["Content-Type"] = ctype
        return Reply(lease, 200, headers, meta.length, whole, whole)
    spans = outcome.spans
    if len(spans) == 1:
        headers["Content-Type"] = ctype
        headers["Content-Range"] = format_content_range(spans[0], meta.length)
        return Reply(lease, 206, headers, spans[0].size, spans, spans)
    # RFC 9110 §14.6: each part says what its bytes are; an encoding belongs to the parts'
    # bytes (ranges apply to the encoded representation, §14.1.2), not to the multipart body.
    encoding = [("Content-Encoding", v) for v in headers.popall("Content-Encoding", [])]
    mp = multipart(spans, meta.length, ctype, part_fields=encoding)
    headers["Content-Type"] = mp.content_type
    return Reply(lease, 206, headers, mp.content_length, mp.pieces, spans)


class ProxyHandler:
    """The GETs and HEADs of one origin (its engine), and the other methods passed through to it."""

    def __init__(self, engine: Engine, observer: Observer | None = None, origin: OriginConfig | None = None) -> None:
        self.engine = engine
        self.observer = observer
        self.settings = engine.settings
        self.origin = origin if origin is not None else engine.upstream.origin
        self.base = self.origin.primary
        self._keyed = not self.origin.cache_key.identity
        self._signed = "signed-urls" in self.origin.cache_key.presets
        self._bypassing = bool(self.origin.bypass_paths or self.origin.bypass_headers)
        self.fields = AnswerFields()

    def cache_key(self, target: str) -> str:
        """The URL an object is stored under: the first upstream's, with the origin's query rule."""
        return self.base + (self.origin.cache_key.key_target(target) if self._keyed else target)

    def _bypassed(self, request: web.Request) -> bool:
        """Does the origin's configuration send this request past the cache? ``bypass_paths`` are
        globs of the client's path (before a ``strip_prefix``), as the request names it."""
        if not self._bypassing:
            return False
        return self.origin.bypasses(request.raw_path.partition("?")[0], [n.lower() for n in request.headers])

    def forwarded(self, request: web.Request) -> Forwarded:
        """What this request lends the fetches it starts: built once per request, and only when
        something may ask the origin (a miss, a variant's key, a streamed answer)."""
        got: Forwarded | None = request.get(FORWARDED_KEY)
        if got is None:
            fields = origin_fields(request.headers.items(), asker(request), self.settings.dropped_request_fields())
            got = request[FORWARDED_KEY] = Forwarded(
                fields, Sharing(authorized(request.headers), self.settings.store_set_cookie))
        return got

    def key(self, request: web.Request, url: str) -> str | None:
        """The cache key of the stored response this GET or HEAD may use: the URL, or for one
        that varies (RFC 9111 §4.1) its variant's key; None when no stored one can do (Vary: *,
        or its last answer could not be stored)."""
        if self.engine.passing(url):
            return None
        if self.engine.varies.names(url) is None:  # the hot path: a dict lookup
            return url
        key = self.engine.variant_of(url, self.forwarded(request).fields)
        return None if key == ANY[0] else key

    async def _client_url(self, request: web.Request, info: ResponseInfo, target: str,
                          key: str) -> web.StreamResponse | None:
        """Fetches of ``key`` go out with this client's URL. A signed one is never answered from
        the cache unless the origin has accepted that very URL (and it has not expired): without
        a signature, or past it, the origin answers the client itself (None: go on from the cache)."""
        full, clients = self.base + target, self.engine.upstream.clients
        if not self._signed:
            clients.use(key, full)
            return None
        now = time.time()
        sig = signature_of(target.partition("?")[2])
        accepted = sig is not None and not sig.expired(now) and (
            clients.accepted(request.method, full, now) or await self._origin_accepts(request, full))
        if not accepted or sig is None:
            info.cache_status = "PASS"
            return await passthrough(self.engine, request, full, sign=False)
        until = min(sig.expires_at if sig.expires_at is not None else now + ACCEPTED_FOR, now + ACCEPTED_MAX)
        clients.accept(request.method, full, until)
        clients.use(key, full, until)
        return None

    async def _origin_accepts(self, request: web.Request, full: str) -> bool:
        """Ask the origin, with the client's URL and fields, for one byte (HEAD for a HEAD: a
        signature covers the method)."""
        span = Span(0, 1) if request.method == "GET" else None
        try:
            async with self.engine.upstream.get(full, span, self.forwarded(request).fields, method=request.method,
                                                sign=False) as resp:
                return resp.status in (200, 206, 304, 416)
        except ProxyError:
            return False

    def hint(self, header: str | None) -> list[Unit]:
        """What to fetch first for an object we know nothing about yet."""
        return first_units(header, self.engine.geometry, self.settings.max_run_slices)

    async def handle(self, request: web.Request, target: str) -> web.StreamResponse:
        """Answer ``request``, whose target upstream is ``target`` (path and query)."""
        info = ResponseInfo(origin=self.origin.name)
        request[INFO_KEY] = info
        resp: web.StreamResponse | None = None
        try:
            try:
                resp = await self._handle(request, info, target)
            except _Restart:
                # The origin changed before a byte went out: answer from the new version instead.
                info.tally = RequestTally()
                resp = await self._handle(request, info, target)
            return resp
        finally:
            info.finished = time.monotonic()
            if info.first_byte is None:
                info.first_byte = info.finished
            if self.observer is not None:
                self.observer(request, resp, info)

    async def _handle(self, request: web.Request, info: ResponseInfo, target: str) -> web.StreamResponse:
        target, range_q = split_target(target)
        url = self.cache_key(target)
        info.url = url
        cacheable = request.method in ("GET", "HEAD") and not self._bypassed(request)
        # A signed-urls origin checks every request, a URL with no signature at all most of all:
        # its key is its own URL, and from the cache it would be answered like a signed one.
        if cacheable and self._keyed and (self._signed or url != self.base + target):
            refused = await self._client_url(request, info, target, url)
            if refused is not None:
                return refused
        key = self.key(request, url) if cacheable else None
        if key is None:  # another method, a bypass, or an object that varies on everything (Vary: *)
            info.cache_status = "PASS"
            return await passthrough(self.engine, request, self.base + target)
        header = select_range_header(request.headers.get("Range"), range_q)
        directives = request_directives(request.headers)
        stored_status = None if directives.revalidate else self.engine.status_answer(key)
        if stored_status is not None:  # a redirect, a 404, ... stored while fresh (RFC 9111 §3)
            info.cache_status = "HIT"
            return answers.stored_status(stored_status, time.time())
        if directives.only_if_cached:
            # RFC 9111 §5.2.1.7: answer from the cache or not at all.
            stored = await self.engine.stored_meta(key, directives)
            if stored is None:
                return answers.not_cached()
            info.object_length = stored.meta.length
            return await self.respond(request, stored, header, info, only_if_cached=True)
        try:
            # The hot path (no await); a client's min-fresh is decided by the engine.
            asks_more = directives.revalidate or directives.min_fresh > 0 or directives.max_age is not None
            fresh = None if asks_more else self.engine.fresh_meta(key)
            if fresh is not None:
                lease = MetaLease(fresh)
            else:
                hint = self.hint(header if isinstance(header, str) else None)
                if request.method == "HEAD":
                    hint = hint[:1]
                t0, wall = time.monotonic(), time.time()
                asking = self.forwarded(request)
                lease = await self.engine.object_meta(key, hint, directives, asking)
                if lease.meta.url != key and lease.held is None:
                    # It turned out to vary (RFC 9111 §4.1), learnt for another request: ours may be
                    # another variant, or (Vary: *) none that can be stored.
                    key = self.key(request, url)
                    if key is None:
                        info.cache_status = "PASS"
                        return await passthrough(self.engine, request, url)
                    if key != lease.meta.url:
                        lease = await self.engine.object_meta(key, hint, directives, asking)
                if lease.meta.stored_at >= wall:  # learnt or revalidated just now: it asked the origin
                    info.tally.upstream_seconds += time.monotonic() - t0
        except UpstreamStatus as exc:
            info.cache_status = "ERROR"
            return await answers.origin_error(request, exc)
        except RangeNotSatisfiable as exc:
            return answers.unsatisfiable(exc.length)
        except ProxyError as exc:
            info.cache_status = "ERROR"
            return answers.error(exc)
        info.object_length = lease.meta.length
        limit = self.settings.max_object_size
        if limit and lease.meta.length > limit:  # too large to cache here: the origin answers it
            self.engine.pass_through(url)
            info.cache_status = "PASS"
            if lease.held is not None:
                self.engine.release_held(lease)
            # Nothing of it stays: what the discovery run brought leaves the store (no reader
            # streams from it, every request for it sees this length and passes).
            await self.engine.invalidate(lease.meta.url, "larger than max_object_size")
            return await passthrough(self.engine, request, self.base + target)
        return await self.respond(request, lease, header, info)

    def _outcome(self, request: web.Request, meta: ObjectMeta, header: str | Conflict | None) -> RangeOutcome:
        if isinstance(header, Conflict):
            return Unsatisfiable(meta.length)
        ir = request.headers.get("If-Range")
        if header is not None and ir is not None and not if_range_matches(ir, meta.etag, meta.last_modified):
            header = None  # RFC 9110 §13.1.5: a failed If-Range means send the whole (200)
        return evaluate(header, meta.length, max_ranges=self.settings.max_ranges)

    async def respond(self, request: web.Request, lease: MetaLease, header: str | Conflict | None,
                      info: ResponseInfo, only_if_cached: bool = False) -> web.StreamResponse:
        meta = lease.meta
        engine = self.engine
        try:
            if not meta.storable and lease.held is None:
                # Another request's answer, not stored: this one gets its own from the origin.
                info.cache_status = "PASS"
                return await passthrough(engine, request, target_url(meta.url))
            now = time.time()
            base = self.fields.base(meta, meta.age(now))
            base.extend(lease.personal)  # only the client whose request the origin answered
            condition = preconditions(request.headers, meta.etag, meta.last_modified)
            if condition == "failed":  # RFC 9110 §13.1.1, §13.1.4
                return web.Response(status=412, headers=self._not_modified_fields(meta, base))
            if condition == "not-modified":
                return web.Response(status=304, headers=self._not_modified_fields(meta, base))
            outcome = self._outcome(request, meta, header)
            if isinstance(outcome, Unsatisfiable):
                return answers.unsatisfiable(meta.length, meta)
            reply = frame(lease, outcome, base)
            plan = engine.held_plan(meta, reply.spans) if lease.held is None else None
            reply.plan = plan if plan is not None else await engine.plan(meta, reply.spans, lease.held)
            if not meta.storable and not self._within(lease, reply):
                # RFC 9111 §3.4: an answer that is not stored is not completed from another
                # one; the origin answers the client's own request instead.
                info.cache_status = "PASS"
                return await passthrough(engine, request, target_url(meta.url))
            x_cache = reply.plan.status  # HIT | PARTIAL | MISS, worked out once
            if only_if_cached and x_cache != "HIT":
                return answers.not_cached()
            reply.headers["X-Cache"] = info.cache_status = x_cache
            stale = lease.stale
            # RFC 9211 §2, §3: served stale while revalidating is a hit with a negative ttl;
            # after a failed revalidation it is fwd=stale with the origin's fwd-status.
            reply.headers["Cache-Status"] = cache_status(
                x_cache, meta.stored_at + meta.ttl - now, meta.storable,
                fwd=stale.fwd if stale else None, fwd_status=stale.fwd_status if stale else None,
                detail=stale.detail if stale else None)
            if request.method == "HEAD":
                head = web.StreamResponse(status=reply.status, headers=reply.headers)
                head.content_length = reply.length
                await head.prepare(request)
                await head.write_eof()
                return head
            if x_cache == "HIT" and reply.length <= SMALL_HIT:
                body = engine.hit_bytes(meta, reply.pieces, info.tally)
                if body is not None:
                    engine.note_hits(meta, reply.spans)
                    info.first_byte = time.monotonic()
                    return web.Response(status=reply.status, headers=reply.headers, body=body)
            elif x_cache == "HIT":
                files = engine.hit_files(meta, reply.pieces, info.tally)
                if files is not None:
                    engine.note_hits(meta, reply.spans)
                    return await send_files(request, reply, files, info)
            return await self._send(request, reply, info)
        finally:
            if lease.held is not None:  # the discovery run's interest, held for this response
                engine.release_held(lease)

    def _within(self, lease: MetaLease, reply: Reply) -> bool:
        """Does the answer this request's discovery is reading hold all the reply needs?"""
        if not lease.held:
            return False
        have = self.engine.geometry.units_span(lease.held, lease.meta.length)
        return all(have.start <= s.start and s.end <= have.end for s in reply.spans)

    @staticmethod
    def _not_modified_fields(meta: ObjectMeta, base: CIMultiDict[str]) -> CIMultiDict[str]:
        """RFC 9110 §15.4.5: a 304 carries the fields a 200 would have among Cache-Control,
        Content-Location, Date, ETag, Expires, Vary (and Last-Modified)."""
        out: CIMultiDict[str] = CIMultiDict(not_modified_fields(meta.headers))
        for name in ("Accept-Ranges", "Via", "Age"):
            out[name] = base[name]
        return out

    async def _body(self, reply: Reply, tally: RequestTally, files: bool,
                    fields: Fields) -> AsyncGenerator[bytes | FilePiece, None]:
        """The body in order: framing bytes, and the object's bytes from the engine."""
        stream = self.engine.stream(reply.lease, reply.spans, reply.plan, tally, files, fields)
        try:
            for piece in reply.pieces:
                if isinstance(piece, bytes):
                    yield piece
                    continue
                want = piece.size
                while want:
                    chunk = await stream.__anext__()
                    want -= part_size(chunk)
                    yield chunk
        finally:
            await stream.aclose()

    async def _first(self, request: web.Request, body: AsyncGenerator[bytes | FilePiece, None], info: ResponseInfo
                     ) -> bytes | FilePiece | web.StreamResponse:
        """The first non-empty part of the body, or the clean error answer for a fault before it."""
        try:
            first = await body.__anext__()
            while not first:
                first = await body.__anext__()
            return first
        except UpstreamStatus as exc:
            info.cache_status = "ERROR"
            return await answers.origin_error(request, exc)
        except VersionChanged as exc:
            if not info.restarted:
                info.restarted = True
                raise _Restart from exc
            info.cache_status = "ERROR"
            return answers.error(exc)
        except ProxyError as exc:
            info.cache_status = "ERROR"
            return answers.error(exc)

    async def _send(self, request: web.Request, reply: Reply, info: ResponseInfo) -> web.StreamResponse:
        body = self._body(reply, info.tally, socket_of(request.transport) is not None, self.forwarded(request).fields)
        try:
            first: bytes | FilePiece = b""
            if reply.length:
                # Headers wait for the first byte: a fault before it is still a clean error status.
                got = await self._first(request, body, info)
                if isinstance(got, web.StreamResponse):
                    return got
                first = got
            resp = StreamedResponse(status=reply.status, headers=reply.headers)
            resp.content_length = reply.length
            await send_stream(request, resp, first, body, reply, info)
            return resp
        finally:
            await body.aclose()
