"""Several origins behind one proxy ([[origin]] tables in the config file): routed by Host and by
path prefix, each with its own settings; real appservers and fault origins on loopback, every
body checked against the bytes its origin serves."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Callable, Iterator

import aiohttp
import pytest

from tests.support.client import Outcome, fetch
from tests.support.data import seeded_bytes, write_seeded_file
from tests.support.fault_origin import FaultOrigin
from tests.support.origins import AccessLine, access_lines, config_error, poll, write_config
from tests.support.servers import DEFAULT_SLICE, AppServerProc, ProxyProc

pytestmark = pytest.mark.integration

S = DEFAULT_SLICE
TOKEN = "purge-token"
A_SIZE, B_SIZE = 3 * S + 11, 2 * S + 5


async def get(http: aiohttp.ClientSession, proxy: ProxyProc, path: str, host: str | None = None,
              rng: str | None = None, **headers: str) -> Outcome:
    if host is not None:
        headers["Host"] = host
    if rng is not None:
        headers["Range"] = f"bytes={rng}"
    return await fetch(http, proxy.url_for(path), headers=headers)


async def cache_map(http: aiohttp.ClientSession, proxy: ProxyProc, path: str, host: str) -> dict:
    async with http.get(proxy.url + "/_cache/" + path.lstrip("/"), headers={"Host": host}) as r:
        return await r.json()  # type: ignore[no-any-return]


async def settled(http: aiohttp.ClientSession, proxy: ProxyProc, path: str, host: str) -> dict:
    """The slice map once every slice is on disk (slices reach the store after the response)."""
    deadline = time.monotonic() + 10
    while True:
        got = await cache_map(http, proxy, path, host)
        if got.get("in_cache") and got["cached_slices"] == got["slices"] or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)


def logged(proxy: ProxyProc) -> list[AccessLine]:
    """The access log lines of requests for origins (not the proxy's own paths)."""
    own = ("/healthz", "/_cache/")
    return [x for x in access_lines(proxy.stdout_text()) if not x.target.startswith(own)]


@pytest.fixture
def two_media(tmp_path: Path, appserver_factory: Callable[..., AppServerProc]) -> tuple[AppServerProc, AppServerProc]:
    """Two appservers, each with its own ``shared.bin`` (different bytes and lengths)."""
    write_seeded_file(tmp_path / "media-a" / "shared.bin", A_SIZE, 101)
    write_seeded_file(tmp_path / "media-b" / "shared.bin", B_SIZE, 102)
    return appserver_factory(tmp_path / "media-a"), appserver_factory(tmp_path / "media-b")


@pytest.fixture
def other_origin() -> Iterator[FaultOrigin]:
    with FaultOrigin() as origin:
        yield origin


def start(proxy_factory: Callable[..., ProxyProc], tmp_path: Path, origins: list[dict], **settings: object
          ) -> ProxyProc:
    config = write_config(tmp_path / f"proxy-{len(list(tmp_path.glob('proxy-*.toml')))}.toml", origins,
                          readahead_slices=0, block_size="4MiB", **settings)
    return proxy_factory("", config=config)


async def test_the_host_picks_the_origin_and_the_access_log_names_it(two_media, proxy_factory, tmp_path, http
                                                                     ) -> None:
    app_a, app_b = two_media
    a, b = app_a.path("shared.bin").read_bytes(), app_b.path("shared.bin").read_bytes()
    proxy = start(proxy_factory, tmp_path, [{"name": "a", "hosts": ["a.test"], "upstream": app_a.url},
                                            {"name": "b", "hosts": ["b.test"], "upstream": app_b.url}])
    for host, data in (("a.test", a), ("B.Test:8080", b), ("a.test", a), ("b.test.", b)):
        out = await get(http, proxy, "shared.bin", host, rng=f"{S - 3}-{S + 99}")
        assert out.status == 206 and out.body == data[S - 3:S + 100], host
        out = await get(http, proxy, "shared.bin", host)
        assert out.status == 200 and out.body == data, host
    out = await get(http, proxy, "shared.bin", "c.test")
    assert out.status == 421 and out.body.startswith(b"421 "), out.body
    lines = poll(lambda: len(got := logged(proxy)) >= 9 and got)
    assert [x.origin for x in lines] == ["a", "a", "b", "b", "a", "a", "b", "b", "-"], lines
    assert [x.status for x in lines][-1] == 421


async def test_a_path_prefix_picks_the_origin_and_the_default_origin_takes_the_rest(
        two_media, fault_origin: FaultOrigin, proxy_factory, tmp_path, http) -> None:
    app_a, app_b = two_media
    a, b = app_a.path("shared.bin").read_bytes(), app_b.path("shared.bin").read_bytes()
    origins = [{"name": n, "hosts": ["media.test"], "path_prefix": f"/{n}/", "strip_prefix": True, "upstream": u}
               for n, u in (("a", app_a.url), ("b", app_b.url))]
    proxy = start(proxy_factory, tmp_path, origins)
    for path, data in (("a/shared.bin", a), ("b/shared.bin", b)):
        out = await get(http, proxy, path, "media.test", rng=f"{2 * S}-")
        assert out.status == 206 and out.body == data[2 * S:], path
        out = await get(http, proxy, path, "media.test")
        assert out.status == 200 and out.body == data, path
    out = await get(http, proxy, "c/shared.bin", "media.test")
    assert out.status == 404 and out.body.startswith(b"404 "), out.body  # the proxy's: no origin was asked
    assert (await get(http, proxy, "a/shared.bin", "other.test")).status == 421
    # With `upstream` as well, the default origin takes what no table takes (any host, any path).
    other = seeded_bytes(S + 17, 103)
    fault_origin.set_object("c/shared.bin", other, cache_control="max-age=600")
    fault_origin.set_object("a/shared.bin", other[::-1], cache_control="max-age=600")
    proxy = start(proxy_factory, tmp_path, origins, upstream=fault_origin.url)
    assert (await get(http, proxy, "c/shared.bin", "media.test")).body == other
    assert (await get(http, proxy, "a/shared.bin", "other.test")).body == other[::-1]
    out = await get(http, proxy, "b/shared.bin", "media.test", rng="0-99")
    assert out.status == 206 and out.body == b[:100]
    assert sorted(r.name for r in fault_origin.gets_for("c/shared.bin") + fault_origin.gets_for("a/shared.bin")) \
        == ["a/shared.bin", "c/shared.bin"]


async def test_each_origin_slices_with_its_own_slice_size(fault_origin: FaultOrigin, other_origin: FaultOrigin,
                                                         proxy_factory, tmp_path, http) -> None:
    data = seeded_bytes(8 * S, 104)
    for o in (fault_origin, other_origin):
        o.set_object("s.bin", data, cache_control="max-age=600")
    proxy = start(proxy_factory, tmp_path, [
        {"name": "small", "hosts": ["small.test"], "upstream": fault_origin.url},  # the global 64KiB
        {"name": "large", "hosts": ["large.test"], "upstream": other_origin.url, "slice_size": "256KiB"}])
    for host in ("small.test", "large.test"):
        out = await get(http, proxy, "s.bin", host, rng="200000-200099")
        assert out.status == 206 and out.body == data[200000:200100], host
    assert [r.range for r in fault_origin.gets_for("s.bin")] == [f"bytes={3 * S}-{4 * S - 1}"]
    assert [r.range for r in other_origin.gets_for("s.bin")] == [f"bytes=0-{4 * S - 1}"]
    small = await cache_map(http, proxy, "s.bin", "small.test")
    large = await cache_map(http, proxy, "s.bin", "large.test")
    assert (small["slice_size"], small["slices"]) == (S, 8) and (large["slice_size"], large["slices"]) == (4 * S, 2)


async def test_host_header_and_added_fields_reach_the_origin(fault_origin: FaultOrigin, proxy_factory, tmp_path,
                                                            http) -> None:
    data = seeded_bytes(2 * S, 105)
    fault_origin.set_object("h.bin", data, cache_control="max-age=600")
    proxy = start(proxy_factory, tmp_path, [{
        "name": "m", "hosts": ["m.test"], "upstream": fault_origin.url, "host_header": "media.example.org",
        "add_request_headers": {"X-Origin-Token": "s3cret", "X-Tier": "edge"}}])
    out = await get(http, proxy, "h.bin", "m.test", rng="5-9", **{"X-Origin-Token": "forged"})
    assert out.status == 206 and out.body == data[5:10]
    out = await fetch(http, proxy.url_for("h.bin"), method="POST", data=b"x", headers={"Host": "m.test"})
    assert out.status == 200  # a pass-through carries them too
    recs = fault_origin.requests_for("h.bin")
    assert [r.method for r in recs] == ["GET", "POST"]
    for r in recs:
        assert r.headers["Host"] == "media.example.org" and r.headers["X-Origin-Token"] == "s3cret", r.headers
        assert r.headers["X-Tier"] == "edge" and r.headers["X-Forwarded-Host"] == "m.test"


async def test_bypassed_paths_and_fields_pass_every_request_to_the_origin(fault_origin: FaultOrigin, proxy_factory,
                                                                        tmp_path, http) -> None:
    live, vod = seeded_bytes(S + 9, 106), seeded_bytes(S + 10, 107)
    fault_origin.set_object("live/now.bin", live, cache_control="max-age=600")
    fault_origin.set_object("vod.bin", vod, cache_control="max-age=600")
    proxy = start(proxy_factory, tmp_path, [{
        "name": "video", "path_prefix": "/video/", "strip_prefix": True, "upstream": fault_origin.url,
        "bypass_paths": ["/video/live/*"], "bypass_headers": ["X-No-Cache"]}])  # as config/proxy.toml shows
    for rng in (None, "3-40", None):
        out = await get(http, proxy, "video/live/now.bin", rng=rng)
        assert out.body == (live if rng is None else live[3:41]) and out.header("X-Cache") is None
        out = await get(http, proxy, "video/vod.bin", rng=rng, **{"X-No-Cache": "1"})
        assert out.body == (vod if rng is None else vod[3:41]) and out.header("X-Cache") is None
    assert len(fault_origin.gets_for("live/now.bin")) == 3 and len(fault_origin.gets_for("vod.bin")) == 3
    assert all(r.range in (None, "bytes=3-40") for r in fault_origin.gets_for("vod.bin"))  # the client's own
    # Without the field the same object is cached: a miss, then (once on disk) a hit.
    assert (await get(http, proxy, "video/vod.bin")).header("X-Cache") == "MISS"
    await settled(http, proxy, "video/vod.bin", "any.test")
    out = await get(http, proxy, "video/vod.bin")
    assert out.body == vod and out.header("X-Cache") == "HIT" and len(fault_origin.gets_for("vod.bin")) == 4
    lines = poll(lambda: len(got := logged(proxy)) >= 8 and got)
    assert [x.cache for x in lines] == ["PASS"] * 6 + ["MISS", "HIT"] and {x.origin for x in lines} == {"video"}, lines


async def test_objects_over_max_object_size_pass_through(fault_origin: FaultOrigin, proxy_factory, tmp_path,
                                                         http) -> None:
    big, small = seeded_bytes(5 * S, 108), seeded_bytes(S // 2, 109)
    fault_origin.set_object("big.bin", big, cache_control="max-age=600")
    fault_origin.set_object("small.bin", small, cache_control="max-age=600")
    proxy = start(proxy_factory, tmp_path, [{"name": "o", "upstream": fault_origin.url, "max_object_size": "128KiB"}])
    seen = 0
    for rng in ("100-199", None, f"{4 * S}-", "100-199"):
        out = await get(http, proxy, "big.bin", rng=rng)
        assert out.body == (big if rng is None else big[100:200] if rng == "100-199" else big[4 * S:])
        assert out.header("X-Cache") is None, out.headers
        assert len(fault_origin.gets_for("big.bin")) > seen  # every request reached the origin
        seen = len(fault_origin.gets_for("big.bin"))
    assert fault_origin.gets_for("big.bin")[-1].range == "bytes=100-199"  # the client's own, passed through
    assert (await cache_map(http, proxy, "big.bin", "any.test"))["in_cache"] is False  # not even its first slice
    assert (await get(http, proxy, "small.bin", rng="0-9")).header("X-Cache") == "MISS"
    await settled(http, proxy, "small.bin", "any.test")
    out = await get(http, proxy, "small.bin")
    assert out.body == small and out.header("X-Cache") == "HIT" and len(fault_origin.gets_for("small.bin")) == 1


async def test_negative_ttl_keeps_a_404_without_freshness(fault_origin: FaultOrigin, other_origin: FaultOrigin,
                                                          proxy_factory, tmp_path, http) -> None:
    proxy = start(proxy_factory, tmp_path, [
        {"name": "keep", "hosts": ["keep.test"], "upstream": fault_origin.url, "negative_ttl": "30s"},
        {"name": "plain", "hosts": ["plain.test"], "upstream": other_origin.url}], negative_ttl=0)
    for _ in range(3):
        for host in ("keep.test", "plain.test"):
            out = await get(http, proxy, "missing.bin", host)
            assert out.status == 404 and out.body == b"not found\n", host
    assert len(fault_origin.gets_for("missing.bin")) == 1  # stored for 30 s: asked once
    assert len(other_origin.gets_for("missing.bin")) == 3  # the global 0: never stored


async def test_a_purge_by_prefix_drops_only_the_objects_of_the_hosts_origin(
        fault_origin: FaultOrigin, other_origin: FaultOrigin, proxy_factory, tmp_path, http) -> None:
    objects = {name: seeded_bytes(S + n, 110 + n) for n, name in enumerate(("p/1.bin", "p/2.bin", "q/3.bin"))}
    for o in (fault_origin, other_origin):
        for name, data in objects.items():
            o.set_object(name, data, cache_control="max-age=600")
    proxy = start(proxy_factory, tmp_path, [{"name": "a", "hosts": ["a.test"], "upstream": fault_origin.url},
                                            {"name": "b", "hosts": ["b.test"], "upstream": other_origin.url}],
                  admin_token=TOKEN)
    for host in ("a.test", "b.test"):
        for name, data in objects.items():
            assert (await get(http, proxy, name, host)).body == data
            assert (await settled(http, proxy, name, host))["in_cache"]
    auth = {"Authorization": f"Bearer {TOKEN}", "Host": "a.test"}
    async with http.delete(proxy.url + "/_cache/p/*", headers=auth) as r:
        assert r.status == 200 and (await r.json())["purged"] == 2
    assert [(await cache_map(http, proxy, n, "a.test"))["in_cache"] for n in objects] == [False, False, True]
    assert [(await cache_map(http, proxy, n, "b.test"))["in_cache"] for n in objects] == [True, True, True]
    for host, expect in (("b.test", "HIT"), ("a.test", "MISS")):
        out = await get(http, proxy, "p/1.bin", host)
        assert out.body == objects["p/1.bin"] and out.header("X-Cache") == expect, host


@pytest.mark.parametrize(("table", "key", "says"), [
    ({"slice_size": "3KiB"}, "origin.a.slice_size", "must be"),
    ({"slise_size": "1MiB"}, "origin.a.slise_size", "unknown key"),
    ({"upstream": None}, "origin.a.upstream", "required"),
    ({"hosts": ["a.test"], "twice": True}, "origin.a.name", "names two origins"),
    ({"add_request_headers": {"Host": "x"}}, "origin.a.add_request_headers.Host", "field name"),
    ({"strip_prefix": True}, "origin.a.strip_prefix", "path_prefix"),
    ({"hosts": ["a.test"], "default": "http://127.0.0.1:9"}, "upstream", "origin a's first upstream already"),
])
def test_a_mistake_in_an_origin_table_stops_start_up_naming_its_key(tmp_path: Path, table: dict, key: str,
                                                                    says: str) -> None:
    origin = {"name": "a", "upstream": "http://127.0.0.1:9", **table}
    origins = [{k: v for k, v in origin.items() if v is not None and k not in ("twice", "default")}]
    if table.get("twice"):
        origins.append({"name": "a", "hosts": ["b.test"], "upstream": "http://127.0.0.1:10"})
    default = {"upstream": table["default"]} if "default" in table else {}
    stderr = config_error(write_config(tmp_path / "bad.toml", origins, **default))
    assert f"config error: {key}" in stderr and says in stderr, stderr
