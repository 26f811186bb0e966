"""appserver.changes: watcher batches to feed events by the app's serving rules, the bounded
subscriber queue, and the hub's watcher lifetime (real files, real inotify, no sockets)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from watchfiles import Change

from appserver.app import make_etag
from appserver.changes import (
    CLOSE_TRY_AGAIN_LATER, ChangeHub, Subscription, events_for, served_stat, url_path,
)
from tests.support.cachedir import until

NOW = 1_800_000_000.5


@pytest.fixture
def root(tmp_path: Path) -> str:
    r = tmp_path / "media"
    (r / "videos").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    (r / "escape.txt").symlink_to(outside / "secret.txt")
    (r / "escape_dir").symlink_to(outside)
    return os.path.realpath(r)


def test_url_path_quotes_like_the_app_expects(root: str) -> None:
    assert url_path(root, os.path.join(root, "videos", "a b#1.mp4")) == "/videos/a%20b%231.mp4"
    assert url_path(root, os.path.join(root, "caf\u00e9.txt")) == "/caf%C3%A9.txt"
    assert url_path(root, os.path.join(root, ".hidden~")) == "/.hidden~"  # the app serves it: so announced


@pytest.mark.parametrize("rel", ["back\\slash.txt", "", "../outside/secret.txt", "bad\udcff.bin"])
def test_url_path_refuses_what_no_url_reaches(root: str, rel: str) -> None:
    assert url_path(root, os.path.join(root, rel)) is None


def test_served_stat_follows_the_apps_rules(root: str) -> None:
    f = Path(root, "videos", "a.mp4")
    f.write_bytes(b"x" * 10)
    st = served_stat(root, str(f))
    assert st is not None and make_etag(st) == make_etag(os.stat(f)) and st.st_size == 10
    Path(root, "inner").symlink_to(f)  # a symlink staying inside: served, with the target's stat
    inner = served_stat(root, os.path.join(root, "inner"))
    assert inner is not None and inner.st_ino == st.st_ino
    os.mkfifo(os.path.join(root, "pipe"))
    for rel in ("escape.txt", "videos", "pipe", "gone.bin", "escape_dir/secret.txt"):
        assert served_stat(root, os.path.join(root, rel)) is None, rel


def test_events_for_one_batch(root: str) -> None:
    new = Path(root, "videos", "new.mp4")
    new.write_bytes(b"n" * 3)
    old = Path(root, "old.bin")
    old.write_bytes(b"o" * 7)
    batch = {
        (Change.added, str(new)), (Change.modified, str(new)),  # created and written: one event
        (Change.modified, str(old)),
        (Change.deleted, os.path.join(root, "removed.txt")),
        (Change.added, os.path.join(root, "flash.tmp")), (Change.deleted, os.path.join(root, "flash.tmp")),
        (Change.added, os.path.join(root, "videos")),  # a directory: not served itself
        (Change.modified, os.path.join(root, "escape.txt")),  # a symlink out of the root: 404 now
        (Change.modified, os.path.join(root, "escape_dir", "secret.txt")),  # reached through one: never served
        (Change.added, os.path.join(root, "back\\slash")),
    }
    events = events_for(root, batch, NOW)
    n, o = os.stat(new), os.stat(old)
    assert events == [
        {"type": "deleted", "path": "/escape.txt", "etag": None, "size": None, "time": NOW},
        {"type": "deleted", "path": "/flash.tmp", "etag": None, "size": None, "time": NOW},
        {"type": "changed", "path": "/old.bin", "etag": make_etag(o), "size": 7, "time": NOW},
        {"type": "deleted", "path": "/removed.txt", "etag": None, "size": None, "time": NOW},
        {"type": "created", "path": "/videos/new.mp4", "etag": make_etag(n), "size": 3, "time": NOW},
    ]
    json.dumps(events)  # what goes on the wire


def test_a_file_gone_before_its_stat_is_announced_deleted(root: str) -> None:
    f = Path(root, "brief.bin")
    f.write_bytes(b"b")
    batch = {(Change.added, str(f)), (Change.modified, str(f))}
    f.unlink()
    assert events_for(root, batch, NOW) == [
        {"type": "deleted", "path": "/brief.bin", "etag": None, "size": None, "time": NOW}
    ]


def test_a_deleted_directory_tree_announces_its_files(root: str) -> None:
    d = Path(root, "season")
    batch = {(Change.deleted, str(d / "e1.mp4")), (Change.deleted, str(d))}  # `rm -r season`, already gone
    assert [e["path"] for e in events_for(root, batch, NOW)] == ["/season", "/season/e1.mp4"]


async def test_subscription_overflow_closes_with_1013_and_drops_the_backlog() -> None:
    sub = Subscription(limit=3)
    assert all(sub.offer(str(i)) for i in range(3))
    assert await sub.next() == "0"
    assert sub.offer("3") and not sub.ended.is_set()
    assert not sub.offer("4")  # four waiting: one too many
    assert sub.close_code == CLOSE_TRY_AGAIN_LATER and sub.ended.is_set()
    assert await sub.next() is None  # nothing more is sent: the close comes next
    assert not sub.offer("5")


async def test_hub_watches_only_while_subscribed(root: str) -> None:
    hub = ChangeHub(root)
    assert not hub.watching and hub.starts == 0
    a = await hub.subscribe()
    b = await hub.subscribe()
    assert hub.watching and hub.starts == 1 and hub.subscribers == 2
    Path(root, "fresh.txt").write_bytes(b"hi")  # right after subscribe: must not be missed
    for sub in (a, b):
        text = await asyncio.wait_for(sub.next(), 5)
        assert text is not None and json.loads(text)["path"] == "/fresh.txt"
    hub.unsubscribe(a)
    assert hub.watching
    hub.unsubscribe(b)
    await until(lambda: not hub.watching, "the watcher stops when the last subscriber leaves", 5)
    assert hub.stops == 1
    c = await hub.subscribe()  # a new first subscriber starts a new watcher
    assert hub.watching and hub.starts == 2
    await hub.close()
    assert c.close_code == 1001 and not hub.watching and hub.stops == 2


async def test_hub_fails_to_start_on_a_missing_root(tmp_path: Path) -> None:
    hub = ChangeHub(str(tmp_path / "nowhere"))
    with pytest.raises(Exception):
        await hub.subscribe()
    assert not hub.watching and hub.subscribers == 0
