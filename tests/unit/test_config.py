"""proxy.core.settings: defaults, precedence, size/duration parsing, errors naming keys."""

from __future__ import annotations

import dataclasses
import pickle
import re
import socket
import tomllib
from pathlib import Path

import pytest

from proxy.core.settings import (
    ConfigError,
    GiB,
    KiB,
    MiB,
    TiB,
    Settings,
    field_names,
    format_duration,
    format_size,
    load,
    parse_duration,
    parse_size,
    settings_from_mapping,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "proxy.toml"
UP = "http://127.0.0.1:8081"


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    return str(path)


def config_error(argv: list[str], environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(argv, environ or {})
    return info.value


# --- defaults --------------------------------------------------------------------

DEFAULTS = {
    "upstream": UP,
    "origin": (),
    "change_feed": "",
    "change_feed_token": "",
    "host": "127.0.0.1",
    "port": 8080,
    "tls_cert": "",
    "tls_key": "",
    "tls_port": 8443,
    "cache_dir": "data/cache",
    "slice_size": 1 * MiB,
    "block_size": 16 * 1024,
    "cache_size": 10 * GiB,
    "max_ranges": 100,
    "max_run_slices": 16,
    "readahead_slices": 4,
    "default_ttl": 300.0,
    "negative_ttl": 60.0,
    "max_object_size": 0,
    "stale_if_error": 0.0,
    "upstream_connect_timeout": 5.0,
    "upstream_read_timeout": 30.0,
    "upstream_connections": 64,
    "grace_period": 10.0,
    "drain_period": 0.0,
    "node_name": socket.gethostname(),  # the default: the host name
    "store_threads": 4,
    "scrub_rate": 8 * MiB,
    "fill_memory": 16 * MiB,
    "log_level": "info",
    "access_log_format": "combined",
    "access_log": True,
    "workers": 1,
    "listen_backlog": 4096,
    "header_timeout": 60.0,
    "keepalive_timeout": 75.0,
    "max_connections": 10000,
    "admin_token": "",
    "protect_stats": False,
    "stats_path": "/stats",
    "metrics_path": "/metrics",
    "health_path": "/healthz",
    "purge_prefix": "/_cache/",
    "drop_request_fields": "",
    "max_variants": 8,
    "store_set_cookie": False,
}


def test_defaults() -> None:
    s = load(["--upstream", UP], {})
    assert dataclasses.asdict(s) == DEFAULTS
    assert list(DEFAULTS) == list(field_names())


def test_settings_is_frozen() -> None:
    s = load(["--upstream", UP], {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]


def test_no_file_is_read_without_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy.toml in the working directory is not picked up implicitly.
    write_toml(tmp_path, 'upstream = "http://elsewhere"\nport = 1\n')
    monkeypatch.chdir(tmp_path)
    assert load(["--upstream", UP], {}).port == 8080


def test_describe_masks_the_change_feed_token() -> None:
    s = load(["--upstream", UP, "--set", "change_feed=ws://127.0.0.1:8081/_events", "--set",
              "change_feed_token=f33d"], {})
    assert s.describe()["change_feed_token"] == "***"
    assert "f33d" not in repr(s.describe()) and "f33d" not in repr(s.origins)
    assert s.origins[-1].change_feed_token == "f33d"


def test_describe_masks_token() -> None:
    s = load(["--upstream", UP, "--set", "admin_token=s3cret"], {})
    d = s.describe()
    assert d["admin_token"] == "***"
    assert "s3cret" not in repr(d)
    assert set(d) == set(field_names())
    assert d["slice_size"] == MiB
    assert load(["--upstream", UP], {}).describe()["admin_token"] == ""


# --- precedence ------------------------------------------------------------------

PRECEDENCE = [
    # (file, env, cli, expected port, expected slice_size)
    (None, None, None, 8080, 1 * MiB),
    ("file", None, None, 1001, 2 * MiB),
    ("file", "env", None, 2002, 4 * MiB),
    ("file", "env", "cli", 3003, 8 * MiB),
    (None, "env", None, 2002, 4 * MiB),
    (None, None, "cli", 3003, 8 * MiB),
    ("file", None, "cli", 3003, 8 * MiB),
    (None, "env", "cli", 3003, 8 * MiB),
]


@pytest.mark.parametrize(("file", "env", "cli", "port", "slice_size"), PRECEDENCE)
def test_precedence(tmp_path: Path, file, env, cli, port, slice_size) -> None:
    argv = ["--upstream", UP]
    environ: dict[str, str] = {}
    if file:
        argv += ["--config", write_toml(tmp_path, 'port = 1001\nslice_size = "2MiB"\n')]
    if env:
        environ.update(RANGEPROXY_PORT="2002", RANGEPROXY_SLICE_SIZE="4MiB")
    if cli:
        argv += ["--port", "3003", "--set", "slice_size=8MiB"]
    s = load(argv, environ)
    assert (s.port, s.slice_size) == (port, slice_size)


def test_upstream_from_each_layer(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'upstream = "http://file:1"\n')
    assert load(["--config", path], {}).upstream == "http://file:1"
    env = {"RANGEPROXY_UPSTREAM": "http://env:2"}
    assert load(["--config", path], env).upstream == "http://env:2"
    assert load(["--config", path, "--upstream", "http://cli:3"], env).upstream == "http://cli:3"


def test_config_file_from_env(tmp_path: Path) -> None:
    path = write_toml(tmp_path, f'upstream = "{UP}"\nworkers = 3\n')
    assert load([], {"RANGEPROXY_CONFIG": path}).workers == 3
    # --config wins over $RANGEPROXY_CONFIG.
    other = tmp_path / "other.toml"
    other.write_text(f'upstream = "{UP}"\nworkers = 5\n')
    assert load(["--config", str(other)], {"RANGEPROXY_CONFIG": path}).workers == 5


def test_foreign_env_vars_are_ignored() -> None:
    env = {"RANGEPROXY_MEDIA_DIR": "data/media", "PATH": "/bin", "HOME": "/x"}
    assert load(["--upstream", UP], env).port == 8080


def test_set_accepts_dashes_and_last_wins() -> None:
    s = load(["--upstream", UP, "--set", "max-ranges=5", "--set", "max_ranges=7"], {})
    assert s.max_ranges == 7


def test_flag_and_set_for_the_same_key() -> None:
    assert load(["--upstream", UP, "--port", "1", "--set", "port=1"], {}).port == 1
    e = config_error(["--upstream", UP, "--port", "1", "--set", "port=2"])
    assert e.key == "port"


# --- value parsing per source ---------------------------------------------------

TEXT_VALUES = [
    # (key, text from env/CLI, parsed)
    ("port", "0", 0),
    ("port", "65535", 65535),
    ("port", " 8080 ", 8080),
    ("access_log", "true", True),
    ("access_log", "FALSE", False),
    ("access_log", "1", True),
    ("access_log", "0", False),
    ("access_log", "yes", True),
    ("access_log", "No", False),
    ("log_level", "DEBUG", "debug"),
    ("log_level", "warning", "warning"),
    ("default_ttl", "0", 0.0),
    ("default_ttl", "1.5", 1.5),
    ("default_ttl", "2h", 7200.0),
    ("default_ttl", "365d", 365 * 86400.0),
    ("upstream_read_timeout", "250ms", 0.25),
    ("grace_period", "1h", 3600.0),
    ("drain_period", "15s", 15.0),
    ("drain_period", "500ms", 0.5),
    ("node_name", "edge-3.eu", "edge-3.eu"),
    ("node_name", "n" * 64, "n" * 64),
    ("slice_size", "4KiB", 4 * KiB),
    ("slice_size", "64MiB", 64 * MiB),
    ("slice_size", "65536", 65536),
    ("cache_size", "16MiB", 16 * MiB),
    ("cache_size", "1.5GiB", 3 * GiB // 2),
    ("cache_size", "20GB", 20 * 10**9),
    ("upstream", "http://127.0.0.1:8081/", "http://127.0.0.1:8081"),
    ("upstream", "HTTPS://origin.example/media//", "https://origin.example/media"),
    ("upstream", "http://[::1]:8081", "http://[::1]:8081"),
    ("host", "::", "::"),
    ("admin_token", "s3cret-token", "s3cret-token"),
    ("admin_token", "", ""),
    ("health_path", "/-/health", "/-/health"),
    ("purge_prefix", "/admin/purge/", "/admin/purge/"),
    ("drop_request_fields", "Cookie, X-Debug", "cookie,x-debug"),
    ("drop_request_fields", "", ""),
    ("tls_cert", "", ""),
]


@pytest.mark.parametrize(("key", "text", "expected"), TEXT_VALUES)
def test_text_values_from_env_and_cli(key: str, text: str, expected: object) -> None:
    base = [] if key == "upstream" else ["--upstream", UP]
    from_env = load(base, {"RANGEPROXY_" + key.upper(): text})
    from_cli = load(base + ["--set", f"{key}={text}"], {})
    assert getattr(from_env, key) == expected
    assert getattr(from_cli, key) == expected


TOML_VALUES = [
    # (TOML line, key, parsed)
    ("port = 9000", "port", 9000),
    ('slice_size = "512KiB"', "slice_size", 512 * KiB),
    ("slice_size = 65536", "slice_size", 65536),
    ("default_ttl = 60", "default_ttl", 60.0),
    ("default_ttl = 0.5", "default_ttl", 0.5),
    ('default_ttl = "10m"', "default_ttl", 600.0),
    ("access_log = false", "access_log", False),
    ('log_level = "Error"', "log_level", "error"),
    ('cache_dir = "/var/cache/rangeproxy"', "cache_dir", "/var/cache/rangeproxy"),
]


@pytest.mark.parametrize(("line", "key", "expected"), TOML_VALUES)
def test_toml_values(tmp_path: Path, line: str, key: str, expected: object) -> None:
    path = write_toml(tmp_path, f'upstream = "{UP}"\n{line}\n')
    assert getattr(load(["--config", path], {}), key) == expected


# --- bad values name their key -----------------------------------------------------

BAD_TEXT = [
    # (key, text from env/CLI, fragment of the message)
    ("port", "abc", "an integer between 0 and 65535"),
    ("port", "65536", "an integer between 0 and 65535"),
    ("port", "-1", "an integer between 0 and 65535"),
    ("port", "80.0", "an integer"),
    ("port", "", "an integer"),
    ("workers", "0", "between 1 and 64"),
    ("listen_backlog", "0", "an integer between 1 and 65535"),
    ("listen_backlog", "65536", "an integer between 1 and 65535"),
    ("header_timeout", "0", "between 0s and 1h"),
    ("keepalive_timeout", "2h", "between 0s and 1h"),
    ("max_connections", "0", "between 1 and 1000000"),
    ("max_ranges", "1001", "between 1 and 1000"),
    ("max_run_slices", "0", "between 1 and 1024"),
    ("readahead_slices", "65", "between 0 and 64"),
    ("upstream_connections", "10001", "between 1 and 10000"),
    ("store_threads", "0", "between 1 and 64"),
    ("scrub_rate", "65GiB", "a size between 0B and 64GiB"),
    ("scrub_rate", "fast", "a size"),
    ("slice_size", "abc", "a size between 4KiB and 64MiB"),
    ("slice_size", "2KiB", "a size between 4KiB and 64MiB"),
    ("slice_size", "65MiB", "a size between 4KiB and 64MiB"),
    ("cache_size", "8MiB", "a size between 16MiB and 1024TiB"),
    ("default_ttl", "-1", "a duration between 0s and 365d"),
    ("default_ttl", "366d", "a duration between 0s and 365d"),
    ("default_ttl", "5 minutes", "a duration"),
    ("upstream_connect_timeout", "0", "a duration > 0"),
    ("upstream_read_timeout", "0s", "a duration > 0"),
    ("upstream_read_timeout", "inf", "a duration > 0"),
    ("grace_period", "2h", "between 0s and 1h"),
    ("drain_period", "2h", "between 0s and 1h"),
    ("drain_period", "-1s", "between 0s and 1h"),
    ("node_name", "edge 3", "at most 64 visible ASCII characters without blanks"),
    ("node_name", "n" * 65, "at most 64 visible ASCII characters"),
    ("node_name", "nœud", "visible ASCII"),
    ("node_name", "a\tb", "visible ASCII"),
    ("access_log", "maybe", "true or false"),
    ("access_log", "", "true or false"),
    ("log_level", "verbose", "one of debug, info, warning, error"),
    ("log_level", "warn", "one of debug, info, warning, error"),
    ("host", "", "non-empty"),
    ("host", "local host", "non-empty string without blanks"),
    ("cache_dir", "", "directory path"),
    ("admin_token", "has space", "visible ASCII"),
    ("stats_path", "stats", 'starting with "/"'),
    ("metrics_path", "/metrics?x=1", 'starting with "/"'),
    ("health_path", "/health z", 'starting with "/"'),
    ("purge_prefix", "/_cache", 'ending with "/"'),
    ("drop_request_fields", "Cookie; X-Debug", "header field names separated by commas"),
    ("drop_request_fields", "Cookie,,X", "header field names separated by commas"),
    ("upstream", "ftp://origin", "http:// or https://"),
    ("upstream", "127.0.0.1:8081", "http:// or https://"),
    ("upstream", "http://", "with a host"),
    ("upstream", "http:///path", "with a host"),
    ("upstream", "http://origin/?a=1", "no query"),
    ("upstream", "http://origin/#frag", "fragment"),
    ("upstream", "http://user:pw@origin", "credentials"),
    ("upstream", "http://origin:99999", "http://"),
    ("upstream", "http://origin:port", "http://"),
    ("upstream", "http://ori gin", "http://"),
    ("upstream", "", "http://"),
]


@pytest.mark.parametrize(("key", "text", "fragment"), BAD_TEXT)
def test_bad_text_value_names_key(key: str, text: str, fragment: str) -> None:
    base = [] if key == "upstream" else ["--upstream", UP]
    var = "RANGEPROXY_" + key.upper()
    for argv, environ, where in (
        (base, {var: text}, var),
        (base + ["--set", f"{key}={text}"], {}, f"--set {key}"),
    ):
        e = config_error(argv, environ)
        assert e.key == key
        assert str(e).startswith(f"{key}: must be ")
        assert fragment in str(e)
        assert f"(got {_quoted(text)} from {where})" in str(e)


def _quoted(text: str) -> str:
    return '"' + text + '"'


def test_dedicated_flag_is_named_as_source() -> None:
    e = config_error(["--upstream", UP, "--slice-size", "abc"])
    assert str(e) == 'slice_size: must be a size between 4KiB and 64MiB (got "abc" from --slice-size)'


def test_message_without_source() -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"upstream": UP, "slice_size": "abc"})
    assert str(info.value) == 'slice_size: must be a size between 4KiB and 64MiB (got "abc")'


BAD_TOML = [
    # (TOML line, key, fragment): TOML types are checked, no coercion
    ("port = \"8080\"", "port", 'got "8080"'),
    ("port = 8080.0", "port", "got float 8080.0"),
    ("port = true", "port", "got boolean true"),
    ("host = 127", "host", "got integer 127"),
    ("upstream = [\"http://a\"]", "upstream", "got an array"),
    ("access_log = \"true\"", "access_log", 'got "true"'),
    ("access_log = 1", "access_log", "got integer 1"),
    ("slice_size = 1.5", "slice_size", "got float 1.5"),
    ("slice_size = false", "slice_size", "got boolean false"),
    ("default_ttl = true", "default_ttl", "got boolean true"),
    ("default_ttl = nan", "default_ttl", "got float nan"),
    ("log_level = 1", "log_level", "got integer 1"),
]


@pytest.mark.parametrize(("line", "key", "fragment"), BAD_TOML)
def test_bad_toml_type_names_key(tmp_path: Path, line: str, key: str, fragment: str) -> None:
    head = "" if key == "upstream" else f'upstream = "{UP}"\n'
    path = write_toml(tmp_path, f"{head}{line}\n")
    e = config_error(["--config", path])
    assert e.key == key
    assert str(e).startswith(f"{key}: must be ")
    assert f"({fragment} from {path})" in str(e)


def test_bad_file_value_fails_even_when_overridden(tmp_path: Path) -> None:
    path = write_toml(tmp_path, f'upstream = "{UP}"\nport = "x"\n')
    assert config_error(["--config", path, "--port", "1"]).key == "port"


COMBINATIONS = [
    # (--set arguments, key, fragment)
    (["slice_size=8MiB", "cache_size=16MiB"], "cache_size", "at least 4 * slice_size = 32MiB"),
    (["protect_stats=true"], "protect_stats", "needs admin_token"),
    (["metrics_path=/stats"], "metrics_path", "must differ from stats_path"),
    (["health_path=/stats.json"], "health_path", "must differ from stats_path"),
    (["health_path=/_cache/health"], "health_path", "must not be under purge_prefix"),
    (["purge_prefix=/"], "stats_path", "must not be under purge_prefix"),
    (["tls_cert=a.pem"], "tls_key", "must be set too"),
    (["tls_key=k.pem"], "tls_cert", "must be set too"),
    (["tls_cert=a.pem", "tls_key=k.pem", "tls_port=8080"], "tls_port", "must differ from port"),
]


@pytest.mark.parametrize(("sets", "key", "fragment"), COMBINATIONS)
def test_bad_combinations_name_key(sets: list[str], key: str, fragment: str) -> None:
    argv = ["--upstream", UP]
    for item in sets:
        argv += ["--set", item]
    e = config_error(argv)
    assert e.key == key
    assert fragment in str(e)


def test_good_combinations() -> None:
    s = load(["--upstream", UP, "--set", "slice_size=8MiB", "--set", "cache_size=32MiB",
              "--set", "protect_stats=yes", "--set", "admin_token=t"], {})
    assert (s.cache_size, s.protect_stats) == (32 * MiB, True)


# --- unknown keys and missing upstream -----------------------------------------------


def test_unknown_key_in_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, f'upstream = "{UP}"\nslice_sise = "1MiB"\n')
    e = config_error(["--config", path])
    assert e.key == "slice_sise"
    assert "unknown key" in str(e) and path in str(e)
    assert "did you mean slice_size?" in str(e)


def test_unknown_table_in_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, f'upstream = "{UP}"\n[cache]\nsize = 1\n')
    e = config_error(["--config", path])
    assert e.key == "cache"
    assert "unknown key" in str(e)


