"""Stored units as files: held fds checked for length, bytes or file pieces of a unit, held pieces of a cut."""

from __future__ import annotations

import os

from proxy.cache.pieces import FilePiece
from proxy.cache.store import SliceStore
from proxy.core.representation import ObjectMeta
from proxy.core.slices import SliceGeometry, Unit, block_range

__all__ = ["UnitFiles", "HeldPiece"]

HeldPiece = tuple[int, int, int]  # (held fd, offset, count): the store owns the fd


class UnitFiles:
    """The store's units of one object version seen as files of known length.

    Every fd handed out here had its file's length checked against what the unit
    must hold: a damaged file is dropped (and then refetched), never served.
    """

    def __init__(self, store: SliceStore, geometry: SliceGeometry) -> None:
        self.store = store
        self.geometry = geometry

    def _size(self, meta: ObjectMeta, u: Unit) -> int:
        return self.geometry.unit_size(u, meta.length)

    async def fd(self, meta: ObjectMeta, u: Unit) -> int | None:
        """The fd of a stored unit, held or opened now, its length checked once; None for
        a miss, or a damaged file (then dropped)."""
        size = self._size(meta, u)
        fd = self.store.checked_fd(meta.url, meta.validator, u, size)
        if fd is None:
            fd = await self.store.open_slice(meta.url, meta.validator, u, size)
        return fd

    async def read(self, meta: ObjectMeta, u: Unit, lo: int, hi: int) -> bytes | None:
        """Bytes ``[lo, hi)`` of a stored unit, or None (miss, or damaged and dropped)."""
        fd = await self.fd(meta, u)
        return None if fd is None else self.store.pread(meta.url, meta.validator, u, fd, lo, hi)

    async def part(self, meta: ObjectMeta, u: Unit, lo: int, hi: int, files: bool) -> bytes | FilePiece | None:
        """Bytes ``[lo, hi)`` of a stored unit: a file piece (its own dup) when the caller
        can sendfile; None for a miss, or a damaged file (then dropped)."""
        if not files:
            return await self.read(meta, u, lo, hi)
        fd = await self.fd(meta, u)
        return None if fd is None else FilePiece(os.dup(fd), lo, hi - lo)

    def held(self, meta: ObjectMeta, i: int, lo: int, hi: int, open_known: bool = True) -> list[HeldPiece] | None:
        """Pieces for bytes ``[lo, hi)`` of slice ``i`` from held files: the whole slice
        if it is held open (or known to the file index: then opened and held), else the
        blocks covering the cut; None when something is not
        held or a file has the wrong length (then dropped)."""
        store, B = self.store, self.geometry.block_size
        size = self._size(meta, i)
        fd = store.checked_fd(meta.url, meta.validator, i, size)
        if fd is None and open_known:  # not held: opened now if the file index knows it (no SQLite, no await)
            fd = store.hold_known(meta.url, meta.validator, i, size)
        if fd is not None:
            return [(fd, lo, hi - lo)]
        if not self.geometry.has_blocks:
            return None
        out = []
        for k in block_range(lo, hi, B):
            u: Unit = (i, k)
            fd = store.checked_fd(meta.url, meta.validator, u, self._size(meta, u))
            if fd is None:
                return None
            base = k * B
            out.append((fd, max(lo, base) - base, min(hi, base + B) - max(lo, base)))
        return out

    def blocks_held(self, meta: ObjectMeta, i: int, lo: int, hi: int) -> bool:
        """Are all blocks covering ``[lo, hi)`` of slice ``i`` held open? (a probe)"""
        return self.geometry.has_blocks and all(
            self.store.holds(meta.url, meta.validator, (i, k)) for k in block_range(lo, hi, self.geometry.block_size))

    def holds(self, meta: ObjectMeta, u: Unit) -> bool:
        return self.store.holds(meta.url, meta.validator, u)
