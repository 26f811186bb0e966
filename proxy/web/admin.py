"""The proxy's own paths: health, /stats (page), /stats.json, /metrics, and purge.

Paths come from the settings and are matched exactly on the raw request path
(the query string aside), so an origin's own ``/statsfoo`` or ``/stats/`` is still
proxied; everything under ``purge_prefix`` belongs to the proxy.

Tokens (``admin_token``): sent as ``Authorization: Bearer <token>``; the stats
page also takes ``?token=<token>`` (a browser cannot add a header to a page
load) and its script then sends the header. Purge always needs the token and is
refused (403) when no token is configured; the stats and metrics need it only
with ``protect_stats = true``.

With several worker processes, ``/metrics`` and ``/stats.json`` describe the whole proxy: the
answering worker adds the other workers' published numbers to its own (``proxy.workers.peers``) and
names itself in an ``X-Rangeproxy-Worker`` header.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import time
from importlib import resources
from typing import Any, Awaitable, Callable

from aiohttp import web

from proxy.core.node import Drain, node_health
from proxy.core.routing import Unrouted
from proxy.http.target import split_target
from proxy.observe.metrics import CONTENT_TYPE_LATEST, Metrics
from proxy.workers.peers import Peers
from proxy.observe.stats import Stats, map_indices, to_ranges
from proxy.web.sites import Sites

__all__ = ["Admin", "bearer_token"]

log = logging.getLogger("rangeproxy.admin")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NO_STORE = {"Cache-Control": "no-store"}
READ_METHODS = ("GET", "HEAD")
ORIGIN_FIELD = "Rangeproxy-Origin"  # names the origin of a purged object (else: as for a request, by Host and path)


def bearer_token(request: web.Request, allow_query: bool = False) -> str | None:
    """The token a request presents: ``Authorization: Bearer <t>`` (or ``?token=<t>`` when allowed)."""
    auth = request.headers.get("Authorization")
    if auth is not None:
        scheme, _, cred = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and cred.strip():
            return cred.strip()
    if allow_query:
        value = request.query.get("token")
        if value:
            return value
    return None


def _dashboard_page(config: dict[str, Any]) -> str:
    """The dashboard as one self-contained page: CSS and script inlined, no other request."""
    static = resources.files("proxy.web") / "static"
    page = (static / "dashboard.html").read_text(encoding="utf-8")
    css = (static / "dashboard.css").read_text(encoding="utf-8")
    js = (static / "dashboard.js").read_text(encoding="utf-8")
    cfg = json.dumps(config).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (page.replace("/*__CSS__*/", css)
                .replace("/*__CONFIG__*/{}", cfg)
                .replace("/*__JS__*/", js.replace("</script", "<\\/script")))


def _unrouted(got: Unrouted) -> web.HTTPException:
    err = web.HTTPMisdirectedRequest if got.status == 421 else web.HTTPNotFound
    return err(text=f"{got.status} {got.reason}\n", headers=NO_STORE)


class Admin:
    """Handlers for the admin paths of one app."""

    def __init__(self, settings: Any, stats: Stats, metrics: Metrics, get_sites: Callable[[], Sites | None],
                 peers: Peers | None = None, drain: Drain | None = None) -> None:
        self.settings = settings
        self.drain = drain if drain is not None else Drain(0.0)  # begun on SIGTERM (proxy.__main__)
        self.stats = stats
        self.metrics = metrics
        self._sites = get_sites
        self.peers = peers  # the other workers' numbers (None: this process is the whole proxy)
        self.page = _dashboard_page({
            "statsJson": settings.stats_path + ".json",
            "purgePrefix": settings.purge_prefix,
            "refreshMs": 1000,
        })
        self.exact: dict[str, Handler] = {
            settings.health_path: self.health,
            settings.stats_path: self.stats_page,
            settings.stats_path + ".json": self.stats_json,
            settings.metrics_path: self.metrics_text,
        }

    # --- routing ---------------------------------------------------------------------

    def match(self, request: web.Request) -> Handler | None:
        """The admin handler for ``request``, or None when it is for the origin."""
        path = request.raw_path.partition("?")[0]
        handler = self.exact.get(path)
        if handler is not None:
            return handler
        if path.startswith(self.settings.purge_prefix):
            return self.cache_entry
        return None

    # --- access ------------------------------------------------------------------------

    def _token_ok(self, token: str | None) -> bool:
        want = self.settings.admin_token
        return bool(want) and token is not None and hmac.compare_digest(token.encode(), want.encode())

    def _unauthorized(self, what: str) -> web.Response:
        return web.Response(status=401, text=f"401 Unauthorized: {what} needs the admin token "
                            "(Authorization: Bearer <admin_token>)\n",
                            headers={"WWW-Authenticate": 'Bearer realm="rangeproxy"', **NO_STORE})

    def _may_read(self, request: web.Request, allow_query: bool = False) -> bool:
        return not self.settings.protect_stats or self._token_ok(bearer_token(request, allow_query))

    @staticmethod
    def _method_not_allowed(request: web.Request, allowed: tuple[str, ...]) -> web.Response:
        return web.Response(status=405, text=f"405 Method Not Allowed: {request.method}\n",
                            headers={"Allow": ", ".join(allowed), **NO_STORE})

    def _sites_or_503(self) -> Sites:
        sites = self._sites()
        if sites is None:
            raise web.HTTPServiceUnavailable(text="starting\n")
        return sites

    # --- handlers ----------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.StreamResponse:
        """This process's health (README, "/healthz"): 200 "ok" or "degraded" (the cache cannot be
        written, answers come from the origin: a balancer keeps sending), 503 "starting", or 503
        "draining" after SIGTERM (still serving: the balancer is to take it out first)."""
        if request.method not in READ_METHODS:
            return self._method_not_allowed(request, READ_METHODS)
        sites = self._sites()
        cache: dict[str, object]
        if sites is None:
            cache = {"writable": True, "reason": None, "since": None}
        else:
            cache = sites.store.writability.state()
        status, code = node_health(sites is not None, bool(cache["writable"]), self.drain.draining)
        return web.json_response({"status": status, "cache": cache}, status=code, headers=NO_STORE)

    async def stats_page(self, request: web.Request) -> web.StreamResponse:
        if request.method not in READ_METHODS:
            return self._method_not_allowed(request, READ_METHODS)
        if not self._may_read(request, allow_query=True):
            return self._login_page(bool(bearer_token(request, allow_query=True)))
        return web.Response(text=self.page, content_type="text/html", charset="utf-8",
                            headers={**NO_STORE, "Content-Security-Policy":
                                     "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                     "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'self'",
                                     "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"})

    def _login_page(self, wrong: bool) -> web.Response:
        msg = "That token is not right." if wrong else "These stats are protected (protect_stats = true)."
        body = (
            "<!doctype html><html><head><meta charset=utf-8><title>rangeproxy stats: token needed</title>"
            '<link rel="icon" href="data:,"><style>body{font:16px system-ui,sans-serif;background:#0f172a;'
            "color:#e2e8f0;display:grid;place-items:center;height:90vh}form{background:#1e293b;padding:2em;"
            "border-radius:12px}input{font:inherit;padding:.4em;margin:.6em 0;width:20em}button{font:inherit;"
            "padding:.4em 1.2em}</style></head><body><form method=get>"
            f"<h2>rangeproxy stats</h2><p>{html.escape(msg)}<br>Enter the admin token:</p>"
            '<input type=password name=token autofocus autocomplete=off><br><button>Open</button></form>'
            "</body></html>"
        )
        return web.Response(status=401, text=body, content_type="text/html", charset="utf-8",
                            headers={"WWW-Authenticate": 'Bearer realm="rangeproxy"', **NO_STORE,
                                     "Referrer-Policy": "no-referrer"})

    async def stats_json(self, request: web.Request) -> web.StreamResponse:
        if request.method not in READ_METHODS:
            return self._method_not_allowed(request, READ_METHODS)
        if not self._may_read(request):
            return self._unauthorized("the stats")
        volume = await self.metrics.volume.refresh(self._sites_or_503().store, max_age=1.0)
        if self.peers is None:
            snap = await self.stats.snapshot(volume)
            headers = NO_STORE
        else:
            others = await self.peers.stats_exports()
            snap = await self.stats.snapshot(volume, peers=others, worker=self.peers.worker)
            headers = {**NO_STORE, "X-Rangeproxy-Worker": str(self.peers.worker.index)}
        return web.json_response(snap, headers=headers, dumps=lambda o: json.dumps(o, separators=(",", ":")))

    async def metrics_text(self, request: web.Request) -> web.StreamResponse:
        if request.method not in READ_METHODS:
            return self._method_not_allowed(request, READ_METHODS)
        if not self._may_read(request):
            return self._unauthorized("the metrics")
        await self.metrics.volume.refresh(self._sites_or_503().store)
        body = self.metrics.render()
        headers = NO_STORE
        if self.peers is not None:
            body = await self.peers.merged_metrics(body)  # this worker's live values first
            headers = {**NO_STORE, "X-Rangeproxy-Worker": str(self.peers.worker.index)}
        resp = web.Response(body=body, headers=headers)
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    # --- one object: GET its slice map, DELETE (purge) it ---------------------------------

    def _named_object(self, request: web.Request, verb: str) -> tuple[str, Any, str]:
        """(target, engine, cache key) of the object named after the purge prefix, its origin
        chosen as for a request (Host and path prefix).

        The target is ``/<path>?<query>`` with the proxy's ``range=`` dropped. A request that names
        no object gets 400 (raised; its example starts with ``verb``), one no origin takes 404 or 421,
        one before the engine is up 503.
        """
        rest = request.raw_path[len(self.settings.purge_prefix):]
        if not rest or rest.startswith("?"):
            raise web.HTTPBadRequest(text=f"400 Bad Request: name an object, e.g. {verb}"
                                     f"{self.settings.purge_prefix}path/to/file\n", headers=NO_STORE)
        target, _ = split_target("/" + rest)
        sites = self._sites_or_503()
        named = request.headers.get(ORIGIN_FIELD)
        if named is not None:  # the dashboard names the object's origin: the target is its upstream one
            site = sites.sites.get(named.strip())
            if site is None:
                raise web.HTTPNotFound(text=f"404 no origin is named {named.strip()!r}\n", headers=NO_STORE)
            return target, site.engine, site.handler.cache_key(target)
        got = sites.route(request.headers.get("Host"), target)
        if isinstance(got, Unrouted):
            raise _unrouted(got)
        site, upstream_target = got
        return target, site.engine, site.handler.cache_key(upstream_target)

    async def cache_entry(self, request: web.Request) -> web.StreamResponse:
        if request.method == "DELETE":
            return await self.purge(request)
        if request.method not in READ_METHODS:
            return self._method_not_allowed(request, ("GET", "HEAD", "DELETE"))
        if not self._may_read(request):
            return self._unauthorized("the cache map")
        target, engine, url = self._named_object(request, "")
        sm = await engine.slice_map(url)
        if sm is None:
            return web.json_response({"path": target, "url": url, "in_cache": False}, status=404,
                                     headers=NO_STORE)
        out = dict(sm)
        cached = map_indices(sm["cached"])
        out.update({"path": target, "in_cache": True, "cached": to_ranges(cached),
                    "partial": to_ranges(map_indices(sm.get("partial", ()))),
                    "in_flight": to_ranges(map_indices(sm["in_flight"])), "cached_slices": len(cached)})
        return web.json_response(out, headers=NO_STORE)

    async def _purge_under(self, engine: Any, target: str, prefix: str) -> web.StreamResponse:
        t0 = time.monotonic()
        urls = await engine.invalidate_under(prefix, "purged by prefix")
        self.stats.purges += 1
        for url in urls:
            self.stats.forget_map(url)
        self.metrics.volume.updated = 0.0
        log.info("purged %d objects under %s in %.3f s", len(urls), prefix, time.monotonic() - t0)
        return web.json_response({"purged": len(urls), "prefix": target[:-1], "urls": urls[:1000]},
                                 headers=NO_STORE)

    async def purge(self, request: web.Request) -> web.StreamResponse:
        if not self.settings.admin_token:
            return web.Response(status=403, text="403 Forbidden: purge is disabled (no admin_token configured)\n",
                                headers=NO_STORE)
        if not self._token_ok(bearer_token(request)):
            return self._unauthorized("purge")
        target, engine, url = self._named_object(request, "DELETE ")
        if target.endswith("*") and "?" not in target:  # DELETE <purge_prefix>videos/*: all under it
            return await self._purge_under(engine, target, url[:-1])
        before = await engine.slice_map(url)
        t0 = time.monotonic()
        await engine.invalidate(url, "purged")
        self.stats.purges += 1
        self.stats.forget_map(url)
        self.metrics.volume.updated = 0.0  # the next snapshot asks the store again
        cached = len(before["cached"]) if before is not None else 0
        log.info("purged %s (%d cached slices) in %.3f s", url, cached, time.monotonic() - t0)
        return web.json_response({"purged": True, "path": target, "url": url, "was_cached": before is not None,
                                  "cached_slices_before": cached}, headers=NO_STORE)
