"""Cache hits from held slice files: file pieces to sendfile, or the bytes of a small hit at once."""

from __future__ import annotations

import os
from dataclasses import dataclass

from proxy.cache.files import HeldPiece, UnitFiles
from proxy.cache.pieces import FilePiece, RequestTally, close_pieces, pread_exact
from proxy.cache.store import SliceStore
from proxy.core.counters import Counters
from proxy.core.representation import ObjectMeta
from proxy.http.ranges import Span

__all__ = ["HitReader", "HeldBody"]

OPEN_KNOWN_SLICES = 16  # a hit's bytes up to this many slices may open files it does not hold


@dataclass(slots=True)
class HeldBody:
    """A hit's body as framing bytes and pieces of fds the store holds, sent without a dup():
    sound while the store has closed none of its fds since the lookup, which the sender checks
    after its only await (the headers) and before any other (then it takes its own dups)."""

    parts: list[bytes | HeldPiece]
    store: SliceStore
    closes: int  # the store's fd_closes at the lookup

    def intact(self) -> bool:
        return self.store.fd_closes == self.closes

    def detach(self, start: int, sent: int = 0) -> list[bytes | FilePiece]:
        """The parts from ``start`` on, the first ``sent`` bytes of that one already gone, as the
        sender's own (fds dup'd): what is left when the socket is full and the sender must wait."""
        out: list[bytes | FilePiece] = []
        try:
            for j, part in enumerate(self.parts[start:]):
                skip = sent if j == 0 else 0
                if isinstance(part, bytes):
                    out.append(part[skip:])
                else:
                    out.append(FilePiece(os.dup(part[0]), part[1] + skip, part[2] - skip))
        except OSError:
            close_pieces(out)
            raise
        return out


class HitReader:
    """The whole body of a hit whose every slice is held open, without an await."""

    def __init__(self, files: UnitFiles, counters: Counters) -> None:
        self.files = files
        self.counters = counters

    def _parts(self, meta: ObjectMeta, pieces: tuple[bytes | Span, ...]
               ) -> tuple[list[bytes | HeldPiece], int, int] | None:
        """The body as framing bytes and held pieces, its cut count and file bytes; None when
        any slice is not held or has the wrong length (then the general path). Every hit runs
        this: slices are walked inline, not through :func:`cuts`."""
        if not meta.storable:
            return None
        out: list[bytes | HeldPiece] = []
        cuts_n = n = 0
        S = self.files.geometry.slice_size
        span_bytes = sum(p.end - p.start for p in pieces if not isinstance(p, bytes))
        # Files not held are opened from the file index only for a few slices: opening many
        # could close (LRU) an fd this very body already holds a piece of.
        few = span_bytes <= OPEN_KNOWN_SLICES * S
        held_of = self.files.held
        for piece in pieces:
            if isinstance(piece, bytes):
                out.append(piece)
                continue
            start, end = piece.start, piece.end
            i = start // S
            while start < end:  # the cuts of this span, slice by slice
                base = i * S
                hi = min(end, base + S)
                held = held_of(meta, i, start - base, hi - base, open_known=few)
                if held is None:
                    return None
                cuts_n += 1
                n += hi - start
                out.extend(held)
                start, i = hi, i + 1
        return out, cuts_n, n

    def _count(self, tally: RequestTally, cuts_n: int, n: int) -> None:
        self.counters.slice_lookups["hit"] += cuts_n
        self.counters.response_bytes["cache"] += n
        tally.hits += cuts_n
        tally.cache_bytes += n

    def files_of(self, meta: ObjectMeta, pieces: tuple[bytes | Span, ...], tally: RequestTally) -> HeldBody | None:
        """The whole body as framing bytes and held file pieces, if every slice is held open.

        The fast path for hits (aiohttp's web_fileresponse shape): the caller sends the
        pieces with sendfile (see :class:`HeldBody` for why no fd is dup'd). None when any
        slice is not held or has the wrong length (the general path then refetches it).
        """
        found = self._parts(meta, pieces)
        if found is None:
            return None
        parts, cuts_n, n = found
        self._count(tally, cuts_n, n)
        return HeldBody(parts, self.files.store, self.files.store.fd_closes)

    def bytes_of(self, meta: ObjectMeta, pieces: tuple[bytes | Span, ...], tally: RequestTally) -> bytes | None:
        """The whole body of a small hit, read from the held files at once (no fd dup: nothing
        awaits between the lookup and the read). None as :meth:`files_of`, or on a short
        read (the file shrank: the general path finds and drops it)."""
        found = self._parts(meta, pieces)
        if found is None:
            return None
        parts, cuts_n, _ = found
        out: list[bytes] = []
        n = 0
        try:
            for part in parts:
                if isinstance(part, bytes):
                    out.append(part)
                    continue
                fd, off, count = part
                data = pread_exact(fd, count, off)
                if data is None:
                    return None
                out.append(data)
                n += count
        except OSError:
            return None
        self._count(tally, cuts_n, n)
        return b"".join(out)