def test_unknown_key_in_env() -> None:
    e = config_error(["--upstream", UP], {"RANGEPROXY_SLICESIZE": "1MiB"})
    assert e.key == "RANGEPROXY_SLICESIZE"
    assert "did you mean RANGEPROXY_SLICE_SIZE?" in str(e)


def test_lowercase_env_name_is_unknown() -> None:
    e = config_error(["--upstream", UP], {"RANGEPROXY_port": "1"})
    assert e.key == "RANGEPROXY_port"
    assert "did you mean RANGEPROXY_PORT?" in str(e)


def test_unknown_key_without_close_match_lists_keys() -> None:
    e = config_error(["--upstream", UP], {"RANGEPROXY_ZZZZZZZZ": "1"})
    assert "known keys:" in str(e) and "RANGEPROXY_SLICE_SIZE" in str(e)


def test_unknown_key_in_set() -> None:
    e = config_error(["--upstream", UP, "--set", "readahead=4"])
    assert e.key == "readahead"
    assert "did you mean readahead_slices?" in str(e)


def test_set_config_is_refused() -> None:
    assert config_error(["--upstream", UP, "--set", "config=x.toml"]).key == "config"


MISSING_UPSTREAM = [
    ([], {}),
    (["--port", "1"], {"RANGEPROXY_PORT": "2"}),
]


