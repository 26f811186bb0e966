"""proxy.core.changes: an origin's change announcements as values, and the targets they name."""

from __future__ import annotations

import json

import pytest

from proxy.core.changes import FeedHello, OriginChange, check_feed_url, parse_message, upstream_target
from proxy.core.config_error import ConfigError


def test_a_change_is_read_with_its_etag_and_size() -> None:
    msg = json.dumps({"type": "changed", "path": "/videos/a%20b.mp4", "etag": '"1-2-3"', "size": 4096, "time": 1.5})
    assert parse_message(msg) == OriginChange("changed", "/videos/a%20b.mp4", '"1-2-3"', 4096)


def test_a_deletion_has_no_etag_or_size() -> None:
    msg = json.dumps({"type": "deleted", "path": "/a.bin", "etag": None, "size": None})
    assert parse_message(msg) == OriginChange("deleted", "/a.bin")


def test_the_greeting_and_unknown_types() -> None:
    assert parse_message('{"type": "hello", "version": 1}') == FeedHello(1)
    assert parse_message('{"type": "renamed", "from": "/a", "to": "/b"}') is None  # a newer origin's


@pytest.mark.parametrize(("text", "says"), [
    ("not json", "not JSON"),
    ("[1, 2]", "JSON object"),
    ('{"path": "/a"}', "JSON object"),
    ('{"type": "hello"}', "version"),
    ('{"type": "changed", "path": "a.bin"}', "path"),
    ('{"type": "changed", "path": "/a b"}', "path"),
    ('{"type": "changed", "path": "/a\\u0000"}', "path"),
    ('{"type": "changed", "path": "/a", "etag": 7}', "etag"),
    ('{"type": "changed", "path": "/a", "size": -1}', "size"),
    ('{"type": "changed", "path": "/a", "size": true}', "size"),
])
def test_a_malformed_message_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_message(text)


@pytest.mark.parametrize(("upstream", "path", "target"), [
    ("http://origin:8081", "/a.bin", "/a.bin"),
    ("http://origin:8081", "/films/a.bin", "/films/a.bin"),
    ("http://origin:8081/films", "/films/a.bin", "/a.bin"),
    ("http://origin:8081/films", "/films/sub/a.bin", "/sub/a.bin"),
    ("http://origin:8081/films", "/filmstrip/a.bin", None),  # not under the base path
    ("http://origin:8081/films", "/other/a.bin", None),
])
def test_the_target_of_an_announced_path(upstream: str, path: str, target: str | None) -> None:
    assert upstream_target(upstream, path) == target


@pytest.mark.parametrize("url", ["ws://127.0.0.1:8081/_events", "wss://media.example.org/_events?x=1",
                                 "WS://[::1]:8081/_events", ""])
def test_feed_urls_that_are_taken(url: str) -> None:
    assert check_feed_url(url, "change_feed") == url


@pytest.mark.parametrize("url", ["http://127.0.0.1:8081/_events", "ws:///_events", "ws://user:pw@host/_events",
                                 "ws://host:99999/", "ws://host/a b", "ws://host/#frag", 7])
def test_feed_urls_that_are_refused_name_the_key(url: object) -> None:
    with pytest.raises(ConfigError) as exc:
        check_feed_url(url, "origin.media.change_feed")
    assert exc.value.key == "origin.media.change_feed"
