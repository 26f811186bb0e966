"""appserver.config: TOML file + flags, flags win, bad values name their key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from appserver.config import DEFAULTS, ConfigError, load
from tests.support.certs import make_self_signed_cert
from tests.support.tls import issue_certificate

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def media(tmp_path: Path) -> Path:
    d = tmp_path / "m"
    d.mkdir()
    return d


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "appserver.toml"
    p.write_text(text)
    return str(p)


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, media: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no config/appserver.toml here
    s = load(["--media-dir", str(media)])
    assert (s.host, s.port, s.server) == (DEFAULTS["host"], DEFAULTS["port"], DEFAULTS["server"])
    assert s.media_dir == str(media)


def test_file_then_flags_win(tmp_path: Path, media: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path, 'media_dir = "m"\nhost = "0.0.0.0"\nport = 9000\nserver = "granian"\n')
    s = load(["--config", cfg])
    assert (s.media_dir, s.host, s.port, s.server) == (str(media), "0.0.0.0", 9000, "granian")
    s = load(["--config", cfg, "--port", "9100", "--server", "aiohttp", "--host", "localhost"])
    assert (s.port, s.server, s.host) == (9100, "aiohttp", "localhost")


@pytest.mark.parametrize(
    "text,flags,key",
    [
        ("port = 70000\n", [], "port"),
        ('port = "x"\n', [], "port"),
        ("port = true\n", [], "port"),
        ("", ["--port", "-1"], "port"),
        ('server = "uvicorn"\n', [], "server"),
        ('host = "bad host!"\n', [], "host"),
        ("host = 5\n", [], "host"),
        ('media_dir = "does/not/exist"\n', [], "media_dir"),
        ("colour = 1\n", [], "colour"),
        ("port = [\n", [], "config"),
        ('cors_origin = "example.org"\n', [], "cors_origin"),
        ('cors_origin = "https://example.org/path"\n', [], "cors_origin"),
        ('cors_origin = "ftp://example.org"\n', [], "cors_origin"),
        ("cors_origin = 1\n", [], "cors_origin"),
        ("", ["--cors-origin", "http://a.test:99999"], "cors_origin"),
        ('events_token = ""\n', [], "events_token"),
        ('events_token = "two words"\n', [], "events_token"),
        ("events_token = 42\n", [], "events_token"),
        ('events_token = "caf\u00e9"\n', [], "events_token"),
        ("", ["--events-token", "tab\there"], "events_token"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, media: Path, text: str, flags: list[str], key: str) -> None:
    cfg = write(tmp_path, text)
    argv = ["--config", cfg, *flags]
    if "media_dir" not in text:
        argv += ["--media-dir", str(media)]
    with pytest.raises(ConfigError) as err:
        load(argv)
    assert str(err.value).startswith(key + ":")


def test_cors_origin(tmp_path: Path, media: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load(["--media-dir", str(media)]).cors_origin is None  # off by default
    cfg = write(tmp_path, 'cors_origin = "*"\n')
    assert load(["--config", cfg, "--media-dir", str(media)]).cors_origin == "*"
    s = load(["--config", cfg, "--media-dir", str(media), "--cors-origin", "http://127.0.0.1:8000"])
    assert s.cors_origin == "http://127.0.0.1:8000"
    assert load(["--config", cfg, "--media-dir", str(media), "--cors-origin", ""]).cors_origin is None


def test_events_token(tmp_path: Path, media: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load(["--media-dir", str(media)]).events_token is None  # the feed is off by default
    cfg = write(tmp_path, 'events_token = "from-the-file"\n')
    s = load(["--config", cfg, "--media-dir", str(media)])
    assert s.events_token == "from-the-file"
    assert "from-the-file" not in repr(s)  # a secret: not in reprs (or logs made of them)
    assert load(["--config", cfg, "--media-dir", str(media), "--events-token", "A~z!9"]).events_token == "A~z!9"


def test_a_bad_events_token_is_not_echoed(tmp_path: Path, media: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(["--media-dir", str(media), "--events-token", "almost secret"])
    assert str(err.value).startswith("events_token:") and "almost secret" not in str(err.value)


def test_tls_files_from_the_file_or_flags(tmp_path: Path, media: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _, chain, key = issue_certificate(tmp_path)
    cfg = write(tmp_path, f'media_dir = "m"\nserver = "hypercorn"\ncertfile = "{chain.name}"\nkeyfile = "{key.name}"\n')
    s = load(["--config", cfg])
    assert (s.server, s.certfile, s.keyfile) == ("hypercorn", str(chain), str(key))
    s = load(["--media-dir", str(media), "--server", "hypercorn", "--certfile", str(chain), "--keyfile", str(key)])
    assert (s.certfile, s.keyfile) == (str(chain), str(key))
    assert load(["--media-dir", str(media), "--server", "hypercorn"]).certfile is None  # h2c, no TLS


@pytest.mark.parametrize(("flags", "key", "says"), [
    (["--server", "hypercorn", "--certfile", "CHAIN"], "keyfile", "required with certfile"),
    (["--server", "hypercorn", "--keyfile", "KEY"], "certfile", "required with keyfile"),
    (["--server", "hypercorn", "--certfile", "MISSING", "--keyfile", "KEY"], "certfile", "not a readable file"),
    (["--server", "hypercorn", "--certfile", "KEY", "--keyfile", "KEY"], "certfile", "do not load"),
    (["--server", "granian", "--certfile", "CHAIN", "--keyfile", "KEY"], "certfile", "hypercorn or h3 only"),
    (["--certfile", "CHAIN", "--keyfile", "KEY"], "certfile", "hypercorn or h3 only"),  # the default server
])
def test_tls_mistakes_name_the_key(tmp_path: Path, media: Path, flags: list[str], key: str, says: str) -> None:
    _, chain, pem_key = issue_certificate(tmp_path)
    names = {"CHAIN": str(chain), "KEY": str(pem_key), "MISSING": str(tmp_path / "nope.pem")}
    with pytest.raises(ConfigError) as err:
        load(["--media-dir", str(media), *[names.get(f, f) for f in flags]])
    assert str(err.value).startswith(f"{key}:") and says in str(err.value), str(err.value)


def test_missing_explicit_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^config:"):
        load(["--config", str(tmp_path / "nope.toml")])


def test_repo_config_file_is_valid(media: Path) -> None:
    cfg = ROOT / "config" / "appserver.toml"
    if not cfg.exists():
        pytest.skip("config/appserver.toml not present")
    s = load(["--config", str(cfg), "--media-dir", str(media)])
    assert s.server in ("aiohttp", "granian", "hypercorn") and 0 <= s.port <= 65535


def test_cli_exits_with_the_key_in_the_message(media: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "appserver", "--media-dir", str(media), "--port", "nope"],
        capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "port:" in proc.stderr


def test_certfile_keyfile_both_or_neither_and_h3_needs_them(tmp_path: Path, media: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    made = make_self_signed_cert(tmp_path, "t")
    c, k = made.certfile.name, made.keyfile.name
    s = load(["--media-dir", str(media), "--server", "h3", "--certfile", c, "--keyfile", k])
    assert (s.server, s.certfile, s.keyfile) == ("h3", str(made.certfile), str(made.keyfile))
    cfg = write(tmp_path, f'media_dir = "m"\nserver = "h3"\ncertfile = "{c}"\nkeyfile = "{k}"\n')
    assert load(["--config", cfg]).certfile == str(made.certfile)
    with pytest.raises(ConfigError, match="^keyfile: required with certfile"):
        load(["--media-dir", str(media), "--server", "h3", "--certfile", c])
    with pytest.raises(ConfigError, match="^certfile: server h3 needs"):
        load(["--media-dir", str(media), "--server", "h3"])
    with pytest.raises(ConfigError, match="^keyfile: not a readable file"):
        load(["--media-dir", str(media), "--server", "h3", "--certfile", c, "--keyfile", "missing.pem"])