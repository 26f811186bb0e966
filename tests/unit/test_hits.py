"""A hit's body from the store's held fds (proxy.cache.hits.HeldBody): sent without dup(), and
handed over as the sender's own pieces when it has to wait."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from proxy.cache.hits import HeldBody
from proxy.cache.store import SliceStore

URL, V = "http://o/a.bin", 'e:"1"'
DATA = bytes(range(256)) * 16


def _held(tmp_path: Path) -> tuple[SliceStore, int]:
    store = SliceStore(str(tmp_path / "c"), 1 << 30, threads=1)

    async def go() -> int | None:
        await store.put_slice(URL, V, 0, DATA)
        return await store.open_slice(URL, V, 0, len(DATA))

    fd = asyncio.run(go())
    assert fd is not None
    return store, fd


def test_detached_parts_are_own_dups_from_where_the_socket_stopped(tmp_path: Path) -> None:
    store, fd = _held(tmp_path)
    try:
        body = HeldBody([b"--frame\r\n", (fd, 100, 50), b"\r\n"], store, store.fd_closes)
        parts = body.detach(1, 20)  # the socket took 20 bytes of the piece
        piece = parts[0]
        assert not isinstance(piece, bytes) and parts[1:] == [b"\r\n"]
        assert piece.fd != fd and (piece.offset, piece.count) == (120, 30)
        assert os.pread(piece.fd, piece.count, piece.offset) == DATA[120:150]
        os.close(piece.fd)
        assert os.pread(fd, 4, 0) == DATA[:4]  # the store's own fd is untouched
        assert body.detach(0, 3)[0] == b"rame\r\n"
    finally:
        store.close()


def test_a_body_is_not_intact_once_the_store_closed_any_held_fd(tmp_path: Path) -> None:
    store, fd = _held(tmp_path)
    try:
        body = HeldBody([(fd, 0, len(DATA))], store, store.fd_closes)
        assert body.intact()
        store.forget_fds(URL)  # another worker dropped the object: its fd is closed
        assert not body.intact()
    finally:
        store.close()
