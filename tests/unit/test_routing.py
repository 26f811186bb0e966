"""Which origin takes a request (proxy.core.routing), without sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from proxy.core.origins import OriginConfig, default_origin
from proxy.core.routing import Routed, Router, Unrouted, request_host


def origin(name: str, hosts: tuple[str, ...] = (), prefix: str = "/", strip: bool = False) -> OriginConfig:
    return OriginConfig(name, (f"http://{name}.internal",), hosts, prefix, strip)


ROUTER = Router([
    origin("exact", ("media.example.org",)),
    origin("exact-videos", ("media.example.org",), "/videos/", strip=True),
    origin("wild", ("*.example.org",)),
    origin("deeper", ("*.cdn.example.org",)),
    origin("anyhost-dl", (), "/downloads"),
    default_origin("http://default.internal"),
])


def name_of(host: str | None, target: str) -> str | int:
    got = ROUTER.route(host, target)
    return got.origin.name if isinstance(got, Routed) else got.status


@pytest.mark.parametrize("host, target, want", [
    ("media.example.org", "/a.mp4", "exact"),
    ("MEDIA.example.org:8080", "/a.mp4", "exact"),  # case and port do not matter (RFC 9110 §4.2.3)
    ("media.example.org.", "/a.mp4", "exact"),  # nor a trailing dot
    ("media.example.org", "/videos/a.mp4", "exact-videos"),
    ("media.example.org", "/videos", "exact-videos"),
    ("media.example.org", "/videosx/a.mp4", "exact"),  # a prefix ends on a segment boundary
    ("img.example.org", "/a.png", "wild"),
    ("a.b.example.org", "/a.png", "wild"),
    ("x.cdn.example.org", "/a.png", "deeper"),  # the longer pattern first
    ("example.org", "/a.png", "default"),  # *.example.org is not example.org itself
    ("other.test", "/downloads/x.iso", "anyhost-dl"),
    ("other.test", "/a", "default"),
    (None, "/a", "default"),
    ("[::1]:8080", "/a", "default"),
])
def test_host_then_longest_prefix(host: str | None, target: str, want: str) -> None:
    assert name_of(host, target) == want


def test_an_exact_host_without_the_path_falls_back_to_less_specific_origins() -> None:
    router = Router([origin("v", ("media.test",), "/videos/"), origin("any")])
    assert isinstance(got := router.route("media.test", "/pdf/a.pdf"), Routed) and got.origin.name == "any"


def test_421_for_a_host_no_origin_takes_and_404_for_a_path_none_takes() -> None:
    router = Router([origin("a", ("a.test",)), origin("b", ("b.test",), "/b/")])
    got = router.route("c.test", "/x")
    assert isinstance(got, Unrouted) and got.status == 421 and "c.test" in got.reason
    got = router.route("b.test", "/x")
    assert isinstance(got, Unrouted) and got.status == 404 and "/x" in got.reason
    assert Router([]).route("a.test", "/").status == 421  # type: ignore[union-attr]


@pytest.mark.parametrize("target, upstream", [
    ("/videos/a.mp4?x=1", "/a.mp4?x=1"),
    ("/videos", "/"),
    ("/videos?x=1", "/?x=1"),
    ("/videos/", "/"),
])
def test_strip_prefix_keeps_a_leading_slash_and_the_query(target: str, upstream: str) -> None:
    got = ROUTER.route("media.example.org", target)
    assert isinstance(got, Routed) and got.target == upstream


def test_the_only_origin_takes_everything_without_a_lookup() -> None:
    router = Router([default_origin("http://o")])
    got = router.route("anything", "/x?y")
    assert isinstance(got, Routed) and got.target == "/x?y" and got.origin.name == "default"


@given(st.text(alphabet="abcdefghij.-:[]0123456789", max_size=30))
def test_request_host_never_raises_and_has_no_port(host: str) -> None:
    name = request_host(host)
    assert name == name.lower()
    assert not name.endswith(".") or name == ""