@pytest.mark.parametrize(("argv", "environ"), MISSING_UPSTREAM)
def test_missing_upstream(argv: list[str], environ: dict[str, str]) -> None:
    e = config_error(argv, environ)
    assert e.key == "upstream"
    assert str(e) == ("upstream: required: the origin base URL, e.g. http://127.0.0.1:8081 "
                      "(or [[origin]] tables in the config file)")


def test_missing_upstream_with_file(tmp_path: Path) -> None:
    assert config_error(["--config", write_toml(tmp_path, "port = 1\n")]).key == "upstream"


def test_unreadable_and_invalid_config_file(tmp_path: Path) -> None:
    e = config_error(["--config", str(tmp_path / "nope.toml")])
    assert e.key == "config" and "cannot read" in str(e)
    e = config_error(["--config", write_toml(tmp_path, "port = = 1\n")])
    assert e.key == "config" and "not valid TOML" in str(e)


ARGPARSE_ERRORS = [
    ["--set", "no-equals-sign"],
    ["--set", "=1"],
    ["--bogus"],
    ["--port"],
    ["--up", UP],  # no abbreviations
]


@pytest.mark.parametrize("argv", ARGPARSE_ERRORS)
def test_argparse_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        load(argv, {})
    assert info.value.code == 2
    assert "rangeproxy" in capsys.readouterr().err


