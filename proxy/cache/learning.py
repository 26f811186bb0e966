"""Learn an object once and revalidate it once, however many requests ask at the same time.

The first ranged GET of an unknown object both describes it (its length and
validators) and brings the first units a request needs; what its answer means is
decided by :func:`proxy.core.representation.first_answer`, and what a conditional
request's answer means by :func:`~proxy.core.representation.revalidation`. Whether a
stale object may answer (at once, or when its revalidation fails) is decided by
:mod:`proxy.core.staleness`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Callable, Mapping, assert_never

from proxy.cache.metadata import MetaCache
from proxy.cache.passes import PassList
from proxy.cache.statuses import StatusAnswers
from proxy.cache.varies import VaryIndex
from proxy.cache.pieces import MetaLease
from proxy.cache.runs import CLAIM_POLL, Invalidate, RunLauncher, UpstreamRun
from proxy.cache.flights import SliceFill
from proxy.core.representation import (
    Changed, Empty, Erred, Gone, Learned, ObjectMeta, PastEnd, Refreshed, Refused, Unusable, first_answer,
    revalidation,
)
from proxy.core.conditions import RequestDirectives
from proxy.core.staleness import Fresh, PassError, Revalidate, ServeStale, on_error, on_request, usable_without_origin
from proxy.core.fields import cookies
from proxy.core.forwarding import Forwarded
from proxy.core.statuses import StatusAnswer, status_lifetime
from proxy.core.variants import ANY, target_url, variant_key, vary_names
from proxy.core.slices import UNKNOWN_LENGTH, Unit, leading_idle
from proxy.http.errors import RangeNotSatisfiable, UpstreamError, UpstreamMismatch, UpstreamStatus
from proxy.http.ranges import Span

__all__ = ["ObjectLearning"]

log = logging.getLogger("rangeproxy.engine")

Settle = Callable[[MetaLease | BaseException], None]
ASK_NOTHING = RequestDirectives()  # a request without cache directives


class ObjectLearning:
    """Fresh metadata for any URL: from memory, the store, a discovery or a revalidation."""

    def __init__(self, metas: MetaCache, runs: RunLauncher, invalidate: Invalidate, varies: VaryIndex,
                 statuses: StatusAnswers) -> None:
        self.metas = metas
        self.statuses = statuses
        self.runs = runs
        self.invalidate = invalidate
        self.varies = varies
        self.passes = PassList()
        self.settings = runs.settings
        self._pending: dict[str, asyncio.Future[MetaLease]] = {}

    def fresh(self, url: str) -> ObjectMeta | None:
        """Metadata already in memory and fresh, or None (then :meth:`lease`)."""
        meta = self.metas.hot(url)
        if meta is not None and meta.is_fresh(time.time()):
            return meta
        return None

    async def stored(self, url: str, asks: RequestDirectives = ASK_NOTHING) -> MetaLease | None:
        """Metadata from memory or the store that may answer without the origin (only-if-cached):
        fresh, or as stale as the client's max-stale accepts (then ``stale`` says so)."""
        meta = self.metas.hot(url) or await self.metas.load(url)
        if meta is None:
            return None
        decision = usable_without_origin(meta, time.time(), asks)
        if isinstance(decision, Fresh):
            return MetaLease(meta)
        return MetaLease(meta, stale=decision) if decision is not None else None

    async def lease(self, url: str, hint: list[Unit], asks: RequestDirectives = ASK_NOTHING,
                    asking: Forwarded = Forwarded()) -> MetaLease:
        """Fresh metadata for ``url``; concurrent callers share one discovery/revalidation.
        Only the caller that started a discovery gets the interest it holds (``held``).
        ``asks``: the client's directives (RFC 9111 §5.2.1): no-cache revalidates, fresh or not.
        A stale object comes back as it is (``stale`` set) where :mod:`proxy.core.staleness` allows.
        ``asking``: the fields the origin gets; a request with credentials shares its
        discovery with nobody (RFC 9111 §3.5: its answer may be for it alone)."""
        meta = self.metas.hot(url)
        if meta is None and url not in self._pending:
            stored = await self.metas.load(url)
            # A discovery here may have learnt it (and not written it yet) during the await.
            meta = self.metas.hot(url) or stored
            if meta is not None:
                self.metas.keep(meta)
        elif meta is not None:
            self.metas.touch(url)
        fut = None if asking.sharing.authorized else self._pending.get(url)
        initiator = fut is None
        if meta is not None:
            decision = on_request(meta, time.time(), asks)
            if isinstance(decision, Fresh):
                return MetaLease(meta)
            if isinstance(decision, ServeStale):
                # RFC 5861 §3: answer now; one revalidation (collapsed in _pending) runs behind it.
                if fut is None:  # nobody's request: it lends none of its fields
                    self._start(url, meta, hint, Forwarded(), background=True)
                return MetaLease(meta, stale=decision)
            if not isinstance(decision, Revalidate):
                assert_never(decision)
        if fut is None:
            fut = self._start(url, meta, hint, asking)
        lease = await asyncio.shield(fut)
        if asks.revalidate and lease.failure is not None:
            # RFC 9111 §5.2.1.4: a client asking for validation is not answered stale.
            raise lease.failure
        return lease if initiator else replace(lease, held=None, personal=(), flights=None)

    def _start(self, url: str, meta: ObjectMeta | None, hint: list[Unit], asking: Forwarded,
               background: bool = False) -> asyncio.Future[MetaLease]:
        """Begin the one revalidation (or discovery) of ``url`` its requests share (none, for
        a request with credentials). ``background``: no request waits for it, so nobody
        takes the interest it holds."""
        fut: asyncio.Future[MetaLease] = asyncio.get_running_loop().create_future()
        if not asking.sharing.authorized:
            self._pending[url] = fut
        settle = self._settler(url, fut)
        if background:
            settle = self._unheld(settle)
        if meta is not None and (meta.etag or meta.last_modified):
            self.runs.jobs.spawn(self._revalidate(meta, hint, settle, asking))
        else:  # unknown, or nothing to revalidate by (RFC 9111 §4.3.1): learn it anew
            self.runs.jobs.spawn(self._discover(url, hint, settle, asking))
        return fut

    def _unheld(self, settle: Settle) -> Settle:
        """``settle``, first releasing the units a discovery run holds for its initiator."""
        def release_then_settle(result: MetaLease | BaseException) -> None:
            if isinstance(result, MetaLease) and result.held is not None:
                self.release_held(result)
            settle(result)
        return release_then_settle

    def forget(self, url: str) -> None:
        """The object was invalidated (a changed version found, a purge): a discovery or
        revalidation begun before that no longer takes new requests, which would get the version
        it began with (a request restarted by a change would meet the same change again); those
        already waiting on it still get its answer."""
        self._pending.pop(url, None)

    def release_held(self, lease: MetaLease) -> None:
        """Drop the interest a discovery run held for the response that started it."""
        if lease.flights is not None:
            lease.flights.release(lease.held or ())
        else:
            self.runs.flights.release(lease.meta, lease.held or ())

    def _settler(self, url: str, fut: asyncio.Future[MetaLease]) -> Settle:
        def settle(result: MetaLease | BaseException) -> None:
            if self._pending.get(url) is fut:
                del self._pending[url]
            if fut.done():
                return
            if isinstance(result, BaseException):
                fut.set_exception(result)
                fut.exception()  # mark retrieved: waiters may all have gone
            else:
                fut.set_result(result)
        return settle

    async def _stored_fresh(self, url: str) -> ObjectMeta | None:
        """Metadata another worker has just stored, if fresh (straight from the store)."""
        meta = await self.metas.store.get_meta(url)
        if meta is not None and meta.is_fresh(time.time()):
            self.metas.keep(meta)
            return meta
        return None

    async def _claim_first(self, url: str, hint: list[Unit]) -> tuple[list[Unit], ObjectMeta | None]:
        """The units of ``hint`` this worker may fetch, or the metadata another worker
        learnt meanwhile (with one worker: all of ``hint``)."""
        sync = self.runs.sync
        claimed = sync.claim_prefix(url, hint)
        if not claimed:
            # Another worker is learning this object: wait, then take its metadata from the store.
            deadline = time.monotonic() + self.settings.upstream_read_timeout + 30
            while sync.held_elsewhere(url, hint[0]) and time.monotonic() < deadline:
                await asyncio.sleep(CLAIM_POLL)
            meta = await self._stored_fresh(url)
            if meta is not None:
                return [], meta
            return sync.claim_prefix(url, hint) or hint[:1], None  # it failed over there: learn it here
        if sync.shared:
            # Claimed just as another worker finished learning it? Then its metadata is stored.
            meta = await self._stored_fresh(url)
            if meta is not None:
                sync.release(url, claimed)
                return [], meta
        return claimed, None

    async def _discover(self, url: str, hint: list[Unit], settle: Settle, asking: Forwarded,
                        attempt: int = 0) -> None:
        """Learn an object from its first ranged GET, and keep filling the units it brings."""
        runs = self.runs
        claimed, known = await self._claim_first(url, hint)
        claim_key = url
        if known is not None:
            settle(MetaLease(known))
            return
        geometry = runs.files.geometry
        asked = geometry.units_span(claimed, UNKNOWN_LENGTH)
        fills: dict[Unit, SliceFill] = {}
        try:
            async with runs.origin.get(url, asked, asking.fields) as resp:
                now = time.time()
                answer = first_answer(url, asked, resp.status, resp.headers, now, self.settings.default_ttl,
                                      asking.sharing)
                if isinstance(answer, Empty):
                    await self.metas.remember(answer.meta)
                    settle(MetaLease(answer.meta))
                    return
                if isinstance(answer, PastEnd):
                    if attempt == 0:
                        # Asked past the end: learn the object from its first slice instead.
                        runs.jobs.spawn(self._discover(url, [0], settle, asking, attempt + 1))
                        return
                    raise RangeNotSatisfiable(answer.length)
                if isinstance(answer, Refused):
                    err = await runs.origin.error_status(resp)
                    ttl = status_lifetime(err.status, resp.headers, now, self.settings.default_ttl, asking.sharing,
                                          self.settings.negative_ttl)
                    if ttl is not None and err.complete:  # RFC 9111 §3: stored whole, reused while fresh
                        self.statuses.keep(url, StatusAnswer(err.status, tuple(err.headers), err.body, now, ttl))
                    raise err
                if isinstance(answer, Unusable):
                    raise (UpstreamMismatch if answer.mismatch else UpstreamError)(answer.reason)
                if not isinstance(answer, Learned):
                    assert_never(answer)
                meta = self._variant(answer.meta, resp.headers, asking)
                if meta.url != claim_key:  # learnt as a variant: its units are claimed under its own key
                    runs.sync.release(claim_key, claimed)
                    claim_key, claimed = meta.url, runs.sync.claim_prefix(meta.url, claimed)
                personal = cookies(resp.headers.items())
                if meta.storable:
                    self.metas.keep(meta)
                elif not asking.sharing.authorized:
                    # Nothing of it is kept, not even as a reference for the next answer: the
                    # next requests go straight to the origin for a while (a "hit-for-pass").
                    self.metas.forget(url)
                    self.passes.note(target_url(url), time.monotonic())
                fl = runs.flights.for_meta(meta)
                run = leading_idle([u for u in claimed if geometry.unit_span(u, UNKNOWN_LENGTH).start < meta.length],
                                   fl.busy)
                fills.update(runs.flights.register(fl, meta, run))
                fl.want(run)  # held for the initiator until it registers its own interest
                # Waiters go on at once; only the initiator reads a private (not stored) answer.
                settle(MetaLease(meta, tuple(run), personal, fl if fl.private else None))
                if meta.storable:
                    if not runs.sync.shared:
                        self.metas.persist(meta)  # written beside the body, not before its first byte
                    else:
                        # Other workers read it from the store once our first unit is released.
                        await self.metas.store.put_meta(meta)
                try:
                    if run:  # else every unit it brings is being filled already (or past the end)
                        await UpstreamRun(runs, meta, fl, fills).pump(resp, asked.start if resp.status == 200 else 0)
                except BaseException as exc:
                    runs.abandon(fl, fills, exc if isinstance(exc, Exception) else UpstreamError(repr(exc)))
                    raise
                finally:
                    runs.flights.forget_idle(url, fl)
        except BaseException as exc:  # noqa: BLE001 - every failure reaches the waiters
            settle(exc if isinstance(exc, Exception) else UpstreamError(repr(exc)))
            if not isinstance(exc, Exception):
                raise
            runs.log_fault(url, exc)
        finally:
            runs.sync.release(claim_key, [u for u in claimed if u not in fills])  # fills release their own

    def _variant(self, meta: ObjectMeta, headers: Mapping[str, str], asking: Forwarded) -> ObjectMeta:
        """RFC 9111 §4.1: an answer that varies is the variant its request's fields select
        (stored under that key); with ``Vary: *`` it is nobody else's."""
        url = target_url(meta.url)
        names = vary_names(headers)
        self.varies.learn(url, names)
        if names is None:
            return meta
        if names == ANY:
            return replace(meta, storable=False)
        key = variant_key(url, names, asking.fields)
        for old in self.varies.use(url, key):  # beyond max_variants: the least recently used go
            self.runs.jobs.spawn(self.invalidate(old, "more variants than max_variants"))
        return replace(meta, url=key)

    def _failed(self, meta: ObjectMeta, exc: UpstreamError, status: int | None, settle: Settle) -> None:
        """A revalidation failed: the stored object answers stale, or the failure reaches the waiters."""
        decision = on_error(meta, time.time(), self.settings.stale_if_error, status)
        if isinstance(decision, ServeStale):
            # RFC 9111 §4.2.4, RFC 5861 §4: within the stale-if-error window.
            log.warning("revalidation of %s failed (%s): serving stale", meta.url, exc)
            settle(MetaLease(meta, stale=decision, failure=exc))
        elif isinstance(decision, PassError):
            log.warning("revalidation of %s failed (%s): no stale answer allowed", meta.url, exc)
            settle(exc)
        else:
            assert_never(decision)

    async def _revalidate(self, meta: ObjectMeta, hint: list[Unit], settle: Settle, asking: Forwarded) -> None:
        """One conditional request per object (RFC 9111 §4.3), not one per slice."""
        url, runs = meta.url, self.runs
        hdrs = list(asking.fields)
        if meta.etag:
            hdrs.append(("If-None-Match", meta.etag))
        if meta.last_modified:
            hdrs.append(("If-Modified-Since", meta.last_modified))
        try:
            async with runs.origin.get(url, Span(0, 1) if meta.length else None, hdrs) as resp:
                outcome = revalidation(meta, resp.status, resp.headers, time.time(), self.settings.default_ttl)
                if isinstance(outcome, Refreshed):
                    await self.metas.remember(outcome.meta)
                    settle(MetaLease(outcome.meta))
                    return
                if isinstance(outcome, Changed):
                    runs.origin.counters.version_changes += 1
                    log.info("origin changed %s: validator %r -> %r", url, meta.etag or meta.last_modified,
                             resp.headers.get("ETag") or resp.headers.get("Last-Modified"))
                    await self.invalidate(url, "validator changed on revalidation")
                elif isinstance(outcome, Gone):
                    err = await runs.origin.error_status(resp)
                    await self.invalidate(url, f"origin answered {outcome.status}")
                    raise err
                elif isinstance(outcome, Erred):
                    self._failed(meta, await runs.origin.error_status(resp), outcome.status, settle)
                    return
                else:
                    assert_never(outcome)
        except UpstreamError as exc:
            if isinstance(exc, UpstreamStatus) and exc.status in (404, 410):
                settle(exc)
                return
            # Unreachable, a timeout, an answer we must not use: no status of the origin's.
            self._failed(meta, exc, None, settle)
            return
        except BaseException as exc:
            settle(exc if isinstance(exc, Exception) else UpstreamError(repr(exc)))
            raise
        # Changed: learn the new version now (the waiters get it, whole).
        await self._discover(url, hint, settle, asking)
