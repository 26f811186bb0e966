"""[[origin]] tables checked (proxy.core.origins via the settings), without starting anything."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.core.config_error import ConfigError
from proxy.core.settings import settings_from_mapping

UP = "http://127.0.0.1:8081"


def settings(*tables: dict[str, Any], **values: Any) -> Any:
    return settings_from_mapping({"origin": list(tables), **values})


def error(*tables: dict[str, Any], **values: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        settings(*tables, **values)
    return info.value


def test_a_table_inherits_the_global_settings_and_overrides_its_own() -> None:
    s = settings({"name": "video", "upstream": [UP, "http://127.0.0.1:8082/"], "hosts": ["Media.Test"],
                  "path_prefix": "/v/", "strip_prefix": True, "slice_size": "256KiB", "default_ttl": "1h",
                  "add_request_headers": {"X-Token": "t"}, "bypass_headers": ["X-No-Cache"],
                  "cache_key": {"preset": "signed-urls"}, "aws": {"region": "eu-west-1"}},
                 default_ttl="5m", upstream_read_timeout="7s")
    (o,) = s.origins  # no upstream setting: no default origin
    assert o.upstreams == (UP, "http://127.0.0.1:8082") and o.hosts == ("media.test",)
    assert o.bypass_headers == ("x-no-cache",) and o.add_request_headers == (("X-Token", "t"),)
    assert o.aws is not None and o.aws.region == "eu-west-1" and o.aws.service == "s3"
    own = s.of_origin(o)
    assert own.slice_size == 256 * 1024 and own.default_ttl == 3600.0 and own.upstream_read_timeout == 7.0
    assert own.upstream == UP and own.origin == ()


def test_the_upstream_setting_is_the_default_origin_after_the_tables() -> None:
    s = settings({"name": "a", "upstream": "http://127.0.0.1:9001", "hosts": ["a.test"]}, upstream=UP)
    assert [(o.name, o.upstreams) for o in s.origins] == [("a", ("http://127.0.0.1:9001",)), ("default", (UP,))]


@pytest.mark.parametrize("table, key", [
    ({"upstream": UP}, "origin[1].name"),
    ({"name": "Bad Name", "upstream": UP}, "origin[1].name"),
    ({"name": "a"}, "origin.a.upstream"),
    ({"name": "a", "upstream": "ftp://x"}, "origin.a.upstream"),
    ({"name": "a", "upstream": []}, "origin.a.upstream"),
    ({"name": "a", "upstream": [UP, UP]}, "origin.a.upstream"),
    ({"name": "a", "upstream": UP, "slice_size": "3KiB"}, "origin.a.slice_size"),
    ({"name": "a", "upstream": UP, "block_size": "48KiB"}, "origin.a.block_size"),
    ({"name": "a", "upstream": UP, "slice_sise": "1MiB"}, "origin.a.slice_sise"),
    ({"name": "a", "upstream": UP, "port": 9}, "origin.a.port"),  # a global-only setting
    ({"name": "a", "upstream": UP, "hosts": ["bad host"]}, "origin.a.hosts"),
    ({"name": "a", "upstream": UP, "path_prefix": "videos"}, "origin.a.path_prefix"),
    ({"name": "a", "upstream": UP, "strip_prefix": True}, "origin.a.strip_prefix"),
    ({"name": "a", "upstream": UP, "add_request_headers": {"Host": "x"}}, "origin.a.add_request_headers.Host"),
    ({"name": "a", "upstream": UP, "add_request_headers": {"X-A": "a\nb"}}, "origin.a.add_request_headers.X-A"),
    ({"name": "a", "upstream": UP, "aws": {}}, "origin.a.aws.region"),
    ({"name": "a", "upstream": UP, "aws": {"region": "x", "access_key_id": "k"}}, "origin.a.aws.secret_access_key"),
    ({"name": "a", "upstream": UP, "aws": {"region": "x", "token": "t"}}, "origin.a.aws.token"),
    ({"name": "a", "upstream": UP, "cache_key": {"query": "shuffle"}}, "origin.a.cache_key.query"),
    ({"name": "a", "upstream": UP, "tls_verify": "no"}, "origin.a.tls_verify"),
    ({"name": "default", "upstream": UP}, "origin.default.name"),
])
def test_a_mistake_names_its_key(table: dict[str, Any], key: str) -> None:
    assert error(table).key == key


def test_tables_are_checked_against_each_other() -> None:
    a = {"name": "a", "upstream": UP, "hosts": ["a.test"]}
    assert error(a, {**a, "upstream": "http://127.0.0.1:9"}).key == "origin.a.name"
    assert error(a, {"name": "b", "upstream": UP}).key == "origin.b.upstream"  # one key space per upstream
    assert error(a, {"name": "b", "upstream": "http://127.0.0.1:9", "hosts": ["a.test"]}).key == "origin.b.path_prefix"
    assert error(a, upstream=UP).key == "upstream"  # the default origin on a table's upstream


def test_origin_tables_come_from_the_file_only() -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"upstream": UP, "origin": "x"}, typed=False)
    assert info.value.key == "origin" and "config file" in info.value.message


def test_neither_upstream_nor_tables_is_an_error_naming_upstream() -> None:
    assert error().key == "upstream"


def test_each_origin_names_its_own_change_feed_and_the_default_one_takes_the_global_keys() -> None:
    s = settings({"name": "media", "upstream": "http://127.0.0.1:8082", "hosts": ["media.test"],
                  "change_feed": "ws://127.0.0.1:8082/_events", "change_feed_token": "m3dia"},
                 {"name": "plain", "upstream": "http://127.0.0.1:8083", "hosts": ["plain.test"]},
                 upstream=UP, change_feed="ws://127.0.0.1:8081/_events", change_feed_token="d3fault")
    by_name = {o.name: o for o in s.origins}
    assert (by_name["media"].change_feed, by_name["media"].change_feed_token) == ("ws://127.0.0.1:8082/_events",
                                                                                  "m3dia")
    assert (by_name["plain"].change_feed, by_name["plain"].change_feed_token) == ("", "")  # not inherited
    assert (by_name["default"].change_feed, by_name["default"].change_feed_token) == ("ws://127.0.0.1:8081/_events",
                                                                                      "d3fault")


@pytest.mark.parametrize(("table", "key"), [
    ({"change_feed": "http://127.0.0.1:8082/_events"}, "origin.media.change_feed"),
    ({"change_feed_token": "t"}, "origin.media.change_feed_token"),
    ({"change_feed": "ws://127.0.0.1:8082/_events", "change_feed_token": "a b"}, "origin.media.change_feed_token"),
])
def test_a_bad_change_feed_names_the_tables_key(table: dict[str, Any], key: str) -> None:
    assert error({"name": "media", "upstream": "http://127.0.0.1:8082", **table}).key == key