def test_config_error_pickles() -> None:
    e = pickle.loads(pickle.dumps(ConfigError("port", "must be an integer")))
    assert (e.key, e.message, str(e)) == ("port", "must be an integer", "port: must be an integer")


# --- size and duration parsing ---------------------------------------------------------

SIZES = [
    ("0", 0),
    ("1048576", 1048576),
    (1048576, 1048576),
    (0, 0),
    ("1B", 1),
    ("512KiB", 512 * KiB),
    ("1MiB", MiB),
    ("1mib", MiB),
    ("1MIB", MiB),
    ("10GiB", 10 * GiB),
    ("2TiB", 2 * TiB),
    ("1 MiB", MiB),
    ("  4KiB ", 4 * KiB),
    ("1KB", 1000),
    ("1 MB", 10**6),
    ("10gb", 10 * 10**9),
    ("3TB", 3 * 10**12),
    ("1.5GiB", 3 * GiB // 2),
    ("0.5MiB", MiB // 2),
    ("1.3KiB", 1331),  # 1331.2 rounded down
    ("2.5MB", 2_500_000),
]


@pytest.mark.parametrize(("text", "expected"), SIZES)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected
    assert type(parse_size(text)) is int


BAD_SIZES = [
    "", " ", "abc", "MiB", "1M", "1K", "1G", "1 M", "1Mi", "1MiBs", "1 MiB x", "-1", "+1",
    "-1MiB", "1e6", "1_000", "1.", ".5MiB", "1..5MiB", "1,5MiB", "0x10", "1 Mi B", "½MiB",
    "١٢", "inf", "nan", -1, True, False, 1.5, None, [1],
]


@pytest.mark.parametrize("text", BAD_SIZES)
def test_parse_size_rejects(text: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_size(text)  # type: ignore[arg-type]
    assert info.value.key == "size"
    assert "must be a size" in str(info.value)


def test_parse_size_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_size("junk", key="slice_size")
    assert str(info.value).startswith('slice_size: must be a size like 1MiB')
    assert '(got "junk")' in str(info.value)


DURATIONS = [
    (0, 0.0),
    (30, 30.0),
    (0.5, 0.5),
    ("0", 0.0),
    ("30", 30.0),
    ("2.5", 2.5),
    ("500ms", 0.5),
    ("1ms", 0.001),
    ("30s", 30.0),
    ("1.5s", 1.5),
    ("5m", 300.0),
    ("1h", 3600.0),
    ("1.5h", 5400.0),
    ("1d", 86400.0),
    ("10 s", 10.0),
    (" 5M ", 300.0),
    ("250MS", 0.25),
]


@pytest.mark.parametrize(("text", "expected"), DURATIONS)
def test_parse_duration(text: str | float, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)
    assert type(parse_duration(text)) is float


BAD_DURATIONS = [
    "", "abc", "s", "-1", "-1s", "+1s", "1e3", "1.", ".5s", "1w", "1y", "5min", "1h30m",
    "1 hour", "inf", "nan", "1_000", "٣s", -1, -0.5, float("inf"), float("nan"), True, None,
]


@pytest.mark.parametrize("text", BAD_DURATIONS)
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(text)  # type: ignore[arg-type]
    assert info.value.key == "duration"
    assert "must be a duration" in str(info.value)


FORMATS = [
    (format_size, 4 * KiB, "4KiB"),
    (format_size, 64 * MiB, "64MiB"),
    (format_size, 10 * GiB, "10GiB"),
    (format_size, 1024 * TiB, "1024TiB"),
    (format_size, 1500, "1500B"),
    (format_size, 0, "0B"),
    (format_duration, 0, "0s"),
    (format_duration, 0.5, "500ms"),
    (format_duration, 30, "30s"),
    (format_duration, 300, "5m"),
    (format_duration, 3600, "1h"),
    (format_duration, 365 * 86400, "365d"),
]


@pytest.mark.parametrize(("fmt", "value", "text"), FORMATS)
def test_formats_round_trip(fmt, value, text: str) -> None:
    assert fmt(value) == text
    parse = parse_size if fmt is format_size else parse_duration
    assert parse(text) == value


# --- the shipped config file ----------------------------------------------------------


def test_shipped_config_loads() -> None:
    s = load(["--config", str(SHIPPED)], {})
    assert s.upstream == "http://127.0.0.1:8081"
    assert s.cache_dir == "data/cache"
    assert s.port == 8080
    # Apart from upstream, the shipped file states the defaults.
    assert dataclasses.asdict(s) == DEFAULTS


def test_shipped_config_is_complete_and_commented() -> None:
    text = SHIPPED.read_text()
    with SHIPPED.open("rb") as fh:
        data = tomllib.load(fh)
    # Every key is set to its default, except the [[origin]] tables: the file shows them as
    # commented examples (the demo has one origin, the upstream setting).
    assert set(data) == set(field_names()) - {"origin"}
    assert re.search(r"^# \[\[origin\]\]$", text, re.M)
    lines = text.splitlines()
    for name in set(field_names()) - {"origin"}:
        (index,) = [i for i, line in enumerate(lines) if re.match(rf"{name}\s*=", line)]
        assert lines[index - 1].startswith("#"), f"{name} has no comment above it"


def test_an_empty_node_name_is_the_host_name() -> None:
    assert load(["--upstream", UP, "--set", "node_name="], {}).node_name == socket.gethostname()
    assert load(["--upstream", UP], {"RANGEPROXY_NODE_NAME": "edge-1"}).node_name == "edge-1"


def test_a_host_name_that_cannot_be_a_node_name_must_be_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    import proxy.core.settings as settings_module

    monkeypatch.setattr(settings_module, "host_name", lambda: "x" * 70)
    err = config_error(["--upstream", UP])
    assert err.key == "node_name" and "host name" in str(err)
    assert load(["--upstream", UP, "--set", "node_name=edge-2"], {}).node_name == "edge-2"


def test_settings_fields_match_api() -> None:
    assert [f.name for f in dataclasses.fields(Settings)] == list(field_names())
    assert Settings.__slots__  # slots=True
